"""Every statement that goes through the proxy is in the audit log, written before it was
forwarded: with the right identity, decision and row count, for simple and extended
protocol clients; and a statement the audit log cannot record never reaches PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from auditutil import audit_proxy, completion_of, records, wait_for, write_cli_config
from proxyutil import RunningProxy, UpstreamDB

from rowgate.audit import journal
from rowgate.audit.signing import load_private_key
from rowgate.audit.store import open_store
from rowgate.audit.verify import verify_all

LAG = {"max_import_lag": "800ms"}


def _eventually(run: Callable[[], object], timeout: float = 10.0) -> None:
    """Retry a statement refused while the audit store catches up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run()
            return
        except psycopg.errors.InsufficientPrivilege:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _until_refused(conn: psycopg.Connection, first: int, timeout: float = 30.0) -> tuple[list[int], int]:
    """INSERT rows first, first + 1, ... until the proxy refuses one: (the ids that ran, the refused id).
    The store is unavailable: statements go on (journaled) until max_import_lag has passed."""
    ran, n = [], first
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute(f"INSERT INTO audit_t VALUES ({n}, 'x')")
        except psycopg.errors.InsufficientPrivilege as e:
            assert "audit log unavailable" in str(e)
            return ran, n
        ran.append(n)
        n += 1
        assert time.monotonic() < deadline, "statements were never refused"
        time.sleep(0.2)


def _intact(tmp: Path, url: str | None = None) -> None:
    store = open_store(url, tmp)
    try:
        for report in verify_all(journal.root(tmp), store, load_private_key(tmp / "audit.key").public_key()):
            assert report.intact, (report.source, report.problem)
    finally:
        store.close()


@pytest.fixture
def table(direct: psycopg.Connection) -> Iterator[str]:
    direct.execute("DROP TABLE IF EXISTS audit_t")
    direct.execute("CREATE TABLE audit_t (id int PRIMARY KEY, email text)")
    yield "audit_t"
    direct.execute("DROP TABLE IF EXISTS audit_t")


@pytest.fixture
def aproxy(upstream: UpstreamDB, tmp: Path) -> Iterator[RunningProxy]:
    p = audit_proxy(upstream, tmp)
    yield p
    p.stop()


def _statement(tmp: Path, text: str, message: str = "query", **filters: object) -> dict[str, object]:
    def match(r: dict[str, object]) -> bool:
        return r.get("text") == text and r.get("message") == message

    found = wait_for(tmp, lambda rs: any(match(r) for r in rs), types=("statement",), **filters)
    matches = [r for r in found if match(r)]
    assert matches, f"no statement record for {text!r}"
    return matches[-1]


