"""Enforcement through the real proxy: refused statements never reach the database,
sessions stay usable, transactions and pipelines behave as PostgreSQL's own errors do."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import uuid

import asyncpg
import psycopg
import pytest
from proxyutil import TOKENS, raw_login, start_proxy, tool

from rowgate.pgwire import backend as be

POLICY = {
    "rules": [
        {"id": "agents-read-only", "match": {"groups": ["agents"], "statement_kinds": ["write", "ddl", "dcl"]},
         "action": "deny", "message": "agents are read-only"},
        {"id": "payments-deletes-need-approval", "match": {"commands": ["DELETE"], "tables": ["*.gate_payments"]},
         "action": "require_approval", "message": "deleting payments needs a second person"},
        {"id": "bob-may-truncate-scratch", "match": {"identities": ["bob"], "tables": ["public.gate_scratch"]},
         "action": "allow", "relax": ["truncate"]},
    ]
}


@pytest.fixture(scope="module")
def gated(upstream, tmp_path_factory):
    p = start_proxy(upstream, tmp_path_factory.mktemp("gate"), policy=POLICY)
    yield p
    p.stop()


@pytest.fixture
def table(direct):
    name = f"gate_{uuid.uuid4().hex[:8]}"
    direct.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
    direct.execute(f"INSERT INTO {name} SELECT g, 'v' || g FROM generate_series(1, 5) g")
    yield name
    direct.execute(f"DROP TABLE IF EXISTS {name}")


def count(direct, name: str) -> int:
    return direct.execute(f"SELECT count(*) FROM {name}").fetchone()[0]


def exists(direct, name: str) -> bool:
    return direct.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()[0]


def test_drop_table_refused_by_default_guardrail(gated, table, direct):
    with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
            conn.execute(f"DROP TABLE {table}")
        assert 'guardrail "drop"' in str(exc.value)
        assert exc.value.diag.sqlstate == "42501"
        assert exc.value.diag.message_hint
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session stays usable
    assert exists(direct, table)


def test_psql_shows_the_refusal(gated, table, direct):
    env = {**os.environ, "PGPASSWORD": TOKENS["bob"]}
    dsn = f"postgresql://bob@127.0.0.1:{gated.port}/app?sslmode=disable"
    out = subprocess.run(
        [tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", dsn, "-c", f"delete from {table}"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert out.returncode == 1
    assert 'ERROR:  rowgate: denied by guardrail "delete_without_where"' in out.stderr
    assert "HINT:" in out.stderr
    assert "rowgate_deny_" not in out.stderr and "CONTEXT" not in out.stderr
    assert count(direct, table) == 5


def test_multi_statement_message_is_refused_whole(gated, table, direct):
    with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            sql = f"INSERT INTO {table} VALUES (100, 'x'); TRUNCATE {table}; INSERT INTO {table} VALUES (101, 'y')"
            conn.execute(sql, prepare=False)
    assert count(direct, table) == 5


def test_refusal_inside_a_transaction_aborts_it(gated, table, direct):
    with psycopg.connect(gated.dsn("bob")) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (200, 'in tx')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"UPDATE {table} SET v = 'all'")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert count(direct, table) == 5
    assert direct.execute(f"SELECT count(*) FROM {table} WHERE v = 'all'").fetchone() == (0,)


def test_pipeline_after_a_refusal_behaves_like_after_an_error(gated, table, direct):
    with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.pipeline():
                conn.execute(f"INSERT INTO {table} VALUES (300, 'a')")
                conn.execute(f"DELETE FROM {table}")
                conn.execute(f"INSERT INTO {table} VALUES (301, 'b')")
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (5,)
        with conn.pipeline():  # the pipeline works again afterwards
            conn.execute(f"INSERT INTO {table} VALUES (302, 'c')")
            conn.execute(f"SELECT v FROM {table} WHERE id = %s", [302])
    assert count(direct, table) == 6


def test_asyncpg_prepared_statement_refused_and_connection_usable(gated, table, direct):
    async def main() -> None:
        conn = await asyncpg.connect(gated.dsn("bob"))
        try:
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.execute(f"UPDATE {table} SET v = $1", "x")
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.prepare(f"DELETE FROM {table} WHERE 1 = 1")
            stmt = await conn.prepare(f"SELECT v FROM {table} WHERE id = $1")
            assert await stmt.fetchval(1) == "v1"
        finally:
            await conn.close()

    asyncio.run(main())
    assert direct.execute(f"SELECT count(*) FROM {table} WHERE v = 'x'").fetchone() == (0,)


def test_sql_prepare_is_judged_by_its_body_and_execute_follows(gated, table, direct):
    with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"PREPARE wipe AS DELETE FROM {table}", prepare=False)
        conn.execute(f"PREPARE one(int) AS SELECT v FROM {table} WHERE id = $1", prepare=False)
        assert conn.execute("EXECUTE one(2)", prepare=False).fetchone() == ("v2",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="unknown_effect"):
            conn.execute("EXECUTE never_prepared_here", prepare=False)
    assert count(direct, table) == 5


def test_prepared_on_upstream_behind_rowgates_back_is_refused(gated, table, direct):
    """A Bind naming a statement rowgate never saw parsed must not run."""
    with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DO $$ BEGIN PERFORM 1; END $$", prepare=False)


def test_rule_denies_agents_writes_but_not_reads(gated, table, direct):
    with psycopg.connect(gated.dsn("agent"), autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (5,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match='rule "agents-read-only": agents are read-only'):
            conn.execute(f"INSERT INTO {table} VALUES (400, 'agent')")
    with psycopg.connect(gated.dsn("alice"), autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (401, 'alice')")
    assert count(direct, table) == 6


def test_require_approval_is_refused_until_approvals_exist(gated, direct):
    direct.execute("CREATE TABLE IF NOT EXISTS gate_payments (id int)")
    direct.execute("INSERT INTO gate_payments VALUES (1)")
    try:
        with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
                conn.execute("DELETE FROM gate_payments WHERE id = 1")
            assert "approval" in str(exc.value)
        assert direct.execute("SELECT count(*) FROM gate_payments").fetchone() == (1,)
    finally:
        direct.execute("DROP TABLE gate_payments")


def test_allow_rule_relaxes_a_guardrail_for_its_match_only(gated, direct):
    direct.execute("CREATE TABLE IF NOT EXISTS gate_scratch (id int)")
    direct.execute("INSERT INTO gate_scratch VALUES (1)")
    try:
        with psycopg.connect(gated.dsn("alice"), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("TRUNCATE gate_scratch")
        assert direct.execute("SELECT count(*) FROM gate_scratch").fetchone() == (1,)
        with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
            conn.execute("TRUNCATE gate_scratch")
        assert direct.execute("SELECT count(*) FROM gate_scratch").fetchone() == (0,)
    finally:
        direct.execute("DROP TABLE gate_scratch")


def test_search_path_change_cannot_dodge_a_table_rule(upstream, tmp, direct):
    direct.execute("CREATE SCHEMA IF NOT EXISTS gate_other")
    direct.execute("CREATE TABLE IF NOT EXISTS public.gate_secret (id int)")
    policy = {"rules": [{"id": "no-secret", "match": {"tables": ["public.gate_secret"]}, "action": "deny",
                         "message": "secret"}]}
    p = start_proxy(upstream, tmp, policy=policy)
    try:
        with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
            conn.execute("SET search_path = gate_other, public", prepare=False)
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-secret"):
                conn.execute("SELECT * FROM gate_secret")
    finally:
        p.stop()
        direct.execute("DROP TABLE public.gate_secret")
        direct.execute("DROP SCHEMA gate_other")


def test_observe_mode_lets_the_statement_run_and_logs_it(upstream, tmp, direct, caplog):
    direct.execute("CREATE TABLE IF NOT EXISTS gate_observed (id int)")
    direct.execute("INSERT INTO gate_observed VALUES (1)")
    p = start_proxy(upstream, tmp, policy={"mode": "observe", "rules": []})
    try:
        with caplog.at_level(logging.WARNING, logger="rowgate.policy"):
            with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
                conn.execute("DELETE FROM gate_observed")
        assert direct.execute("SELECT count(*) FROM gate_observed").fetchone() == (0,)
        assert any("would have been denied" in r.getMessage() for r in caplog.records)
    finally:
        p.stop()
        direct.execute("DROP TABLE gate_observed")


def test_fast_path_function_call_is_unknown_effect(gated, tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 100)
    env = {**os.environ, "PGPASSWORD": TOKENS["bob"]}
    dsn = f"postgresql://bob@127.0.0.1:{gated.port}/app?sslmode=disable"
    out = subprocess.run([tool("psql"), "-X", dsn, "-c", f"\\lo_import {src}"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode != 0
    assert "unknown_effect" in out.stderr


def test_unparseable_is_refused(gated):
    messages = raw_login(gated.port, "bob", TOKENS["bob"])
    assert isinstance(messages[-1], be.ReadyForQuery)
    with psycopg.connect(gated.dsn("bob"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="unparseable"):
            conn.execute("SELEC 1 FROM nowhere", prepare=False)


def test_rolled_back_search_path_cannot_dodge_a_table_rule(upstream, tmp, direct):
    direct.execute("CREATE SCHEMA IF NOT EXISTS gate_decoy")
    direct.execute("CREATE TABLE IF NOT EXISTS public.gate_vault (id int)")
    policy = {"rules": [{"id": "no-vault", "match": {"tables": ["public.gate_vault"]}, "action": "deny"}]}
    p = start_proxy(upstream, tmp, policy=policy)
    try:
        with psycopg.connect(p.dsn("bob")) as conn:
            conn.execute("SET search_path = gate_decoy", prepare=False)
            conn.rollback()  # PostgreSQL is back on public; rowgate must not think otherwise
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-vault"):
                conn.execute("SELECT * FROM gate_vault")
    finally:
        p.stop()
        direct.execute("DROP TABLE public.gate_vault")
        direct.execute("DROP SCHEMA gate_decoy")
