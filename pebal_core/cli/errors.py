"""Errors of the ``pebal`` command that a user can fix: printed as one line, not a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to fix (printed without a traceback)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types whose message is printed as ``pebal: error: ...`` with exit status 2."""
    from pebal_core.backends import BackendError
    from pebal_core.config import ConfigError
    from pebal_core.export.onnx import ExportError
    from pebal_core.export.tensorrt import EngineError
    from pebal_core.models.checkpoint import CheckpointError

    return (
        UserError,
        ConfigError,
        CheckpointError,
        ExportError,
        EngineError,
        BackendError,
        FileNotFoundError,
        OSError,
        ValueError,
        KeyError,
    )