def test_every_statement_is_recorded(aproxy: RunningProxy, tmp: Path, table: str, direct: psycopg.Connection) -> None:
    # simple protocol (psycopg's client-side binding cursor sends Query messages)
    with psycopg.connect(aproxy.dsn("bob"), autocommit=True, application_name="loader") as conn:
        cur = psycopg.ClientCursor(conn)
        for i in range(3):
            cur.execute(f"INSERT INTO audit_t VALUES ({i}, 'u{i}@example.com')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="delete_without_where"):
            cur.execute("DELETE FROM audit_t")
    # extended protocol: psycopg binds server-side
    with psycopg.connect(aproxy.dsn("alice"), autocommit=True) as conn:
        assert conn.execute("SELECT id, email FROM audit_t WHERE id >= %s", (1,)).fetchall() == [
            (1, "u1@example.com"), (2, "u2@example.com")]

    # asyncpg: a named prepared statement executed twice
    async def prepared() -> None:
        conn = await asyncpg.connect(aproxy.dsn("agent"))
        try:
            stmt = await conn.prepare("SELECT email FROM audit_t WHERE id < $1")
            assert len(await stmt.fetch(1)) == 1
            assert len(await stmt.fetch(5)) == 3
        finally:
            await conn.close()

    asyncio.run(prepared())
    assert direct.execute("SELECT count(*) FROM audit_t").fetchone() == (3,)  # the DELETE never ran

    for i in range(3):
        r = _statement(tmp, f"INSERT INTO audit_t VALUES ({i}, 'u{i}@example.com')")
        assert r["identity"] == "bob" and r["groups"] == ["engineers"] and r["message"] == "query"
        assert r["application_name"] == "loader"
        assert r["decision"]["action"] == "allow" and r["decision"]["rule"] == "everyone"  # type: ignore[index]
        assert r["statements"][0]["tables_written"] == ["public.audit_t"]  # type: ignore[index]
        done = completion_of(tmp, r)
        assert done["tags"] == ["INSERT 0 1"] and done["rows"] == 1 and done["error"] is None

    refused = _statement(tmp, "DELETE FROM audit_t")
    assert refused["decision"]["action"] == "deny"  # type: ignore[index]
    assert refused["decision"]["rule"] == "guardrail:delete_without_where"  # type: ignore[index]
    assert completion_of(tmp, refused)["error"] == "42501"

    # judged at Parse; the Execute has its own record
    sel = _statement(tmp, "SELECT id, email FROM audit_t WHERE id >= $1", "parse", identity="alice")
    executes = wait_for(tmp, lambda rs: any(r["message"] == "execute" for r in rs), identity="alice",
                        types=("statement",))
    ex = [r for r in executes if r["message"] == "execute"][-1]
    assert ex["text"] == sel["text"] and ex["judged_by"] == sel["seq"]
    assert len(ex["parameters"]) == 1 and ex["parameters"][0]["length"] >= 1
    assert ex["statements"][0]["columns"]["select"] == ["public.audit_t.email", "public.audit_t.id"]
    assert completion_of(tmp, ex)["rows"] == 2

    agent = [r for r in wait_for(tmp, lambda rs: len([r for r in rs if r["message"] == "execute"]) >= 2,
                                 identity="agent", types=("statement",)) if r["message"] == "execute"]
    assert len(agent) == 2 and all(r["text"] == "SELECT email FROM audit_t WHERE id < $1" for r in agent)
    assert [completion_of(tmp, r)["rows"] for r in agent] == [1, 3]
    assert all(r["parameters"][0]["format"] == "binary" for r in agent)  # values themselves are not kept

    kinds = {r["type"] for r in records(tmp)}
    assert {"policy_change", "session_start", "statement", "completion"} <= kinds


def test_sessions_and_refused_logins(aproxy: RunningProxy, tmp: Path) -> None:
    with psycopg.connect(aproxy.dsn("alice"), autocommit=True) as conn:
        conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(aproxy.dsn("alice", token="wrong"))
    ends = wait_for(tmp, lambda rs: len(rs) >= 1, types=("session_end",))
    assert ends and ends[0]["identity"] == "alice" and ends[0]["statements"] >= 1
    starts = records(tmp, types=("session_start",))
    assert starts[0]["client"].startswith("127.0.0.1:") and starts[0]["tls"] is False
    refused = wait_for(tmp, lambda rs: len(rs) >= 1, types=("login_refused",))
    assert refused[0]["identity"] == "alice"


def test_locked_store_refuses_and_nothing_runs(upstream: UpstreamDB, tmp: Path, table: str,
                                               direct: psycopg.Connection) -> None:
    """The store locked by another writer: statements go on (journaled) for max_import_lag,
    then are refused and never reach the database, until the store catches up."""
    p = audit_proxy(upstream, tmp, audit=LAG)
    try:
        with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
            conn.execute("INSERT INTO audit_t VALUES (1, 'a')")
            locker = sqlite3.connect(tmp / "audit.db", isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")  # another writer holds the store: imports fail
            try:
                ran, refused = _until_refused(conn, 2)
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            _eventually(lambda: conn.execute("INSERT INTO audit_t VALUES (1000, 'd')"))  # the store is back
    finally:
        p.stop()
    assert [r[0] for r in direct.execute("SELECT id FROM audit_t ORDER BY id")] == [1, *ran, 1000]
    texts = {r["text"] for r in records(tmp, types=("statement",), identity="bob")}
    assert {f"INSERT INTO audit_t VALUES ({n}, 'x')" for n in ran} <= texts
    assert "INSERT INTO audit_t VALUES (1000, 'd')" in texts
    assert f"INSERT INTO audit_t VALUES ({refused}, 'x')" not in texts
    _intact(tmp)


def test_unwritable_journal_refuses(aproxy: RunningProxy, tmp: Path, table: str,
                                    direct: psycopg.Connection) -> None:
    """The journal file replaced by one that cannot take a write (a full device: the tests run
    as root, who may write read-only files): once the sync thread noticed (fsync_interval, 50ms
    here), every statement is refused."""
    with psycopg.connect(aproxy.dsn("bob"), autocommit=True) as conn:
        conn.execute("INSERT INTO audit_t VALUES (1, 'a')")
        (_, path), = journal.segments(journal.root(tmp) / aproxy.server.audit.writer.replica)  # type: ignore[union-attr]
        kept = path.with_suffix(".kept")
        path.rename(kept)
        path.symlink_to("/dev/full")
        try:
            ran, refused = _until_refused(conn, 2)
        finally:
            path.unlink()
            kept.rename(path)
        _eventually(lambda: conn.execute("INSERT INTO audit_t VALUES (1000, 'c')"))
    assert [r[0] for r in direct.execute("SELECT id FROM audit_t ORDER BY id")] == [1, *ran, 1000]
    texts = [r["text"] for r in wait_for(tmp, lambda rs: len(rs) >= 2 + len(ran), types=("statement",),
                                         identity="bob")]
    assert f"INSERT INTO audit_t VALUES ({refused}, 'x')" not in texts
    aproxy.stop()
    _intact(tmp)


def test_fail_open_database_forwards(upstream: UpstreamDB, tmp: Path, table: str, direct: psycopg.Connection) -> None:
    p = audit_proxy(upstream, tmp, audit={"databases": {"app": {"fail_closed": False}}, **LAG})
    try:
        with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
            locker = sqlite3.connect(tmp / "audit.db", isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                conn.execute("INSERT INTO audit_t VALUES (6, 'x')")
                time.sleep(1.0)
                conn.execute("INSERT INTO audit_t VALUES (7, 'x')")  # the store lags: forwarded, still journaled
            finally:
                locker.execute("ROLLBACK")
                locker.close()
    finally:
        p.stop()
    assert direct.execute("SELECT count(*) FROM audit_t WHERE id IN (6, 7)").fetchone() == (2,)
    assert "INSERT INTO audit_t VALUES (7, 'x')" in [r["text"] for r in records(tmp, types=("statement",))]


def test_postgres_store_lost_refuses(upstream: UpstreamDB, tmp: Path, table: str, direct: psycopg.Connection) -> None:
    direct.execute("DROP DATABASE IF EXISTS rowgate_audit_store WITH (FORCE)")
    direct.execute("CREATE DATABASE rowgate_audit_store")
    url = upstream.dsn("rowgate_audit_store")
    p = audit_proxy(upstream, tmp, audit={"url": url, **LAG})
    try:
        with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
            conn.execute("INSERT INTO audit_t VALUES (1, 'a')")
            direct.execute("ALTER DATABASE rowgate_audit_store ALLOW_CONNECTIONS false")
            direct.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = 'rowgate_audit_store' AND pid <> pg_backend_pid()")
            try:
                ran, refused = _until_refused(conn, 2)
            finally:
                direct.execute("ALTER DATABASE rowgate_audit_store ALLOW_CONNECTIONS true")
            _eventually(lambda: conn.execute("INSERT INTO audit_t VALUES (1000, 'd')"))  # reconnected, caught up
    finally:
        p.stop()
    assert [r[0] for r in direct.execute("SELECT id FROM audit_t ORDER BY id")] == [1, *ran, 1000]
    with psycopg.connect(url) as audit_db:
        bodies = [json.loads(b) for (b,) in audit_db.execute("SELECT body FROM audit_records ORDER BY seq")]
    assert [b["text"] for b in bodies if b["type"] == "statement" and b["text"].startswith("INSERT")] == [
        "INSERT INTO audit_t VALUES (1, 'a')", *(f"INSERT INTO audit_t VALUES ({n}, 'x')" for n in ran),
        "INSERT INTO audit_t VALUES (1000, 'd')"]
    assert refused not in ran
    cfg = write_cli_config(tmp, audit={"url": url, "signing_key_file": str(tmp / "audit.key")})
    out = subprocess.run([sys.executable, "-m", "rowgate.cli", "audit", "verify", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "journal: intact" in out.stdout and "store: intact" in out.stdout, (
        out.stdout + out.stderr)
