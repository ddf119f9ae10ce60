"""Turn a partial recording into a readable bag (``pebal_bag recover``, like ``ros2 bag reindex``).

A recorder (or converter) that is killed or crashes leaves its storage file without the
``metadata.yaml`` (and, for MCAP, without the summary section) that make a bag: the data sits in
``<parent>/.<name>.partial/<name>/`` (:func:`pebal_ros.bag_storage.partial_path`). Nothing
deletes it; :func:`recover` reads every complete message from it and writes a new bag (through
:func:`pebal_ros.bag_storage.bag_writer`, so the result appears only when complete). The partial
data is only read, never changed; remove it yourself once the recovered bag is checked.

What counts as complete:

MCAP
    The file is read record by record from its start (the index at the end is missing). Schema
    and channel records give each topic's message type and offered QoS; a message counts when
    all its bytes are in the file. Uncompressed chunks (what ``rosbags`` writes) are read up to
    their last complete record even when the chunk itself was cut off; a compressed chunk counts
    only when it is complete (a cut-off compressed chunk cannot be decoded reliably).
SQLite
    The ``.db3`` file (with its ``-journal`` / ``-wal`` file, if any) is copied into a temporary
    folder and opened there, so SQLite's own crash recovery rolls back the transaction that was
    open when the process died: the committed messages are the complete ones.

Bag times (nanoseconds since the Unix epoch) and the raw CDR bytes are kept as they were.
"""

from __future__ import annotations

import mmap
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import decompress
from tqdm import tqdm

from pebal_ros.bag_storage import STORAGE_SUFFIXES, BagError, bag_writer, storage_files

MCAP_MAGIC = b"\x89MCAP0\r\n"
"""The 8 bytes an MCAP file starts (and ends) with."""
_OP_HEADER, _OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 1, 2, 3, 4, 5, 6, 0x0F


@dataclass(frozen=True)
class Topic:
    """A topic found in a partial recording."""

    name: str
    msgtype: str
    qos_yaml: str
    """The ``offered_qos_profiles`` text stored with the topic ("" if none)."""


@dataclass
class RecoverResult:
    """What :func:`recover` found and wrote."""

    bag: Path
    storage: str
    counts: dict[str, int] = field(default_factory=dict)
    """Topic -> messages written to the recovered bag."""
    lost: list[str] = field(default_factory=list)
    """What could not be recovered (a cut-off record, a message of an unknown channel, ...)."""


# --------------------------------------------------------------------------------------- MCAP
class _Cursor:
    """Little-endian reads from a bytes-like buffer; :class:`EOFError` when the data ends."""

    def __init__(self, buf, start: int = 0, end: int | None = None) -> None:
        self.buf, self.pos, self.end = buf, start, len(buf) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise EOFError
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return bytes(self.take(self.u32())).decode()


def _mcap_qos(metadata: bytes) -> str:
    cur = _Cursor(metadata)
    while cur.pos < cur.end:
        key, value = cur.string(), cur.string()
        if key == "offered_qos_profiles":
            return value
    return ""


class _McapScan:
    """Schemas, channels and complete messages of a (possibly cut-off) MCAP file, in file order."""

    def __init__(self, buf, lost: list[str]) -> None:
        self.buf = buf
        self.lost = lost
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, Topic] = {}
        self.unknown_channel = 0

    def _records(self, cur: _Cursor, where: str, cut_ok: bool) -> Iterator[tuple[int, _Cursor, bool]]:
        """(opcode, content cursor, complete) per record; a cut-off record ends the scan."""
        while cur.pos < cur.end:
            start = cur.pos
            try:
                op, length = cur.take(1)[0], cur.u64()
            except EOFError:
                self.lost.append(f"{where}: a record header cut off at byte {start}")
                return
            available = min(length, cur.end - cur.pos)
            complete = available == length
            content = _Cursor(cur.buf, cur.pos, cur.pos + available)
            if not complete and not cut_ok:
                self.lost.append(f"{where}: a record (opcode {op:#04x}) cut off at byte {start}")
                return
            yield op, content, complete
            if not complete:
                return
            cur.pos += length

    def messages(self, progress: tqdm | None = None) -> Iterator[tuple[Topic, int, bytes]]:
        """(topic, log time ns, CDR bytes) of every complete message."""
        if bytes(self.buf[: len(MCAP_MAGIC)]) != MCAP_MAGIC:
            raise BagError("not an MCAP file (it does not start with the MCAP magic bytes)")
        top = _Cursor(self.buf, len(MCAP_MAGIC))
        for op, content, complete in self._records(top, "file", cut_ok=True):
            if progress is not None:
                progress.update(content.end - progress.n)
            if op in (_OP_FOOTER, _OP_DATA_END):
                return
            if op == _OP_CHUNK:
                yield from self._chunk(content, complete)
            elif complete:
                yield from self._record(op, content)
            else:
                self.lost.append(f"file: a record (opcode {op:#04x}) cut off at the end")

    def _chunk(self, cur: _Cursor, complete: bool) -> Iterator[tuple[Topic, int, bytes]]:
        start = cur.pos
        try:
            cur.u64(), cur.u64()  # message start / end time
            size, crc = cur.u64(), cur.u32()
            compression = cur.string()
            records_length = cur.u64()
        except EOFError:
            self.lost.append(f"chunk at byte {start}: its header is cut off")
            return
        if compression:
            if not complete:
                self.lost.append(f"chunk at byte {start}: a {compression} chunk cut off (its messages are lost)")
                return
            try:
                data = decompress(bytes(cur.take(records_length)), compression, size, crc)
            except Exception as e:  # corrupt compressed data, CRC mismatch
                self.lost.append(f"chunk at byte {start}: does not decompress ({e})")
                return
            for op, content, _ in self._records(_Cursor(data), f"chunk at byte {start}", cut_ok=False):
                yield from self._record(op, content)
            return
        inner = _Cursor(cur.buf, cur.pos, min(cur.pos + records_length, cur.end))
        for op, content, whole in self._records(inner, f"chunk at byte {start}", cut_ok=True):
            if whole:
                yield from self._record(op, content)
            else:
                self.lost.append(f"chunk at byte {start}: its last record (opcode {op:#04x}) is cut off")

    def _record(self, op: int, cur: _Cursor) -> Iterator[tuple[Topic, int, bytes]]:
        if op == _OP_SCHEMA:
            schema_id, name = cur.u16(), cur.string()
            self.schemas[schema_id] = name
        elif op == _OP_CHANNEL:
            channel_id, schema_id, topic = cur.u16(), cur.u16(), cur.string()
            cur.string()  # message encoding (cdr)
            metadata = bytes(cur.take(cur.u32()))
            if schema_id not in self.schemas:
                self.lost.append(f"channel {topic}: its schema record is missing")
                return
            self.channels[channel_id] = Topic(topic, self.schemas[schema_id], _mcap_qos(metadata))
        elif op == _OP_MESSAGE:
            channel_id = cur.u16()
            cur.u32()  # sequence
            log_time = cur.u64()
            cur.u64()  # publish time
            if channel_id not in self.channels:
                self.unknown_channel += 1
                return
            yield self.channels[channel_id], log_time, bytes(cur.take(cur.end - cur.pos))


