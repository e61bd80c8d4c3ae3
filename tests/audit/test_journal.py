"""The journal: tampering with its lines is found by verify, the store is checked against it,
a torn tail is repaired, and a journal that cannot be written refuses the record."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.importer import catch_up
from rowgate.audit.signing import Signer, generate_key_file, load_private_key
from rowgate.audit.store import open_store
from rowgate.audit.verify import ChainReport, verify_all
from rowgate.audit.writer import AuditWriter
from rowgate.errors import AuditUnavailable


def _writer(tmp: Path, **kw: object) -> AuditWriter:
    key = tmp / "audit.key"
    generate_key_file(key)
    return AuditWriter(open_store(None, tmp), "r1", journal.root(tmp), signer=Signer(load_private_key(key)),
                       checkpoint_records=10, **kw)  # type: ignore[arg-type]


def _statement(w: AuditWriter, i: int) -> rec.Record:
    return w.append(rec.STATEMENT, {"identity": "alice", "text": f"SELECT {i}", "statements": [],
                                    "decision": {"action": "allow"}})


def _chain(tmp: Path, n: int = 25) -> Path:
    w = _writer(tmp)
    for i in range(n):
        _statement(w, i)
    w.close()
    (_, path), = journal.segments(journal.root(tmp) / "r1")
    return path


def _reports(tmp: Path, key: bool = True) -> dict[str, ChainReport]:
    store = open_store(None, tmp)
    try:
        public = load_private_key(tmp / "audit.key").public_key() if key else None
        return {r.source: r for r in verify_all(journal.root(tmp), store, public)}
    finally:
        store.close()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_edited_line_is_found(tmp: Path) -> None:
    path = _chain(tmp)
    lines = _lines(path)
    lines[4] = lines[4].replace(b"SELECT 4", b"SELECT 5")
    path.write_bytes(b"".join(lines))
    j = _reports(tmp)["journal"]
    assert not j.intact and j.problem_seq == 5 and "changed" in (j.problem or "")


def test_deleted_line_is_found(tmp: Path) -> None:
    path = _chain(tmp)
    lines = _lines(path)
    del lines[7]
    path.write_bytes(b"".join(lines))
    j = _reports(tmp)["journal"]
    assert j.problem_seq == 9 and "8 are missing" in (j.problem or "")


def test_reordered_lines_are_found(tmp: Path) -> None:
    path = _chain(tmp)
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"".join(lines))
    j = _reports(tmp)["journal"]
    assert j.problem_seq == 4 and "missing before record 4" in (j.problem or "")


def test_inserted_line_is_found(tmp: Path) -> None:
    path = _chain(tmp)
    lines = _lines(path)
    split = rec.split_line(lines[5].rstrip(b"\n"))
    assert split is not None
    forged = journal.loads(split[0])
    assert forged is not None
    forged.update(text="SELECT forged", prev_hash=split[1])
    lines.insert(6, rec.line(rec.encode(forged), rec.record_hash(forged)))
    path.write_bytes(b"".join(lines))
    j = _reports(tmp)["journal"]
    assert not j.intact and j.problem_seq == 6


def test_cut_tail_is_reported_by_the_store(tmp: Path) -> None:
    """Removing the newest records from the journal leaves the store holding records the
    journal does not have."""
    path = _chain(tmp)
    path.write_bytes(b"".join(_lines(path)[:20]))
    reports = _reports(tmp)
    assert reports["journal"].intact
    assert reports["store"].problem == "record 21 of the store is not in the journal"


def test_store_rewritten_consistently_differs_from_the_journal(tmp: Path) -> None:
    """A store rewritten with recomputed hashes is a valid chain on its own (without a key to
    check signatures); it no longer matches the journal."""
    _chain(tmp)
    db = sqlite3.connect(tmp / "audit.db", isolation_level=None)
    prev = rec.GENESIS
    for seq, body in db.execute("SELECT seq, body FROM audit_records ORDER BY seq").fetchall():
        r = journal.loads(body.encode())
        assert r is not None
        if seq == 3:
            r["text"] = "SELECT harmless"
        if r["type"] == rec.CHECKPOINT:
            r["covers_hash"] = prev
        r["prev_hash"] = prev
        prev = rec.record_hash(r)
        db.execute("UPDATE audit_records SET body = ?, hash = ? WHERE seq = ?", (rec.canonical(r).decode(), prev, seq))
    db.close()
    store = _reports(tmp, key=False)["store"]
    assert store.problem == "record 3 of the store differs from the journal"


def test_store_behind_the_journal_is_not_an_error(tmp: Path) -> None:
    _chain(tmp)
    db = sqlite3.connect(tmp / "audit.db", isolation_level=None)
    db.execute("DELETE FROM audit_records WHERE seq > 20")
    db.close()
    store = _reports(tmp)["store"]
    assert store.intact and "8 records not yet imported" in store.notes[-1]
    s = open_store(None, tmp)
    assert catch_up(s, journal.root(tmp)) == {"r1": 8}
    assert catch_up(s, journal.root(tmp)) == {"r1": 0}  # idempotent
    s.close()
    assert all(r.intact and r.records == 28 for r in _reports(tmp).values())


def test_torn_tail_is_cut_and_the_chain_goes_on(tmp: Path) -> None:
    path = _chain(tmp)
    with open(path, "ab") as f:
        f.write(b'{"type":"statement","seq":28,"te')  # a crash in the middle of a write
    w = _writer(tmp)
    _statement(w, 99)
    w.close()
    assert all(r.intact for r in _reports(tmp).values())


def test_removed_journal_refuses_to_start(tmp: Path) -> None:
    path = _chain(tmp)
    path.unlink()
    with pytest.raises(AuditUnavailable, match="truncated or removed"):
        _writer(tmp)


def test_unwritable_journal_refuses_the_record(tmp: Path) -> None:
    """The journal file replaced by one that cannot be written (a full disk here: root may write
    read-only files) or its directory gone: the record is refused, the chain does not advance,
    and it goes on where it was once the journal is back."""
    w = _writer(tmp)
    _statement(w, 0)
    (_, path), = journal.segments(journal.root(tmp) / "r1")
    kept = path.with_suffix(".kept")
    path.rename(kept)
    path.symlink_to("/dev/full")
    w.journal.check()  # the sync thread's look, every fsync_interval
    with pytest.raises(AuditUnavailable, match="cannot write the journal"):
        _statement(w, 1)
    path.unlink()
    os.rename(path.parent, tmp / "moved")
    (tmp / "audit").rmdir()
    (tmp / "audit").write_text("not a directory")
    with pytest.raises(AuditUnavailable, match="cannot write the journal"):
        _statement(w, 2)
    (tmp / "audit").unlink()
    (tmp / "audit").mkdir()
    os.rename(tmp / "moved", path.parent)
    kept.rename(path)
    assert _statement(w, 3)["seq"] == 2  # the refused records took no place in the chain
    w.close()
    assert all(r.intact for r in _reports(tmp).values())


def test_store_that_cannot_keep_up_refuses_after_the_lag(tmp: Path) -> None:
    w = _writer(tmp, fsync_interval=0.05, max_import_lag=0.5).start()
    try:
        _statement(w, 0)
        locker = sqlite3.connect(tmp / "audit.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            w.append(rec.STATEMENT, {"text": "SELECT 1"}, strict=False)  # journaled, imported later
            deadline = time.monotonic() + 30
            with pytest.raises(AuditUnavailable, match="has not accepted records"):
                while time.monotonic() < deadline:
                    w.append(rec.COMPLETION, {}, strict=True)  # until refused (not a statement: kept apart)
                    time.sleep(0.1)
            # not strict (a fail-open database): journaled anyway
            w.append(rec.STATEMENT, {"text": "fail-open"}, strict=False)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        deadline = time.monotonic() + 30
        while w.importer.imported_seq < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        _statement(w, 3)
    finally:
        w.close()
    texts = [journal.loads(t) for _, t in journal.entries(journal.root(tmp) / "r1")]  # a line is JSON too
    assert [r["text"] for r in texts if r is not None and r["type"] == "statement"] == [
        "SELECT 0", "SELECT 1", "fail-open", "SELECT 3"]
    assert all(r.intact for r in _reports(tmp).values())
