"""`rowgate audit search` and `rowgate audit export` over records the proxy wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from auditutil import audit_proxy, wait_for, write_cli_config
from proxyutil import UpstreamDB


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rowgate.cli", *args, "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)


def _json(out: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_search_and_export(upstream: UpstreamDB, tmp: Path, direct: psycopg.Connection) -> None:
    direct.execute("DROP TABLE IF EXISTS cli_people")
    direct.execute("CREATE TABLE cli_people (id int, email text, phone text)")
    p = audit_proxy(upstream, tmp)
    try:
        with psycopg.connect(p.dsn("alice"), autocommit=True) as conn:
            conn.execute("SELECT email FROM cli_people WHERE id = 1")
            conn.execute("SELECT phone FROM cli_people")
        with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
            conn.execute("INSERT INTO cli_people VALUES (1, 'x@y.z', '+49 1')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE cli_people SET phone = NULL")
        wait_for(tmp, lambda rs: len(rs) >= 4, types=("completion",))
    finally:
        p.stop()
    cfg = write_cli_config(tmp)

    alice = _json(_cli(cfg, "audit", "search", "--identity", "alice", "--type", "statement", "--json"))
    assert {r["text"] for r in alice} == {"SELECT email FROM cli_people WHERE id = 1", "SELECT phone FROM cli_people"}
    by_column = _json(_cli(cfg, "audit", "search", "--column", "public.cli_people.email", "--json"))
    assert {r["identity"] for r in by_column} == {"alice"} and all(r["type"] == "statement" for r in by_column)
    by_db_column = _json(_cli(cfg, "audit", "search", "--column", "rowgate_test.public.cli_people.phone", "--json"))
    assert {r["identity"] for r in by_db_column} == {"alice", "bob"}  # bob's UPDATE writes it (set clause)
    by_table = _json(_cli(cfg, "audit", "search", "--table", "cli_people", "--identity", "bob", "--json"))
    assert {r["statements"][0]["command"] for r in by_table} == {"INSERT", "UPDATE"}  # type: ignore[index]
    denied = _json(_cli(cfg, "audit", "search", "--decision", "deny", "--json"))
    assert [r["text"] for r in denied] == ["UPDATE cli_people SET phone = NULL"]
    assert _json(_cli(cfg, "audit", "search", "--since", "2999-01-01", "--json")) == []
    recent = _json(_cli(cfg, "audit", "search", "--since", "1h", "--text", "x@y.z", "--json"))
    assert recent and all("x@y.z" in r["text"] for r in recent)
    human = _cli(cfg, "audit", "search", "--identity", "bob")
    assert human.returncode == 0 and "guardrail:update_without_where" in human.stdout

    exported = _json(_cli(cfg, "audit", "export", "--since", "1d"))
    assert len(exported) >= 10 and all({"seq", "ts", "hash", "prev_hash", "replica", "type"} <= r.keys()
                                       for r in exported)
    assert {"session_start", "session_end", "statement", "completion", "policy_change"} <= {
        str(r["type"]) for r in exported}
    assert _json(_cli(cfg, "audit", "export", "--since", "2999-01-01")) == []
    out = _cli(cfg, "audit", "search", "--since", "yesterday-ish")
    assert out.returncode == 2 and "not a time" in out.stderr
    direct.execute("DROP TABLE cli_people")