def _mcap_messages(file: Path, lost: list[str], progress: bool) -> Iterator[tuple[Topic, int, bytes]]:
    with file.open("rb") as f:
        if file.stat().st_size == 0:
            raise BagError(f"{file} is empty: the recording was killed before anything reached the disk")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            scan = _McapScan(buf, lost)
            with tqdm(total=len(buf), unit="B", unit_scale=True, desc="recover", disable=not progress) as bar:
                yield from scan.messages(bar)
            if scan.unknown_channel:
                lost.append(f"{scan.unknown_channel} messages of channels whose channel record is missing")


# --------------------------------------------------------------------------------------- SQLite
def _sqlite_messages(file: Path, lost: list[str], progress: bool) -> Iterator[tuple[Topic, int, bytes]]:
    with tempfile.TemporaryDirectory(prefix="pebal_recover_") as tmp:
        copy = Path(tmp) / file.name
        for suffix in ("", "-journal", "-wal", "-shm"):
            src = file.with_name(file.name + suffix)
            if src.exists():
                shutil.copy2(src, copy.with_name(copy.name + suffix))
        try:
            with sqlite3.connect(copy) as conn:
                topics = {
                    row[0]: Topic(row[1], row[2], row[3] or "")
                    for row in conn.execute("SELECT id, name, type, offered_qos_profiles FROM topics")
                }
                (total,) = conn.execute("SELECT COUNT(*) FROM messages").fetchone()
                rows = conn.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
                unknown = 0
                for topic_id, timestamp, data in tqdm(rows, total=total, desc="recover", disable=not progress):
                    if topic_id not in topics:
                        unknown += 1
                        continue
                    yield topics[topic_id], int(timestamp), bytes(data)
                if unknown:
                    lost.append(f"{unknown} messages of topic ids missing from the topics table")
        except sqlite3.DatabaseError as e:
            raise BagError(f"{file} is not a readable rosbag2 SQLite file ({e})") from e


# --------------------------------------------------------------------------------------- recover
def find_storage_file(partial: Path) -> Path:
    """The one ``.mcap`` / ``.db3`` file of the partial recording folder ``partial`` (or the file itself)."""
    if partial.is_file():
        if partial.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"{partial} is neither an .mcap nor a .db3 file")
        return partial
    if not partial.is_dir():
        raise BagError(f"{partial} does not exist; name the partial recording folder (it holds an .mcap or .db3 file)")
    files = storage_files(partial)
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise BagError(f"{partial} must hold exactly one .mcap or .db3 file to recover (found: {found})")
    return files[0]


def recover(partial: str | Path, out: str | Path, progress: bool = False) -> RecoverResult:
    """Write every complete message of the partial recording ``partial`` to a new bag at ``out``.

    Args:
        partial: the folder holding the ``.mcap`` / ``.db3`` file (or that file).
        out: the bag folder to create (must not exist).
        progress: show a progress bar.

    A partial recording with no complete message is a :class:`BagError` (there is nothing to
    write); the partial data is left as it is either way.
    """
    file = find_storage_file(Path(partial))
    storage = STORAGE_SUFFIXES[file.suffix]
    result = RecoverResult(Path(out), storage)
    reader = _mcap_messages if storage == "mcap" else _sqlite_messages
    messages = reader(file, result.lost, progress)
    first = next(messages, None)
    if first is None:
        detail = f" ({'; '.join(result.lost)})" if result.lost else ""
        raise BagError(f"{file} holds no complete message{detail}; nothing to recover")
    with bag_writer(out, storage) as bag:
        for topic, timestamp, data in _chain(first, messages):
            if topic.name not in bag.connections:
                bag.add_topic(topic.name, topic.msgtype, _qos(topic, result.lost))
                result.counts[topic.name] = 0
            bag.write_raw(topic.name, timestamp, data)
            result.counts[topic.name] += 1
        bag.set_custom_data("pebal.recovered_from", str(file))
    return result


def _qos(topic: Topic, lost: list[str]) -> list:
    if not topic.qos_yaml:
        return []
    try:
        return parse_qos(topic.qos_yaml)
    except Exception as e:  # ReaderError, malformed YAML
        lost.append(f"the offered QoS of {topic.name} ({e}); it is recovered without")
        return []


def _chain(first, rest):
    yield first
    yield from rest
