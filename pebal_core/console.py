"""How the console scripts (``pebal``, ``pebal_bag``, ``pebal_demo``, ``pebal_camera``) report errors, and
their ``--help`` text from a module docstring (:func:`plain_text`).

An error the user can fix (a missing file, a bad checkpoint or config, a malformed dataset or
bag) is printed as one ``<prog>: error: <message>`` line with exit status 2, not as a
traceback; ``PEBAL_DEBUG=1`` re-raises it to get the traceback. Ctrl-C exits with 130.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable


def run_reporting_errors(prog: str, action: Callable[[], int], user_errors: tuple[type[BaseException], ...]) -> int:
    """Run ``action()`` and return its exit status, reporting ``user_errors`` as one line."""
    try:
        return action()
    except user_errors as e:
        if os.environ.get("PEBAL_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def plain_text(docstring: str) -> str:
    """A reStructuredText docstring as plain text for ``--help``: roles (``:mod:`x```) and inline
    markup (````x````, ``**x**``) removed, the text after ``name: `` of the first line capitalised."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", docstring).replace("``", "").replace("**", "")
    head, sep, rest = text.partition(": ")
    if sep and "\n" not in head:
        text = rest[:1].upper() + rest[1:]
    return text
