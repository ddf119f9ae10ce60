"""rosbag2 files through the ``rosbags`` library: atomic writing, checked reading, QoS, stamps.

Bags are rosbag2 directories (``metadata.yaml`` + one ``.mcap`` or ``.db3`` file) in format
version 9 with the ROS 2 *kilted* message definitions and type hashes (:data:`DISTRO`), so
``ros2 bag info`` / ``ros2 bag play`` of a jazzy-or-newer install open them.

Writing (:func:`bag_writer`) goes to a hidden sibling folder (:func:`partial_path`) that is
renamed into place only after the bag is complete: an interrupted conversion or recording never
leaves a bag that looks finished, and ``metadata.yaml`` never counts a message the storage file
does not hold. A process that was killed leaves its data there, and so does a recording whose
storage failed (a full disk: :class:`StorageError`); nothing deletes it implicitly (a new bag to
the same path is refused until the user recovers it with ``pebal_bag recover`` or removes it).
Output that can be written again from its source (a conversion, a recovered bag) is removed when
it cannot be finished.

Reading (:class:`BagReader`) turns every way a bag can be broken (missing or truncated
storage file, corrupt chunks, a message that does not deserialize, fewer messages than the
metadata promises) into a :class:`BagError` that names the bag and the problem.

Time: bag (log) timestamps and header stamps are integer nanoseconds since the Unix epoch;
:func:`stamp_ns` / :func:`split_ns` convert between a ``builtin_interfaces/Time`` and an int.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

DISTRO = Stores.ROS2_KILTED
"""Message definitions (and RIHS01 type hashes) written into bags."""
BAG_VERSION = 9
"""rosbag2 metadata version written (the jazzy/kilted format)."""
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
"""Storage plugins by their ``ros2 bag`` names."""
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
"""Storage file name suffix -> storage name."""


class BagError(RuntimeError):
    """A bag that cannot be written or read as asked; the message names the bag and the fix."""


class StorageError(BagError):
    """The storage file did not take a write (disk full, I/O error, a database error); the message
    names the file and the cause. What it held before stays; the bag cannot be finished."""


@cache
def typestore() -> Typestore:
    """The kilted typestore (message classes, CDR (de)serialisers, definitions, hashes)."""
    return get_typestore(DISTRO)


def stamp_ns(stamp: object) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def split_ns(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` of a ``builtin_interfaces/Time``."""
    if ns < 0:
        raise ValueError(f"a ROS time stamp cannot be negative, got {ns} ns")
    return divmod(int(ns), 1_000_000_000)


def make_qos(reliable: bool = True, depth: int = 10, transient_local: bool = False) -> Qos:
    """A keep-last QoS profile as stored in bag metadata (``offered_qos_profiles``)."""
    zero = QosTime(0, 0)
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        zero,
        zero,
        QosLiveliness.AUTOMATIC,
        zero,
        False,
    )


def _storage(storage: str) -> StoragePlugin:
    if storage not in STORAGES:
        raise BagError(f"unknown bag storage {storage!r}; choose one of {', '.join(STORAGES)}")
    return STORAGES[storage]


