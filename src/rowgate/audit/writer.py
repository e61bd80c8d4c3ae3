"""The chain writer: numbers, hashes and journals the records of one replica.

``append(durable=True)`` returns once the record (and every record before it) is written to
the journal, i.e. handed to the OS; the gate calls it before a statement is forwarded.
Records nothing waits for (completions, session ends) are chained at once and written with
the next durable record, or by the sync thread. In the background: the ``sync`` thread fsyncs
the journal every ``fsync_interval`` (group commit) and writes time-based signed checkpoints;
a process of its own (``import_process``) copies the journal into the store; the ``retention``
thread, when retention is configured, prunes old segments hourly.

Fail closed: a record that cannot be written raises AuditUnavailable, and so does a strict
durable append while the store is more than ``max_import_lag`` seconds or ``max_backlog``
records behind the journal (it is unavailable: search and lineage would miss statements).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.import_process import ImportProcess
from rowgate.audit.importer import Importer
from rowgate.audit.signing import Signer
from rowgate.audit.store import AuditStore
from rowgate.errors import AuditUnavailable

log = logging.getLogger("rowgate.audit")

MAX_PENDING = 256  # non-durable records held before a write is forced
_RETENTION_EVERY = 3600.0


class _Clock:
    """UTC ISO timestamps with microseconds; the formatting of the second is cached (this runs
    for every record)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1e6):06d}+00:00"


now_iso = _Clock()


def replica_id(data_dir: Path | None, configured: str | None) -> str:
    """This proxy's chain: configured, else an id kept in the data dir (stable across restarts)."""
    if configured:
        return configured
    if data_dir is None:
        return f"{socket.gethostname()}-{os.getpid()}"
    path = data_dir / "audit-replica"
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = f"{socket.gethostname()}-{secrets.token_hex(4)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return value


