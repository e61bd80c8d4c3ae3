"""The hash chain, checkpoints and `rowgate audit verify` against a tampered store and a
tampered journal: each kind of tampering (edit, delete, reorder, insert, rewrite with
recomputed hashes) is found by the CLI, which exits 1 and names the first broken record."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.signing import Signer, generate_key_file, load_private_key
from rowgate.audit.store import open_store
from rowgate.audit.verify import ChainReport, verify_all
from rowgate.audit.writer import AuditWriter


def _reports(tmp: Path) -> dict[str, ChainReport]:
    store = open_store(None, tmp)
    try:
        return {r.source: r for r in verify_all(journal.root(tmp), store,
                                                load_private_key(tmp / "audit.key").public_key())}
    finally:
        store.close()


def _setup(tmp: Path, n: int = 30, checkpoint_records: int = 10) -> Path:
    """A data dir with a signed chain of ``n`` statement records (a journal segment per 10, each
    ending with its checkpoint), imported into the store; returns the config path."""
    key = tmp / "audit.key"
    generate_key_file(key)
    writer = AuditWriter(open_store(None, tmp), "r1", journal.root(tmp), signer=Signer(load_private_key(key)),
                         checkpoint_records=checkpoint_records, segment_bytes=1)
    for i in range(n):
        writer.append(rec.STATEMENT, {"identity": "alice", "database": "app", "text": f"SELECT {i}",
                                      "statements": [], "decision": {"action": "allow", "rule": "default"}})
    writer.close()
    cfg = tmp / "rowgate.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp), "upstreams": {"app": {"database": "x", "user": "x"}},
        "audit": {"signing_key_file": str(key)},
    }))
    return cfg


def _verify(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rowgate.cli", "audit", "verify", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def _db(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp / "audit.db", isolation_level=None)


def _body(db: sqlite3.Connection, seq: int) -> dict[str, object]:
    body, h = db.execute("SELECT body, hash FROM audit_records WHERE seq = ?", (seq,)).fetchone()
    out: dict[str, object] = {**json.loads(body), "hash": h}
    return out


def test_intact_chain_verifies(tmp: Path) -> None:
    cfg = _setup(tmp)
    out = _verify(cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "replica r1 journal: intact" in out.stdout and "replica r1 store: intact" in out.stdout
    assert [p.name for _, p in journal.segments(journal.root(tmp) / "r1")] == [
        "000000000001.jsonl", "000000000012.jsonl", "000000000023.jsonl"]
    # 30 statements and a checkpoint after every 10 of them: nothing is left unsigned at close
    for report in _reports(tmp).values():
        assert report.intact and report.records == 33 and report.checkpoints == 3 and report.unsigned_tail == 0


def test_edited_record_is_found(tmp: Path) -> None:
    cfg = _setup(tmp)
    with _db(tmp) as db:
        db.execute("UPDATE audit_records SET body = replace(body, 'SELECT 6', 'SELECT 9') WHERE seq = 7")
    out = _verify(cfg)
    assert out.returncode == 1
    assert "BROKEN at record 7" in out.stdout and "changed" in out.stdout


def test_edit_with_recomputed_hashes_fails_the_signature(tmp: Path) -> None:
    """Rewriting a record and every hash after it keeps the chain linked; the signed checkpoint
    after it no longer verifies."""
    cfg = _setup(tmp)
    with _db(tmp) as db:
        rows = db.execute("SELECT seq, body FROM audit_records ORDER BY seq").fetchall()
        prev = rec.GENESIS
        for seq, body in rows:
            r = json.loads(body)
            if seq == 3:
                r["text"] = "SELECT harmless"
            if r["type"] == rec.CHECKPOINT:
                r["covers_hash"] = prev  # the forger keeps checkpoints consistent too, but cannot sign
            r["prev_hash"] = prev
            r["hash"] = prev = rec.record_hash(r)
            db.execute("UPDATE audit_records SET body = ?, hash = ? WHERE seq = ?", (rec.canonical(r).decode(),
                                                                                     r["hash"], seq))
    out = _verify(cfg)
    assert out.returncode == 1
    assert "checkpoint 11 has no valid signature" in out.stdout


def test_deleted_record_is_found(tmp: Path) -> None:
    cfg = _setup(tmp)
    with _db(tmp) as db:
        db.execute("DELETE FROM audit_records WHERE seq = 15")
    out = _verify(cfg)
    assert out.returncode == 1
    assert "BROKEN at record 16" in out.stdout and "15 are missing" in out.stdout


def test_deleted_first_records_are_found(tmp: Path) -> None:
    cfg = _setup(tmp)
    with _db(tmp) as db:
        db.execute("DELETE FROM audit_records WHERE seq <= 2")
    out = _verify(cfg)
    assert out.returncode == 1 and "records 1..2 are missing" in out.stdout


def test_reordered_records_are_found(tmp: Path) -> None:
    cfg = _setup(tmp)
    with _db(tmp) as db:
        a, b = _body(db, 4), _body(db, 5)
        # swap the two records' contents, renumbered so each claims its new place
        for seq, r in ((4, b), (5, a)):
            r["seq"] = seq
            r["hash"] = rec.record_hash(r)
            db.execute("UPDATE audit_records SET body = ?, hash = ? WHERE seq = ?",
                       (rec.canonical(r).decode(), r["hash"], seq))
    out = _verify(cfg)
    assert out.returncode == 1
    assert "BROKEN at record 4" in out.stdout and "does not follow" in out.stdout


def test_swapped_rows_are_found(tmp: Path) -> None:
    cfg = _setup(tmp)
    with _db(tmp) as db:
        db.execute("UPDATE audit_records SET seq = -1 WHERE seq = 8")
        db.execute("UPDATE audit_records SET seq = 8 WHERE seq = 9")
        db.execute("UPDATE audit_records SET seq = 9 WHERE seq = -1")
    out = _verify(cfg)
    assert out.returncode == 1 and "BROKEN at record 8" in out.stdout and "moved" in out.stdout


def test_inserted_record_is_found(tmp: Path) -> None:
    cfg = _setup(tmp)
    with _db(tmp) as db:
        db.execute("UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 20")  # make room after record 19
        db.execute("UPDATE audit_records SET seq = seq - 999 WHERE seq >= 1000")
        forged = _body(db, 19)
        forged.update(seq=20, text="SELECT forged", prev_hash=forged["hash"])
        forged["hash"] = rec.record_hash(forged)
        db.execute("INSERT INTO audit_records (replica, seq, body, hash) VALUES ('r1', 20, ?, ?)",
                   (rec.canonical(forged).decode(), forged["hash"]))
    out = _verify(cfg)
    assert out.returncode == 1
    # record 21 (the real record 20) claims another place, or does not follow the forged one
    assert "BROKEN at record 21" in out.stdout


def test_wrong_key_fails(tmp: Path) -> None:
    cfg = _setup(tmp)
    other = tmp / "other.key"
    generate_key_file(other)
    out = subprocess.run([sys.executable, "-m", "rowgate.cli", "audit", "verify", "-c", str(cfg), "--key", str(other)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no valid signature" in out.stdout


def test_retention_prunes_to_a_checkpoint_and_verifies(tmp: Path) -> None:
    _setup(tmp)
    key = load_private_key(tmp / "audit.key")
    writer = AuditWriter(open_store(None, tmp), "r1", journal.root(tmp), signer=Signer(key), retention=0.0)
    removed = writer.apply_retention()
    writer.close()
    # the last segment is kept (it is the one written to); the two before it end at checkpoints
    assert removed == 22
    assert [p.name for _, p in journal.segments(journal.root(tmp) / "r1")] == ["000000000023.jsonl"]
    for report in _reports(tmp).values():
        assert report.intact, (report.source, report.problem)
        assert report.first_seq == removed + 1 and "removed by retention" in report.notes[0]


@pytest.mark.parametrize("n", [1, 250])
def test_chain_continues_across_restarts(tmp: Path, n: int) -> None:
    for _ in range(2):
        w = AuditWriter(open_store(None, tmp), "r1", journal.root(tmp))
        for _ in range(n):
            w.append(rec.COMPLETION, {"identity": "bob"}, durable=False)
        w.close()
    generate_key_file(tmp / "audit.key")
    for report in _reports(tmp).values():
        assert report.intact and report.records == 2 * n
