"""``rowgate audit verify``: walk every replica's journal and its records in the store, and
report the first record that is changed, missing, inserted, moved or out of order, every
checkpoint whose signature does not hold, and every store record that differs from the
journal. Records the importer has not copied to the store yet are not an error."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.signing import signature_valid
from rowgate.audit.store import AuditStore


@dataclass
class ChainReport:
    replica: str
    source: str = "store"  # "journal" or "store"
    records: int = 0
    checkpoints: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    problem: str | None = None  # the first broken record, in words
    problem_seq: int | None = None
    unsigned_tail: int = 0  # records after the last valid signed checkpoint
    notes: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.problem is None


# (seq the record is stored under, or None in the journal; body; hash next to it)
_Entry = tuple[int | None, bytes, str]


def _walk(report: ChainReport, entries: Iterable[_Entry], public_key: Ed25519PublicKey | None) -> ChainReport:
    replica = report.replica
    expected: int | None = None
    prev_hash = rec.GENESIS
    prev_ts = ""
    cut: tuple[int, str] | None = None  # (first seq, its prev_hash) until a retention record explains the gap

    def broken(seq: int | None, what: str) -> ChainReport:
        if cut is not None:  # records missing at the start come first
            what, seq = f"records 1..{cut[0] - 1} are missing (no retention record explains them)", cut[0]
        report.problem, report.problem_seq = what, seq
        return report

    for slot, body, stored_hash in entries:
        report.records += 1
        after = f"record {slot}" if slot is not None else f"the record after {report.last_seq or 0}"
        r = journal.loads(body)
        if r is None:
            return broken(slot if slot is not None else (report.last_seq or 0) + 1, f"{after} is not valid JSON")
        seq = r.get("seq")
        if not isinstance(seq, int) or (slot is not None and seq != slot) or r.get("replica") != replica:
            where = slot if slot is not None else (report.last_seq or 0) + 1
            return broken(where, f"record stored as {where} says it is record {seq} of replica {r.get('replica')}: "
                                 "records were moved")
        if expected is None:  # the first record: seq 1, or the one after a retention cut
            report.first_seq = expected = seq
            if seq != 1:
                prev_hash = str(r.get("prev_hash"))
                cut = (seq, prev_hash)
        if seq != expected:
            if seq < expected:
                return broken(seq, f"record {seq} appears again after record {expected - 1}: records were "
                                   "reordered or duplicated")
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            return broken(seq, f"record(s) {missing} are missing before record {seq}")
        h = hashlib.sha256(body).hexdigest()
        if h != stored_hash:
            return broken(seq, f"record {seq} was changed: its content does not match its hash")
        if r.get("prev_hash") != prev_hash:
            return broken(seq, f"record {seq} does not follow record {seq - 1}: a record was changed, inserted, "
                               "removed or reordered before it")
        if str(r.get("ts", "")) < prev_ts:
            return broken(seq, f"record {seq} is older than record {seq - 1}: records are out of order")
        if r.get("type") == rec.CHECKPOINT:
            report.checkpoints += 1
            if r.get("covers_seq") != seq - 1 or r.get("covers_hash") != prev_hash:
                return broken(seq, f"checkpoint {seq} does not cover the record before it")
            if public_key is not None:
                if not signature_valid(public_key, replica, seq - 1, prev_hash, str(r.get("signature", ""))):
                    return broken(seq, f"checkpoint {seq} has no valid signature by the configured key")
                report.unsigned_tail = -1  # reset below: this record itself is signed over
        if (r.get("type") == rec.RETENTION and cut is not None and r.get("pruned_through") == cut[0] - 1
                and r.get("pruned_hash") == cut[1]):
            report.notes.append(f"records 1..{cut[0] - 1} were removed by retention")
            cut = None
        prev_hash, prev_ts = h, str(r.get("ts", ""))
        report.last_seq = seq
        expected = seq + 1
        report.unsigned_tail += 1
    if cut is not None:
        return broken(cut[0], "")
    if report.records == 0:
        report.notes.append("no records")
    return report


def _journal_entries(directory: Path, report: ChainReport) -> Iterator[_Entry]:
    for path, text in journal.entries(directory):
        split = rec.split_line(text)
        if split is None:
            report.notes.append(f"{path.name}: a line without a hash")
            yield None, text, ""  # fails as changed (or as not JSON)
        else:
            yield None, split[0], split[1]


def _store_entries(store: AuditStore, replica: str) -> Iterator[_Entry]:
    for seq, body, h in store.chain(replica):
        yield seq, body.encode(), h


def verify_journal(directory: Path, replica: str, public_key: Ed25519PublicKey | None) -> ChainReport:
    report = ChainReport(replica, "journal")
    return _walk(report, _journal_entries(directory, report), public_key)


def verify_store_chain(store: AuditStore, replica: str, public_key: Ed25519PublicKey | None) -> ChainReport:
    return _walk(ChainReport(replica, "store"), _store_entries(store, replica), public_key)


def _compare(directory: Path, store: AuditStore, report: ChainReport) -> None:
    """Every store record must be the journal's record of the same seq."""
    hashes: Iterator[tuple[int, str]] = (
        (int(r["seq"]), split[1]) for _, text in journal.entries(directory)
        if (split := rec.split_line(text)) is not None and (r := journal.loads(split[0])) is not None
        and isinstance(r.get("seq"), int))
    current: tuple[int, str] | None = next(hashes, None)
    for seq, _, h in store.chain(report.replica):
        while current is not None and current[0] < seq:
            current = next(hashes, None)
        if current is None or current[0] != seq:
            report.problem, report.problem_seq = f"record {seq} of the store is not in the journal", seq
            return
        if current[1] != h:
            report.problem, report.problem_seq = f"record {seq} of the store differs from the journal", seq
            return
        current = next(hashes, None)
    behind = 0
    while current is not None:
        behind, last = behind + 1, current[0]
        current = next(hashes, None)
    if behind:
        report.notes.append(f"{behind} records not yet imported from the journal (up to record {last})")


def verify_all(root: Path | None, store: AuditStore, public_key: Ed25519PublicKey | None) -> list[ChainReport]:
    """Per replica: its journal (when ``root``, data_dir/audit, has one) and its store records,
    compared."""
    local = journal.replicas(root) if root is not None else []
    reports: list[ChainReport] = []
    for replica in sorted(set(local) | set(store.replicas())):
        stored = verify_store_chain(store, replica, public_key)
        if replica in local:
            assert root is not None
            kept = verify_journal(root / replica, replica, public_key)
            reports.append(kept)
            if kept.intact and stored.intact:
                _compare(root / replica, store, stored)
        else:
            stored.notes.append("no journal of this replica here (another proxy's): the store's chain only")
        reports.append(stored)
    return reports