class BagWriter:
    """An open :class:`rosbags.rosbag2.Writer` plus the topics added so far (see :func:`bag_writer`).

    Every failure of the storage file (``OSError``, ``sqlite3.Error``, ...) on a write or flush is
    a :class:`StorageError` naming the file; the message it happened on is not counted.
    """

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.file = Path(writer.storage.path)
        """The ``.mcap`` / ``.db3`` file being written."""
        self.connections: dict[str, Connection] = {}

    def _storage_error(self, what: str, e: Exception) -> StorageError:
        return StorageError(f"{what} {self.file} failed ({type(e).__name__}: {e})")

    def add_topic(self, topic: str, msgtype: str, qos: Iterable[Qos] = ()) -> Connection:
        """Register ``topic`` of ``msgtype`` (e.g. ``sensor_msgs/msg/Image``) with kilted definitions."""
        if msgtype not in typestore().fielddefs:
            raise BagError(f"message type {msgtype} of topic {topic} is unknown to the {DISTRO.value} typestore")
        conn = self.writer.add_connection(topic, msgtype, typestore=typestore(), offered_qos_profiles=list(qos))
        self.connections[topic] = conn
        return conn

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append CDR bytes to ``topic`` at bag time ``timestamp_ns``."""
        conn = self.connections[topic]
        try:
            self.writer.write(conn, int(timestamp_ns), data)
        except WriterError:
            raise
        except Exception as e:  # OSError (MCAP), sqlite3.Error (SQLite), whatever the storage raises
            raise self._storage_error(f"writing a message of {topic} to", e) from e

    def write(self, topic: str, timestamp_ns: int, msg: object) -> None:
        """Serialise a typestore message object and append it."""
        conn = self.connections[topic]
        self.write_raw(topic, timestamp_ns, typestore().serialize_cdr(msg, conn.msgtype))

    def set_custom_data(self, key: str, value: str) -> None:
        """A ``custom_data`` entry of ``metadata.yaml`` (string values only)."""
        self.writer.set_custom_data(key, value)

    def flush(self) -> None:
        """Put every message written so far into the storage file, so that a crash loses none of them.

        MCAP: the pending chunk (rosbags keeps up to 1 MiB of messages in memory) is closed and the
        file buffer flushed; SQLite: the open transaction (rosbags commits only at close) is
        committed. Reaches into the storage objects of the pinned rosbags version; a bag that is
        closed normally is the same with or without flushes, except for MCAP chunk boundaries.
        """
        storage = self.writer.storage
        try:
            if isinstance(storage, McapWriter):
                if storage.chunk.msgs:  # a chunk without messages would carry an empty time range
                    storage.close_chunk()
                storage.bio.flush()
            elif isinstance(storage, Sqlite3Writer):
                storage.conn.commit()
            else:
                raise BagError(f"cannot flush a bag with storage {type(storage).__name__}")
        except BagError:
            raise
        except Exception as e:
            raise self._storage_error("flushing", e) from e

    def check_counts(self) -> None:
        """A :class:`StorageError` unless the storage holds every message counted (the counts go into
        ``metadata.yaml``). SQLite: counted per topic in the database (after a full disk SQLite may
        roll back a whole open transaction); MCAP keeps no message the writer did not count."""
        storage = self.writer.storage
        if not isinstance(storage, Sqlite3Writer):
            return
        try:
            held = dict(storage.conn.execute("SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id"))
        except Exception as e:
            raise self._storage_error("counting the messages of", e) from e
        for conn in self.writer.connections:
            counted = self.writer.counts[conn.id]
            if held.get(conn.id, 0) != counted:
                raise StorageError(
                    f"{self.file} holds {held.get(conn.id, 0)} messages of {conn.topic}, {counted} were written "
                    "(the database lost some)"
                )


def partial_path(path: str | os.PathLike) -> Path:
    """Where :func:`bag_writer` writes the bag for ``path`` until it is complete:
    ``<parent>/.<name>.partial/<name>`` (a bag folder without ``metadata.yaml`` until closed)."""
    path = Path(path)
    return path.parent / f".{path.name}.partial" / path.name


def recovered_path(partial: Path) -> Path:
    """Default output of ``pebal_bag recover partial``: ``<parent>/<name>_recovered`` for the partial
    data ``<parent>/.<name>.partial/<name>`` of a bag meant for ``<parent>/<name>`` (that path
    itself stays blocked by the partial data until it is removed), else ``<partial>_recovered``."""
    partial = Path(partial)
    staging = partial.parent
    base = staging.parent if staging.name == f".{partial.name}.partial" else staging
    return base / f"{partial.name}_recovered"


def recover_hint(partial: Path) -> str:
    """How to turn the partial recording ``partial`` into a bag, or remove it."""
    staging = partial.parent
    removable = staging if staging.name == f".{partial.name}.partial" else partial
    return (
        f"recover its complete messages into a bag with `pebal_bag recover {partial} -o {recovered_path(partial)}` "
        f"(-o on a disk with free space), or remove it with `rm -r {removable}`"
    )


def _abort(writer: Writer) -> None:
    """Close the storage without index or metadata; a storage that fails again (the disk is still
    full) is left as it is: what reached the file stays."""
    try:
        writer.abort()
    except Exception:
        pass


@contextmanager
def bag_writer(path: str | os.PathLike, storage: str = "mcap", keep_unfinished: bool = False) -> Iterator[BagWriter]:
    """Write a bag at ``path`` atomically.

    The bag is written to :func:`partial_path` and moved to ``path`` when the ``with`` block ends
    without an exception and the storage holds every message counted
    (:meth:`BagWriter.check_counts`). On an exception in the block the partial bag is deleted
    (the caller abandoned it). When the storage fails (a :class:`StorageError` in the block, or
    the bag cannot be finished, e.g. on a full disk) the partial bag is kept as an unfinished
    recording if ``keep_unfinished`` (data that exists nowhere else: ``pebal_bag record``; the
    error says how to recover it), else deleted (output that can be written again); either way
    the error is one :class:`BagError` naming the bag, the file and the cause.

    ``path`` must not exist (bags are never overwritten), nor may a partial bag for it that a
    killed process or a failed recording left (it is the user's data: recover it or remove it).
    """
    path = Path(path)
    plugin = _storage(storage)
    if path.exists():
        raise BagError(f"{path} exists already; remove it or choose another output path (bags are not overwritten)")
    partial = partial_path(path)
    staging = partial.parent
    if staging.exists():
        raise BagError(
            f"{staging} holds the partial data of an earlier bag for {path} that did not finish (the process "
            f"was killed or crashed, or its storage failed); it is not deleted implicitly: {recover_hint(partial)}"
        )
    try:
        staging.mkdir(parents=True)
        writer = Writer(partial, version=BAG_VERSION, storage_plugin=plugin)
        writer.open()
    except Exception as e:  # WriterError, OSError, sqlite3.Error: nothing useful was written
        shutil.rmtree(staging, ignore_errors=True)
        raise BagError(f"cannot create bag {path} ({type(e).__name__}: {e})") from e
    try:
        bag = BagWriter(writer)
        yield bag
        bag.check_counts()
    except BaseException as e:  # the caller abandoned the bag, or its storage failed
        _abort(writer)
        if isinstance(e, StorageError) and keep_unfinished:
            raise BagError(f"recording to {path} stopped: {e}; the bag is unfinished: {recover_hint(partial)}") from e
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, (StorageError, WriterError)):
            raise BagError(f"cannot write bag {path}: {e}; nothing was kept") from e
        raise
    try:
        writer.close()
        os.replace(partial, path)
    except Exception as e:  # e.g. a full disk while writing the summary or metadata.yaml
        _abort(writer)
        cause = f"{type(e).__name__}: {e}"
        if keep_unfinished:
            raise BagError(
                f"cannot finish bag {path} ({cause}); what was written stays in {partial}: {recover_hint(partial)}"
            ) from e
        shutil.rmtree(staging, ignore_errors=True)
        raise BagError(f"cannot finish bag {path} ({cause}); nothing was kept") from e
    staging.rmdir()


# ---------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class TopicSummary:
    topic: str
    msgtype: str
    count: int
    qos: tuple[Qos, ...]


def _broken(path: Path, e: BaseException) -> BagError:
    return BagError(
        f"bag {path} is truncated or corrupt ({type(e).__name__}: {e}); it cannot be read reliably. "
        f"Re-create it (convert/record again), or copy out its complete messages with "
        f"`pebal_bag recover {path} -o {path}_recovered`"
    )


def storage_files(path: Path) -> list[Path]:
    """The ``.mcap`` / ``.db3`` files directly in the folder ``path`` (sorted)."""
    return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES) if path.is_dir() else []


def _not_a_bag(path: Path) -> BagError:
    partial = partial_path(path)
    if not path.exists() and storage_files(partial):
        return BagError(
            f"bag {path} does not exist, but the recording or conversion to it did not finish: its partial data "
            f"is in {partial}; {recover_hint(partial)}"
        )
    if storage_files(path):
        return BagError(
            f"{path} is a partial recording ({', '.join(p.name for p in storage_files(path))} without "
            f"metadata.yaml: the recorder was killed or crashed); {recover_hint(path)}"
        )
    what = "is not a folder" if not path.is_dir() else "has no metadata.yaml"
    return BagError(f"{path} {what}: a rosbag2 bag is a folder with metadata.yaml and its .mcap/.db3 file")


def metadata(path: str | os.PathLike) -> dict:
    """The ``rosbag2_bagfile_information`` mapping of a bag's ``metadata.yaml``."""
    path = Path(path)
    meta_file = path / "metadata.yaml"
    if not meta_file.is_file():
        raise _not_a_bag(path)
    try:
        info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise BagError(f"bag metadata {meta_file} is unreadable or not rosbag2 metadata: {e}") from e
    return info


class BagReader:
    """Checked reading of one bag (use as a context manager).

    Args:
        path: the bag folder.

    ``messages`` yields ``(connection, timestamp_ns, raw CDR bytes)`` in timestamp order and,
    after the last message, checks that every topic delivered as many messages as the metadata
    promises; ``deserialize`` decodes raw bytes with the kilted typestore. Any failure is a
    :class:`BagError`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.info = metadata(self.path)
        self._reader = Reader(self.path)
        try:
            self._reader.open()
        except Exception as e:  # ReaderError, apsw/sqlite, struct, OSError from the storage plugins
            raise _broken(self.path, e) from e

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def custom_data(self) -> dict[str, str]:
        return dict(self.info.get("custom_data") or {})

    @property
    def start_ns(self) -> int:
        return self._reader.start_time

    @property
    def duration_ns(self) -> int:
        return self._reader.duration

    def topics(self) -> dict[str, TopicSummary]:
        """Topic -> type, message count and offered QoS profiles, in metadata order."""
        out = {}
        for conn in self._reader.connections:
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            out[conn.topic] = TopicSummary(conn.topic, conn.msgtype, conn.msgcount, qos)
        return out

    def connections(self, topics: Iterable[str] | None = None) -> list[Connection]:
        """Connections of ``topics`` (all when None); an unknown topic is an error naming the ones present."""
        conns = self._reader.connections
        if topics is None:
            return list(conns)
        wanted = list(topics)
        known = {c.topic for c in conns}
        missing = [t for t in wanted if t not in known]
        if missing:
            raise BagError(f"bag {self.path} has no topic {', '.join(missing)}; it holds {', '.join(sorted(known))}")
        return [c for c in conns if c.topic in wanted]

    def messages(
        self, topics: Iterable[str] | None = None, start_ns: int | None = None
    ) -> Iterator[tuple[Connection, int, bytes]]:
        """Raw messages of ``topics`` from bag time ``start_ns`` on; counts verified at the end."""
        conns = self.connections(topics)
        seen = dict.fromkeys((c.id for c in conns), 0)
        try:
            for conn, ts, data in self._reader.messages(conns, start=start_ns):
                seen[conn.id] += 1
                yield conn, ts, data
        except Exception as e:  # ReaderError, apsw/sqlite, zstd/lz4, struct errors from the storage plugins
            raise _broken(self.path, e) from e
        if start_ns is not None:
            return
        for conn in conns:
            if seen[conn.id] != conn.msgcount:
                raise BagError(
                    f"bag {self.path} yields {seen[conn.id]} messages on {conn.topic} but its metadata says "
                    f"{conn.msgcount}: the storage file is truncated or corrupt; re-create the bag"
                )

    def deserialize(self, data: bytes, conn: Connection, index: int | None = None) -> object:
        """Decode raw CDR bytes of ``conn``'s type; a decoding failure names topic and message."""
        try:
            return typestore().deserialize_cdr(data, conn.msgtype)
        except Exception as e:
            where = f" (message {index})" if index is not None else ""
            raise BagError(
                f"bag {self.path}: a {conn.msgtype} message on {conn.topic}{where} does not decode "
                f"({type(e).__name__}: {e}); the bag is corrupt or was written with other type definitions"
            ) from e


@dataclass(frozen=True)
class BagInfo:
    """What ``pebal_bag info`` shows of a bag (``ros2 bag info``'s fields)."""

    path: Path
    storage: str
    """Storage plugin (``mcap``, ``sqlite3``)."""
    files: tuple[Path, ...]
    size_bytes: int
    start_ns: int
    """Bag time of the first message (ns since the epoch), as ``metadata.yaml`` states it."""
    duration_ns: int
    """Last message's bag time minus the first's (ns), as ``metadata.yaml`` states it."""
    messages: int
    topics: tuple[TopicSummary, ...]
    custom_data: tuple[str, ...]
    """Keys of ``metadata.yaml`` ``custom_data``."""


def bag_info(path: str | os.PathLike) -> BagInfo:
    """Storage, files, size, time span and per-topic types and counts of a bag (checked as :class:`BagReader` does)."""
    with BagReader(path) as reader:
        topics = tuple(reader.topics().values())
        files = tuple(reader.path / name for name in reader.info.get("relative_file_paths") or ())
        return BagInfo(
            path=reader.path,
            storage=str(reader.info.get("storage_identifier", "?")),
            files=files,
            size_bytes=sum(f.stat().st_size for f in files if f.is_file()),
            start_ns=int(reader.info.get("starting_time", {}).get("nanoseconds_since_epoch", reader.start_ns)),
            duration_ns=int(reader.info.get("duration", {}).get("nanoseconds", reader.duration_ns)),
            messages=sum(t.count for t in topics),
            topics=topics,
            custom_data=tuple(reader.custom_data),
        )


def find_bags(path: str | os.PathLike) -> list[Path]:
    """``path`` itself when it is a bag, else the bags directly inside it (sorted); none is an error."""
    path = Path(path)
    if (path / "metadata.yaml").is_file():
        return [path]
    bags = sorted(p for p in path.iterdir() if (p / "metadata.yaml").is_file()) if path.is_dir() else []
    if not bags:
        if storage_files(path) or storage_files(partial_path(path)):
            raise _not_a_bag(path)
        raise BagError(f"{path} is neither a bag (a folder with metadata.yaml) nor a folder of bags")
    return bags
