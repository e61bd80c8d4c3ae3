"""The journal: the primary, tamper-evident audit log of one replica.

Append-only files in ``data_dir/audit/<replica>/``, one record per line (``records.line``),
in segments named after the seq of their first record. The writer hands each batch of
records to the OS with one ``write()`` on a descriptor opened ``O_APPEND`` before the
statement it records is forwarded; ``sync`` (the writer's background thread) fsyncs them
every ``fsync_interval``. The store is filled from these files (``importer``) and checked
against them (``verify``).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from rowgate.audit import records as rec

log = logging.getLogger("rowgate.audit")

SEGMENT_BYTES = 64 << 20  # a segment is closed at the next checkpoint after it grew this big
_SUFFIX = ".jsonl"
_READ = 1 << 20


def root(data_dir: Path) -> Path:
    """Where every replica's journal is: data_dir/audit/<replica>/."""
    return data_dir / "audit"


def segment_name(first_seq: int) -> str:
    return f"{first_seq:012d}{_SUFFIX}"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """(first seq, path) of a replica's segments, oldest first."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [(int(n[: -len(_SUFFIX)]), directory / n) for n in names
             if n.endswith(_SUFFIX) and n[: -len(_SUFFIX)].isdigit()]
    return sorted(found)


def replicas(root: Path) -> list[str]:
    """The replicas with a journal under ``root`` (data_dir/audit)."""
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and segments(p))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_lines(path: Path, offset: int = 0) -> Iterator[tuple[bytes, int]]:
    """(line without its newline, offset after it) for each complete line from ``offset``; a
    last line without a newline (being written, or torn by a crash) is left out."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # e.g. a device put in its place: it may never end
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        f.seek(offset)
        rest = b""
        left = st.st_size - offset  # what a concurrent writer appends later is read next time
        while left > 0 and (chunk := f.read(min(_READ, left))):
            left -= len(chunk)
            data = rest + chunk
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                offset += end + 1 - start
                yield data[start:end], offset
                start = end + 1
            rest = data[start:]


def entries(directory: Path) -> Iterator[tuple[Path, bytes]]:
    """(segment, line) of every complete line of a replica's journal, in order."""
    for _, path in segments(directory):
        for text, _ in read_lines(path):
            yield path, text


def _last_line(path: Path) -> tuple[bytes | None, int]:
    """The last complete line of a segment, and the size up to its end (a torn tail beyond)."""
    size = path.stat().st_size
    block = 1 << 16
    with open(path, "rb") as f:
        while True:
            start = max(0, size - block)
            f.seek(start)
            data = f.read(size - start)
            end = data.rfind(b"\n")
            if end < 0:
                if start == 0:
                    return None, 0
                block *= 4
                continue
            begin = data.rfind(b"\n", 0, end)
            if begin < 0 and start > 0:
                block *= 4
                continue
            return data[begin + 1:end], start + end + 1


class Journal:
    """Writing side of one replica's journal (the caller serialises ``write`` and ``rotate``;
    ``sync`` runs on another thread)."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.last_seq, self.last_hash, self.last_ts = 0, rec.GENESIS, ""
        self._path: Path | None = None  # the active segment; None: the next write starts one
        self._fd = -1
        self._id: tuple[int, int] | None = None  # (st_dev, st_ino) of the active segment
        self.size = 0
        self._retired: list[int] = []  # descriptors the syncer fsyncs and closes
        self._new_segment = False  # the directory needs an fsync too
        self._retire_lock = threading.Lock()  # short: never held across an fsync
        self._sync_lock = threading.Lock()
        self.moved = False  # set by ``check``: the next write reopens the segment's path
        self._recover()

    def _recover(self) -> None:
        """Find the last record; cut a torn last line (a crash in the middle of a write)."""
        for _, path in reversed(segments(self.directory)):
            text, good = _last_line(path)
            size = path.stat().st_size
            if good != size:
                log.warning("audit journal %s: removing an incomplete last line (%d bytes)", path, size - good)
                os.truncate(path, good)
            if text is None:
                path.unlink()  # nothing complete in it
                continue
            split = rec.split_line(text)
            r = loads(split[0]) if split is not None else None
            if split is None or r is None or not isinstance(r.get("seq"), int):
                raise OSError(f"audit journal {path}: its last line is not an audit record")
            self.last_seq, self.last_hash, self.last_ts = int(r["seq"]), split[1], str(r.get("ts", ""))
            self._path = path
            return

    def _open(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a device, a pipe: nothing that keeps the records
            os.close(fd)
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        with self._retire_lock:
            if self._fd >= 0:
                self._retired.append(self._fd)
            self._fd, self._path, self._id, self.size = fd, path, (st.st_dev, st.st_ino), st.st_size
            self._new_segment = True

    def write(self, data: bytes, first_seq: int) -> None:
        """Append records (complete lines) starting with record ``first_seq``: OSError when they
        could not all be written (nothing of them is left in the file then, if it can be helped)."""
        path = self._path
        if path is None:
            self._open(self.directory / segment_name(first_seq))
        elif self._fd < 0:  # the segment found at start-up
            self._open(path)
        elif self.moved:
            # the segment was removed or replaced under us (or its directory): write where the
            # journal is, or fail (and refuse the statement)
            log.error("audit journal %s was removed or replaced: writing to what is there now (verify "
                      "reports any records lost with the old file)", path)
            self._open(path)
            self.moved = False
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:] if written else data)
        except OSError:
            if written:
                try:
                    os.ftruncate(self._fd, self.size)
                except OSError:
                    log.exception("audit journal %s: cannot remove a partly written record", self._path)
            raise
        self.size += written

    def rotate(self) -> None:
        """Start a new segment with the next write (the writer calls it after a checkpoint)."""
        with self._retire_lock:
            if self._fd >= 0:
                self._retired.append(self._fd)
            self._fd, self._path, self._id = -1, None, None
            self.size = 0

    def check(self) -> None:
        """Notice the active segment removed or replaced (the sync thread calls this; a stat
        per write would cost every statement about 2 µs)."""
        path, ident = self._path, self._id
        if path is None:
            return
        try:
            st = os.stat(path)
            same = (st.st_dev, st.st_ino) == ident
        except OSError:
            same = False
        if not same:
            self.moved = True

    def sync(self) -> None:
        """fsync what was written (group commit); OSError if the disk refused it."""
        with self._sync_lock:
            with self._retire_lock:
                fd, retired, self._retired = self._fd, self._retired, []
                new, self._new_segment = self._new_segment, False
                if fd >= 0:  # the writer may retire it meanwhile: keep it open until fsynced
                    fd = os.dup(fd)
                    retired.append(fd)
            try:
                for old in retired:
                    os.fsync(old)
                if new:
                    dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            finally:
                for old in retired:
                    os.close(old)

    def close(self) -> None:
        self.sync()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def loads(body: bytes) -> dict[str, Any] | None:
    """A record body parsed; None if it is not a JSON object."""
    try:
        r = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return r if isinstance(r, dict) else None