class AuditWriter:
    def __init__(
        self,
        store: AuditStore,
        replica: str,
        directory: Path,
        *,
        signer: Signer | None = None,
        fsync_interval: float = 0.2,
        checkpoint_records: int = 1000,
        checkpoint_interval: float = 60.0,
        retention: float | None = None,
        max_import_lag: float = 5.0,
        max_backlog: int = 50_000,
        segment_bytes: int = journal.SEGMENT_BYTES,
        clock: Callable[[], str] = now_iso,
    ) -> None:
        """``directory``: the journals' root (data_dir/audit); this replica's is a folder in it."""
        self.store = store
        self.replica = replica
        self._signer = signer
        self._fsync_interval = fsync_interval
        self._checkpoint_records = checkpoint_records
        self._checkpoint_interval = checkpoint_interval
        self._retention = retention
        self._max_lag = max_import_lag
        self._max_backlog = max_backlog
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.journal = journal.Journal(directory / replica, segment_bytes)
        except OSError as e:
            raise AuditUnavailable(f"audit log unavailable: cannot open the journal in {directory}: {e}") from e
        self._seq, self._hash = self.journal.last_seq, self.journal.last_hash
        self._written = (self._seq, self._hash)  # the last record handed to the OS
        stored = store.last(replica)
        if stored is not None and stored[0] > self._seq:
            raise AuditUnavailable(
                f"audit log unavailable: the journal of replica {replica} ends at record {self._seq} but the store "
                f"has records up to {stored[0]}: the journal in {directory / replica} was truncated or removed",
                hint="restore the journal, or give this proxy a new chain (audit.replica); run rowgate audit verify")
        # what fills the store: in-process until ``start`` hands it to a process of its own
        self.importer: Importer | ImportProcess = Importer(store, directory / replica, replica)
        self._pending: list[bytes] = []  # lines chained but not written yet
        self._ts = self.journal.last_ts  # of the last record
        self._uncheckpointed = 0
        self._last_checkpoint = time.monotonic()
        self._broken: str | None = None  # the journal cannot be trusted any more (fsync failed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> AuditWriter:
        location = self.store.location
        if location is None:
            raise ValueError("the audit store was not opened with open_store: no process can import into it")
        self.importer = ImportProcess(location, self.journal.directory, self.replica, self._fsync_interval,
                                      self.importer.imported_seq).start()
        loops = [("sync", self._sync_loop)]
        if self._retention is not None:
            loops.append(("retention", self._retention_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, daemon=True, name=f"rowgate-audit-{name}")
            thread.start()
            self._threads.append(thread)
        return self

    # --- appending -----------------------------------------------------------------

    def append(self, type_: str, fields: Mapping[str, Any], *, durable: bool = True,
               strict: bool = True) -> rec.Record:
        """Chain a record; ``durable``: write it (and all before it) to the journal before
        returning. ``strict``: refuse it while the store is unavailable (see the module doc)."""
        with self._lock:
            if durable and strict:
                self._check_store()
            record = self._make(type_, fields)
            if self._signer is not None and self._uncheckpointed >= self._checkpoint_records:
                self._checkpoint()
                durable = True  # a segment ends at a checkpoint: write it before the next records
            if durable or len(self._pending) >= MAX_PENDING:
                self._write()
            return record

    def _check_store(self) -> None:
        if self._broken is not None:
            raise AuditUnavailable(self._broken)
        importer = self.importer
        behind = self._seq - importer.imported_seq
        if behind <= 0:
            return
        stalled = time.monotonic() - importer.progress_at
        if behind <= self._max_backlog and stalled <= self._max_lag:
            return
        why = f" ({importer.error})" if importer.error else ""
        if behind > self._max_backlog:
            raise AuditUnavailable(f"audit log unavailable: the audit store is {behind} records behind the "
                                   f"journal{why}")
        raise AuditUnavailable(f"audit log unavailable: the audit store has not accepted records for "
                               f"{stalled:.1f}s{why}")

    def _make(self, type_: str, fields: Mapping[str, Any]) -> rec.Record:
        self._seq += 1
        ts = self._clock()
        if ts < self._ts:  # the wall clock went back: verify expects time order
            ts = self._ts
        self._ts = ts
        record: rec.Record = {"type": type_, **fields, "replica": self.replica, "seq": self._seq,
                              "ts": ts, "prev_hash": self._hash}
        body = rec.encode(record)
        record["hash"] = self._hash = hashlib.sha256(body).hexdigest()
        self._pending.append(rec.line(body, self._hash))
        self._uncheckpointed += 1
        return record

    def _write(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            self.journal.write(data, self._written[0] + 1)
        except OSError as e:
            # nothing of the batch is in the journal: the chain goes on from the last written record
            log.error("audit: cannot write the journal (%d records refused or lost): %s", len(pending), e)
            self._seq, self._hash = self._written
            self._uncheckpointed = max(0, self._uncheckpointed - len(pending))
            pending.clear()
            raise AuditUnavailable(f"audit log unavailable: cannot write the journal: {e.strerror or e}") from e
        self._written = (self._seq, self._hash)
        pending.clear()
        if self.journal.size >= self.journal.segment_bytes and (self._uncheckpointed == 0 or self._signer is None):
            self.journal.rotate()

    def _checkpoint(self) -> None:
        assert self._signer is not None
        covered_seq, covered_hash = self._seq, self._hash
        self._make(rec.CHECKPOINT, {
            "covers_seq": covered_seq,
            "covers_hash": covered_hash,
            "key_id": self._signer.key_id,
            "signature": self._signer.sign(self.replica, covered_seq, covered_hash),
        })
        self._uncheckpointed = 0
        self._last_checkpoint = time.monotonic()

    def flush(self, checkpoint: bool = False) -> None:
        """Write what is pending (after a signed checkpoint over it), then fsync the journal."""
        with self._lock:
            if checkpoint and self._signer is not None and self._uncheckpointed:
                self._checkpoint()
            self._write()
        try:
            self.journal.sync()
        except OSError as e:
            # after a failed fsync the written records may be gone: nothing is trusted to it any more
            self._broken = f"audit log unavailable: the journal could not be synced to disk: {e.strerror or e}"
            log.critical("audit: %s; statements are refused until rowgate is restarted", self._broken)
            raise AuditUnavailable(self._broken) from e

    # --- background: group commit, checkpoints; import, retention -----------------------

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._fsync_interval):
            try:
                self.journal.check()
                due = time.monotonic() - self._last_checkpoint >= self._checkpoint_interval
                self.flush(checkpoint=due)
            except Exception:
                log.exception("audit: background write or fsync failed")

    def _retention_loop(self) -> None:
        wait = self._fsync_interval  # soon after the start, then hourly
        while not self._stop.wait(wait):
            wait = _RETENTION_EVERY
            try:
                self.apply_retention()
            except Exception:
                log.exception("audit: retention failed")

    def apply_retention(self) -> int:
        """Remove the journal segments (and their records in the store) older than the
        retention period, up to a signed checkpoint that ends a segment, and note the cut in the
        chain (verify checks the next record against it). Returns the number of records removed."""
        if self._retention is None:
            return 0
        cutoff = (datetime.now(UTC) - timedelta(seconds=self._retention)).isoformat(timespec="microseconds")
        found = self.store.last_before(self.replica, rec.CHECKPOINT, cutoff)
        if found is None:
            return 0
        segs = journal.segments(self.journal.directory)
        # whole segments that end at or before that checkpoint; never the last one (being written)
        doomed = [(segs[i + 1], path) for i, (_, path) in enumerate(segs[:-1]) if segs[i + 1][0] - 1 <= found[0]]
        if not doomed:
            return 0
        (next_first, next_path), _ = doomed[-1]
        through = next_first - 1
        first = next(journal.read_lines(next_path), None)
        split = rec.split_line(first[0]) if first is not None else None
        after = journal.loads(split[0]) if split is not None else None
        if after is None or not isinstance(after.get("prev_hash"), str):
            log.error("audit: retention skipped: %s does not start with an audit record", next_path)
            return 0
        self.append(rec.RETENTION, {"pruned_through": through, "pruned_hash": after["prev_hash"], "cutoff": cutoff})
        for _, path in doomed:
            path.unlink(missing_ok=True)
        n = self.store.prune(self.replica, through)
        log.info("audit: retention removed records 1..%d of replica %s (%d in the store)", through, self.replica, n)
        return through - (segs[0][0] - 1)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        try:
            self.flush(checkpoint=True)
        except AuditUnavailable:
            log.exception("audit: final write failed")
        importer = self.importer
        if isinstance(importer, ImportProcess) and not importer.stop():
            # its last pass failed or never came: try once more here
            importer = Importer(self.store, self.journal.directory, self.replica)
        if isinstance(importer, Importer):
            try:
                importer.run_once()
            except Exception:
                log.warning("audit: the store misses the last records; the next start (or rowgate audit) imports "
                            "them")
        self.journal.close()
        self.store.close()
