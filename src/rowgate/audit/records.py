"""Audit records: one JSON object per event, chained by SHA-256.

A record's body is its canonical JSON (sorted keys, no whitespace, UTF-8) with every field
but ``hash``, including ``prev_hash``; ``hash`` is the SHA-256 of exactly those bytes, so
changing, removing, inserting or reordering a record breaks the link to the next one. In
the journal a record is one line: the body with ``,"hash":"<hex>"`` appended before its
closing brace (``line``/``split_line``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from rowgate.identity.principal import Principal
    from rowgate.policy.engine import Decision
    from rowgate.sql.facts import Statement

GENESIS = "0" * 64

# event types
SESSION_START = "session_start"
SESSION_END = "session_end"
STATEMENT = "statement"
COMPLETION = "completion"
LOGIN_REFUSED = "login_refused"
TOKEN_CHANGE = "token_change"
POLICY_CHANGE = "policy_change"
APPROVAL = "approval"  # reserved for approval transitions
CHECKPOINT = "checkpoint"
RETENTION = "retention"

Record = dict[str, Any]


_SORTED = orjson.OPT_SORT_KEYS
_HASH_KEY = b',"hash":"'


def encode(record: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a record that has no ``hash`` field yet (the writer's hot path)."""
    return orjson.dumps(record, option=_SORTED, default=str)


def canonical(record: Mapping[str, Any]) -> bytes:
    return encode({k: v for k, v in record.items() if k != "hash"})


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def line(body: bytes, digest: str) -> bytes:
    """The journal line of a record: its body with the hash as the last field."""
    return b"".join((body[:-1], _HASH_KEY, digest.encode(), b'"}\n'))


_SUFFIX = len(_HASH_KEY) + 64 + 2


def split_line(text: bytes) -> tuple[bytes, str] | None:
    """(body, hash) of a journal line (without its newline); None if it is not one."""
    if len(text) <= _SUFFIX or text[-_SUFFIX:-66] != _HASH_KEY or not text.endswith(b'"}'):
        return None
    return text[:-_SUFFIX] + b"}", text[-66:-2].decode("ascii", "replace")


def principal_fields(p: Principal | None) -> dict[str, Any]:
    if p is None:
        return {"identity": None}
    return {
        "identity": p.name,
        "kind": p.kind,
        "groups": list(p.groups),
        "on_behalf_of": getattr(p, "on_behalf_of", None),
    }


def statement_facts(s: Statement) -> dict[str, Any]:
    return {
        "command": s.command,
        "kind": str(s.kind),
        "fingerprint": s.fingerprint,
        "tables_read": sorted(s.tables_read),
        "tables_written": sorted(s.tables_written),
        "columns": {clause: sorted(cols) for clause, cols in sorted(s.columns.items())},
        "flags": sorted(s.flags),
    }


def decision_fields(d: Decision) -> dict[str, Any]:
    return {
        "action": d.action,
        "rule": d.rule,
        "reason": d.reason,
        "enforced": d.enforced,
        "would_have": d.would_have,
        "statement_index": d.statement_index,
        "relaxed": list(d.relaxed),
    }


def decision_label(d: Mapping[str, Any]) -> str:
    """What search filters on: allow, deny, require_approval, or observed_<action>."""
    if not d.get("enforced", True) and d.get("would_have") not in (None, "allow"):
        return f"observed_{d['would_have']}"
    return str(d.get("action", ""))


def rows_from_tag(tag: str | None) -> int | None:
    """Rows returned or affected, from a CommandComplete tag (SELECT 3, INSERT 0 3, ...)."""
    if not tag:
        return None
    last = tag.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() and " " in tag else None


def tables_of(record: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for s in record.get("statements", ()):
        out.update(s.get("tables_read", ()))
        out.update(s.get("tables_written", ()))
    return out


def columns_of(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(column, clause) pairs a statement record read."""
    out: set[tuple[str, str]] = set()
    for s in record.get("statements", ()):
        for clause, cols in s.get("columns", {}).items():
            out.update((c, clause) for c in cols)
    return sorted(out)


def summarize_parameters(values: Sequence[bytes | None], formats: Sequence[int]) -> list[dict[str, Any]]:
    """Bind parameters without their values: a value may be anything sensitive, so only its
    format and length are kept."""
    out: list[dict[str, Any]] = []
    for i, v in enumerate(values):
        fmt = formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)
        out.append({"format": "binary" if fmt == 1 else "text", "length": None if v is None else len(v)})
    return out
