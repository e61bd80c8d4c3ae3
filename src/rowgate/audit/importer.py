"""Fills the store from the journal: search and lineage read the store, the journal is the log.

Idempotent by (replica, seq): it starts after the store's last record of the replica, so it
resumes where it stopped after a restart or a ``kill -9``, and the CLI can run it too (to
show records the proxy has not imported yet, or left behind when it died). The proxy runs it
in a process of its own (``import_process``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.store import AuditStore, StoredRecord

log = logging.getLogger("rowgate.audit")

BATCH = 500  # small batches: fewer parsed records alive at once (the garbage collector scans them)


class Importer:
    """Not thread-safe. Reads the journal from where the last pass stopped."""

    def __init__(self, store: AuditStore, directory: Path, replica: str) -> None:
        self._store = store
        self._directory = directory
        self.replica = replica
        last = store.last(replica)
        self.imported_seq = last[0] if last is not None else 0
        self.progress_at = time.monotonic()  # the last pass that left the store caught up with the journal
        self.error: str | None = None  # why the last pass failed
        self._cursor: tuple[Path, int] | None = None  # (segment, offset) of the next line to read

    def _start(self) -> tuple[Path, int] | None:
        """The segment that holds the record after the last imported one."""
        found = None
        for first, path in journal.segments(self._directory):
            if first <= self.imported_seq + 1 or found is None:
                found = (path, 0)
        return found

    def _read(self, limit: int) -> list[StoredRecord]:
        out: list[StoredRecord] = []
        while len(out) < limit:
            if self._cursor is None:
                self._cursor = self._start()
                if self._cursor is None:
                    return out
            path, offset = self._cursor
            # listed before reading: the writer starts a segment only after finishing the one
            # before, so once a later one exists, this one read to its end is all there is
            later = [p for _, p in journal.segments(self._directory) if p.name > path.name]
            try:
                for text, end in journal.read_lines(path, offset):
                    self._cursor = (path, end)
                    split = rec.split_line(text)
                    r = journal.loads(text) if split is not None else None  # the line is JSON too
                    seq = r.get("seq") if r is not None else None
                    if split is None or r is None or not isinstance(seq, int):
                        log.error("audit journal %s: a line at offset %d is not an audit record (verify will "
                                  "report it)", path, end - len(text) - 1)
                        continue
                    last = out[-1].seq if out else self.imported_seq
                    if seq <= last:
                        continue  # imported before
                    if seq > last + 1:
                        log.error("audit journal %s: records %d..%d are missing (verify will report it)", path,
                                  last + 1, seq - 1)
                    out.append(StoredRecord(seq, split[0].decode(), split[1], r))
                    if len(out) >= limit:
                        return out
            except FileNotFoundError:  # pruned by retention meanwhile
                self._cursor = None
                continue
            if not later:
                return out
            self._cursor = (later[0], 0)
        return out

    def _imported_by_another(self, seq: int) -> bool:
        """Whether the store has record ``seq`` anyway: ``rowgate audit`` (or a proxy started on
        the same data dir) imported the same records, holding the store's lock meanwhile."""
        try:
            last = self._store.last(self.replica)
        except Exception:
            return False
        return last is not None and last[0] >= seq

    def run_once(self) -> int:
        """Import every complete record the journal has beyond the store; how many. Raises
        (and records ``error``) when the store refused them."""
        total = 0
        try:
            while True:
                cursor = self._cursor
                batch = self._read(BATCH)
                if batch:
                    try:
                        self._store.import_records(self.replica, batch)
                    except Exception:
                        if not self._imported_by_another(batch[-1].seq):
                            self._cursor = cursor  # read them again next time
                            raise
                    self.imported_seq = batch[-1].seq
                    total += len(batch)
                if len(batch) < BATCH:
                    break
        except Exception as e:
            if self.error != str(e):
                log.error("audit: cannot import the journal into the store (statements are refused after "
                          "audit.max_import_lag): %s", e)
            self.error = str(e)
            raise
        if self.error is not None:
            log.warning("audit: the store accepts records again")
        self.error = None
        self.progress_at = time.monotonic()
        return total


def catch_up(store: AuditStore, root: Path) -> dict[str, int]:
    """Import what every replica journal under ``root`` (data_dir/audit) has beyond the store:
    records imported per replica."""
    return {replica: Importer(store, root / replica, replica).run_once() for replica in journal.replicas(root)}
