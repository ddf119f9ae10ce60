"""Crash-safe file writing, content hashing and the user cache folder.

A checkpoint, report or engine written with :func:`atomic_write` is either the complete new
file or the old one: data goes to a temporary file in the same directory, is flushed and
fsync'ed, then renamed over the target (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The caller writes the temporary file (by name). If the block raises, the temporary file
    is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def replace_between_markers(path: str | os.PathLike, begin: str, end: str, lines: list[str]) -> None:
    """Replace the text between the marker lines ``begin`` and ``end`` of the text file ``path``
    with ``lines`` (markers kept; written atomically). ``ValueError`` names the missing markers."""
    path = Path(path)
    text = path.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{path} lacks the markers {begin} ... {end}; add them where the generated text belongs")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def user_cache_dir() -> Path:
    """The project's folder in the user's cache directory: ``$PEBAL_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/pebal``, else ``~/.cache/pebal`` (the XDG base directory default). Not created
    here. What lives there can always be rebuilt (measured backend choices, ONNX exports of
    checkpoints): deleting it costs time, never data."""
    if os.environ.get("PEBAL_CACHE_DIR"):
        return Path(os.environ["PEBAL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "pebal"
