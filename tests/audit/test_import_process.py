"""The store is filled by a process of its own: it follows the journal across segments, its
last pass at a stop imports the rest, it ends with the proxy, and one that died is replaced."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.import_process import ImportProcess
from rowgate.audit.importer import Importer
from rowgate.audit.store import AuditStore, SearchFilter, open_store
from rowgate.audit.writer import AuditWriter


def _statement(w: AuditWriter, i: int) -> None:
    w.append(rec.STATEMENT, {"identity": "alice", "text": f"SELECT {i}", "statements": [],
                             "decision": {"action": "allow"}})


def _seqs(store: AuditStore) -> list[int]:
    return [seq for seq, _, _ in store.chain("r1")]


def test_records_written_as_a_segment_ends_are_not_skipped(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer ends a segment and starts the next while the importer reads the first: the
    records it added to the first meanwhile are imported too."""
    w = AuditWriter(open_store(None, tmp), "r1", journal.root(tmp))
    _statement(w, 1)
    w.journal.segment_bytes = w.journal.size + 1  # the next write ends this segment
    read_lines = journal.read_lines
    wrote: list[bool] = []

    def reading(path: Path, offset: int = 0) -> Iterator[tuple[bytes, int]]:
        yield from read_lines(path, offset)
        if not wrote:  # right after the importer read the segment to what was its end
            wrote.append(True)
            _statement(w, 2)  # the last record of this segment
            _statement(w, 3)  # the first of the next one

    monkeypatch.setattr(journal, "read_lines", reading)
    store = open_store(None, tmp / "other")
    importer = Importer(store, journal.root(tmp) / "r1", "r1")
    importer.run_once()
    importer.run_once()
    assert len(journal.segments(journal.root(tmp) / "r1")) == 2
    assert _seqs(store) == [1, 2, 3]
    store.close()
    w.close()


def test_a_stop_imports_what_the_process_had_not(tmp: Path) -> None:
    # passes an hour apart: only the one at the start (nothing yet) and the last one run
    w = AuditWriter(open_store(None, tmp), "r1", journal.root(tmp), fsync_interval=3600,
                    max_import_lag=3600).start()
    assert isinstance(w.importer, ImportProcess)
    for i in range(5):
        _statement(w, i)
    w.close()
    store = open_store(None, tmp)
    assert [r["text"] for r in store.search(SearchFilter(types=(rec.STATEMENT,)))] == [f"SELECT {i}" for i in range(5)]
    store.close()


def test_the_process_ends_with_the_proxy(tmp: Path) -> None:
    """A proxy killed with -9 closes the process's stdin without a word: it exits."""
    store = open_store(None, tmp)
    assert store.location is not None
    importer = ImportProcess(store.location, journal.root(tmp) / "r1", "r1", 3600, 0).start()
    child = importer._proc
    assert child is not None and child.stdin is not None
    child.stdin.close()
    assert child.wait(30) == 0
    importer.stop()  # the one started in its place
    store.close()


def test_a_dead_process_is_replaced(tmp: Path) -> None:
    w = AuditWriter(open_store(None, tmp), "r1", journal.root(tmp), fsync_interval=0.05).start()
    importer = w.importer
    assert isinstance(importer, ImportProcess) and importer._proc is not None
    first = importer._proc
    first.kill()
    first.wait()
    _statement(w, 1)
    deadline = time.monotonic() + 30
    while (importer._proc is first or importer.imported_seq < 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert importer._proc is not first and importer.imported_seq == 1
    w.close()
