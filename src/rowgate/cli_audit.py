"""``rowgate audit verify|search|export`` and ``rowgate lineage``: read the audit journal in
the data dir and the store the config names (the proxy may be running). search, export and
lineage first import what the journal has beyond the store, as the proxy would."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.importer import catch_up
from rowgate.audit.signing import load_public_key
from rowgate.audit.store import AuditStore, SearchFilter, open_store
from rowgate.audit.verify import verify_all
from rowgate.config import Config
from rowgate.errors import AuditUnavailable, ConfigError
from rowgate.sql.lineage import statement_lineage

_RELATIVE = re.compile(r"^\s*(\d+)\s*(m|h|d|w)\s*$")
_UNIT = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_parsers(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="verify, search and export the audit log",
                           description="Read the audit log the config's audit section names.")
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = with_config(asub.add_parser(
        "verify", help="check every replica's hash chain and checkpoint signatures",
        description="Walk every replica's chain in the journal and in the store: hashes, sequence, order and "
        "checkpoint signatures, and that the store holds the journal's records. Prints the first broken record "
        "and exits 1; exits 0 only when every chain is intact."))
    verify.add_argument("--key", type=Path, help="Ed25519 key (public, or the private key file) to check "
                        "signatures with (default: audit.signing_key_file)")
    search = with_config(asub.add_parser("search", help="find audit records"))
    search.add_argument("--identity")
    search.add_argument("--database", help="an upstream name from the config")
    search.add_argument("--table", help="schema.table, or a table name")
    search.add_argument("--column", help="schema.table.column (or db.schema.table.column)")
    search.add_argument("--decision", help="allow, deny, require_approval, observed_deny, ...")
    search.add_argument("--type", action="append", default=[], help="record type (repeatable): statement, "
                        "completion, session_start, session_end, login_refused, ...")
    search.add_argument("--text", help="free text anywhere in the record")
    search.add_argument("--unmasked", action="store_true", help="only records of sessions that saw raw values "
                        "(an unmask rule matched, or masking is off); each says why")
    _time_args(search)
    search.add_argument("--limit", type=int, default=1000)
    search.add_argument("--json", action="store_true", help="one JSON record per line")
    export = with_config(asub.add_parser("export", help="write records as JSON lines"))
    _time_args(export)
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")

    lineage = with_config(sub.add_parser(
        "lineage", help="who read a column, or which columns an identity touched",
        description="From the audit log: --column lists who read it, when, and whether they saw it masked; "
        "--identity lists every column an identity touched."))
    which = lineage.add_mutually_exclusive_group(required=True)
    which.add_argument("--column", help="[database.]schema.table.column")
    which.add_argument("--identity")
    _time_args(lineage)
    lineage.add_argument("--json", action="store_true")


def _time_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="ISO date/time (UTC unless it has an offset) or a period: 30m, 12h, 7d, 2w")
    p.add_argument("--until", help="ISO date/time")


def parse_time(value: str | None) -> str | None:
    """A bound comparable with record timestamps (ISO, UTC, microseconds)."""
    if value is None:
        return None
    m = _RELATIVE.match(value)
    if m:
        at = datetime.now(UTC) - timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])
    else:
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"not a time: {value!r} (use e.g. 2026-01-31, 2026-01-31T12:00, 7d, 12h)") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _store(config: Config) -> AuditStore:
    cfg = config.audit
    password = cfg.password.resolve("audit.password") if cfg.password is not None else None
    return open_store(cfg.url, config.data_dir, password)


def run(config: Config, args: argparse.Namespace) -> int:
    store = _store(config)
    try:
        if config.data_dir is not None and not (args.command == "audit" and args.audit_command == "verify"):
            try:
                catch_up(store, journal.root(config.data_dir))
            except AuditUnavailable as e:
                print(f"note: the newest records may be missing: {e}", file=sys.stderr)
        if args.command == "lineage":
            return _lineage(store, config, args)
        if args.audit_command == "verify":
            return _verify(store, config, args.key)
        if args.audit_command == "search":
            return _search(store, config, args)
        return _export(store, args)
    finally:
        store.close()


def _verify(store: AuditStore, config: Config, key: Path | None) -> int:
    key = key or config.audit.signing_key_file
    public = load_public_key(key) if key is not None else None
    root = journal.root(config.data_dir) if config.data_dir is not None else None
    reports = verify_all(root, store, public)
    if not reports:
        print("audit log is empty: nothing to verify")
        return 0
    broken = 0
    for r in reports:
        span = f"records {r.first_seq}..{r.last_seq}" if r.first_seq is not None else "no records"
        if r.intact:
            signed = (f", {r.checkpoints} signed checkpoints, {r.unsigned_tail} records after the last one"
                      if public is not None else ", signatures not checked (no key)")
            print(f"replica {r.replica} {r.source}: intact ({r.records} records, {span}{signed})")
        else:
            broken += 1
            print(f"replica {r.replica} {r.source}: BROKEN at record {r.problem_seq}: {r.problem}")
        for note in r.notes:
            print(f"  note: {note}")
    return 1 if broken else 0


def _column_filter(value: str | None, config: Config) -> tuple[str | None, str | None]:
    """(schema.table.column, upstream name or None) from [database.]schema.table.column."""
    if value is None:
        return None, None
    parts = value.split(".")
    if len(parts) == 4:
        db = parts[0]
        names = [n for n, u in config.upstreams.items() if n == db or u.database == db]
        return ".".join(parts[1:]), (names[0] if names else db)
    return value, None


def _search(store: AuditStore, config: Config, args: argparse.Namespace) -> int:
    column, database = _column_filter(args.column, config)
    found = store.search(SearchFilter(
        identity=args.identity, database=args.database or database, table=args.table, column=column,
        decision=args.decision, since=parse_time(args.since), until=parse_time(args.until), text=args.text,
        types=tuple(args.type), unmasked=args.unmasked, limit=args.limit,
    ))
    for r in found:
        if args.json:
            print(json.dumps(r, sort_keys=True))
        else:
            print(_line(r))
    if not args.json:
        print(f"({len(found)} records)", file=sys.stderr)
    return 0


def unmasked_note(masking: Any) -> str | None:
    """'UNMASKED (rule 2, group=dpo): GDPR requests' for a session that saw raw values."""
    if not isinstance(masking, dict) or masking.get("unmasked") is not True:
        return None
    why = [f"rule {masking['rule']}"] if masking.get("rule") is not None else []
    why += [f"{k}={v}" for k, v in sorted((masking.get("matched") or {}).items())]
    return f"UNMASKED ({', '.join(why)}): {masking.get('reason')}" if why else f"UNMASKED: {masking.get('reason')}"


def _line(r: rec.Record) -> str:
    head = f"{r['ts']} {r['replica']}#{r['seq']} {r['type']:<13} {r.get('identity') or '-'}"
    note = unmasked_note(r.get("masking"))
    if note is not None:
        head += f" [{note}]"
    if r["type"] == rec.TOKEN_CHANGE:
        return (f"{head} {r.get('action')} token {r.get('token_id')} ({r.get('kind')}; groups: "
                f"{','.join(r.get('groups') or []) or '-'}) at {r.get('at')} by {r.get('by') or 'unknown'}")
    if r["type"] == rec.STATEMENT:
        d = r.get("decision") or {}
        text = " ".join(str(r.get("text", "")).split())
        return f"{head} @{r.get('database')} {rec.decision_label(d)} [{d.get('rule')}] {text[:120]}"
    if r["type"] == rec.COMPLETION:
        masked = ",".join(f"{k}:{v}" for k, v in (r.get("masked") or {}).items())
        return (f"{head} of #{r.get('ref')} {'/'.join(r.get('tags') or [])} rows={r.get('rows')} "
                f"error={r.get('error') or '-'} {r.get('duration_ms')}ms" + (f" masked={masked}" if masked else ""))
    extra = {k: v for k, v in r.items()
             if k not in ("ts", "replica", "seq", "type", "identity", "hash", "prev_hash", "masking")}
    return f"{head} {json.dumps(extra, sort_keys=True)[:200]}"


def _export(store: AuditStore, args: argparse.Namespace) -> int:
    found = store.search(SearchFilter(since=parse_time(args.since), until=parse_time(args.until)))
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in found)
    if args.output is None:
        sys.stdout.write(lines)
    else:
        args.output.write_text(lines)
        print(f"{len(found)} records written to {args.output}", file=sys.stderr)
    return 0


class _NoCatalog:
    """Lineage from the statement text alone: enough to tie output names to source columns."""

    def columns(self, table: str) -> Sequence[str] | None:
        return None

    def view_sql(self, table: str) -> str | None:
        return None


def _masked_sources(statement: rec.Record | None, masked_outputs: set[str]) -> set[str]:
    """Source columns (schema.table.column) of the output columns the masking stage masked, so
    ``SELECT email AS e`` counts as a masked read of email; empty when it cannot be traced."""
    if statement is None or not masked_outputs or len(statement.get("statements") or ()) != 1:
        return set()
    try:
        (traced,) = statement_lineage(str(statement.get("text") or ""), _NoCatalog())
    except Exception:
        return set()
    if traced is None:
        return set()
    return {src for out in traced.outputs if out.name in masked_outputs for src in out.sources}


def _fetch(store: AuditStore, keys: set[tuple[str, int]],
           get: Callable[[str, list[int]], dict[int, rec.Record]]) -> dict[tuple[str, int], rec.Record]:
    out: dict[tuple[str, int], rec.Record] = {}
    for replica in {k[0] for k in keys}:
        seqs = sorted(k[1] for k in keys if k[0] == replica)
        out.update(((replica, s), r) for s, r in get(replica, seqs).items())
    return out


def _lineage(store: AuditStore, config: Config, args: argparse.Namespace) -> int:
    column, _ = _column_filter(args.column, config)
    reads = store.column_reads(column=column, identity=args.identity, since=parse_time(args.since))
    until = parse_time(args.until)
    reads = [r for r in reads if until is None or r[2] < until]
    # one row per statement and column: its clauses, and what its completion says was masked
    by_statement: dict[tuple[str, int, str], dict[str, Any]] = {}
    for replica, seq, ts, identity, col, clause in reads:
        row = by_statement.setdefault((replica, seq, col), {"ts": ts, "identity": identity, "column": col,
                                                            "clauses": [], "replica": replica, "seq": seq})
        row["clauses"].append(clause)
    keys = {(k[0], k[1]) for k in by_statement}
    completions = _fetch(store, keys, store.completions)
    statements = _fetch(store, keys, store.records)
    traced: dict[tuple[str, int], set[str]] = {}
    rows = []
    for (replica, seq, col), row in by_statement.items():
        done = completions.get((replica, seq))
        statement = statements.get((replica, seq))
        returned = any(c in ("select", "returning") for c in row["clauses"])
        masked_counts = (done or {}).get("masked") or {}
        # how the session saw sensitive data, and why (records before this was recorded: unknown)
        masking = (statement or done or {}).get("masking") or {}
        row["unmasked"] = masking.get("unmasked")
        row["masking_reason"] = masking.get("reason")
        row["masking_rule"] = masking.get("rule")
        if (replica, seq) not in traced:
            traced[(replica, seq)] = _masked_sources(statement, {k for k, v in masked_counts.items() if v})
        name = col.rpartition(".")[2]
        if not returned:
            row["masked"] = None  # used in a filter, join, ...: its values were not returned
        elif bool(masked_counts.get(name)) or col in traced[(replica, seq)]:
            row["masked"] = True  # the wire says so: the completion counted masked values
        elif row["unmasked"] is True:
            row["masked"] = False  # a session that sees raw values: nothing was masked, completion or not
        elif done is None:
            row["masked"] = "unknown"
        else:
            row["masked"] = False
        row["rows"] = (done or {}).get("rows")
        row["error"] = (done or {}).get("error")
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    if args.identity is not None:
        return _print_identity(rows)
    for row in rows:
        note = unmasked_note({"unmasked": row["unmasked"], "reason": row["masking_reason"],
                              "rule": row["masking_rule"]})
        if row["masked"] is False and note is not None:
            masked = f"RAW, {note}"
        else:
            masked = {True: "masked", False: "NOT masked", None: "not returned"}.get(row["masked"], row["masked"])
        print(f"{row['ts']}  {row['identity']:<12} {masked:<12} rows={row['rows']}  "
              f"clauses={','.join(row['clauses'])}  record {row['replica']}#{row['seq']}")
    print(f"({len(rows)} reads)", file=sys.stderr)
    return 0


def _print_identity(rows: list[dict[str, Any]]) -> int:
    per: dict[str, dict[str, Any]] = {}
    for row in rows:
        p = per.setdefault(row["column"], {"statements": 0, "first": row["ts"], "last": row["ts"], "clauses": set(),
                                           "unmasked": 0, "raw": 0})
        p["statements"] += 1
        p["last"] = row["ts"]
        p["clauses"].update(row["clauses"])
        p["unmasked"] += row["masked"] is False
        p["raw"] += row["masked"] is False and row["unmasked"] is True
    for col, p in sorted(per.items()):
        print(f"{col:<40} {p['statements']:>6} statements  {p['first']} .. {p['last']}  "
              f"clauses={','.join(sorted(p['clauses']))}  returned unmasked {p['unmasked']}x"
              + (f" ({p['raw']}x in sessions that see raw values)" if p["raw"] else ""))
    print(f"({len(per)} columns)", file=sys.stderr)
    return 0
