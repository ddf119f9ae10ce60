"""The project version: one place, read by setup.py, package.xml's test and checkpoint metadata."""

__version__ = "0.1.0"
