"""Second review of the statement gate: bypasses found by driving the proxy with raw
protocol messages as the ordinary identity "bob" under the default policy (no rules,
every guardrail on). Each test asserts, through a direct connection, that nothing the
gate refuses reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from proxyutil import RunningProxy, UpstreamDB, start_proxy
from test_security_review import Conn, error_of, scram_until_final

from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe

SCHEMA = "rg_review"
SETUP = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.victim (id int);
INSERT INTO {SCHEMA}.victim SELECT generate_series(1, 3);
CREATE FUNCTION {SCHEMA}.lower(text) RETURNS text LANGUAGE plpgsql
    AS $f$BEGIN DELETE FROM {SCHEMA}.victim; RETURN $1; END$f$;
"""


@pytest.fixture
def gw(upstream: UpstreamDB, tmp: Path, direct: psycopg.Connection) -> Iterator[RunningProxy]:
    direct.execute(SETUP)
    p = start_proxy(upstream, tmp, policy={"rules": []})
    try:
        yield p
    finally:
        p.stop()
        direct.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def bob(p: RunningProxy) -> Conn:
    c, final = scram_until_final(p.port, identity="bob")
    c.send(final)
    assert isinstance(c.until_ready()[-1], be.ReadyForQuery)
    return c


def until_z(c: Conn) -> list[be.BackendMessage]:
    """Messages up to ReadyForQuery (Conn.until_ready stops at an error)."""
    out: list[be.BackendMessage] = []
    while (msg := c.next()) is not None:
        out.append(msg)
        if isinstance(msg, be.ReadyForQuery):
            break
    return out


def victims(direct: psycopg.Connection) -> int:
    row = direct.execute(f"SELECT count(*) FROM {SCHEMA}.victim").fetchone()
    assert row is not None
    return int(row[0])


def victim_exists(direct: psycopg.Connection) -> bool:
    row = direct.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{SCHEMA}.victim"]).fetchone()
    assert row is not None
    return bool(row[0])


def extended(sql: str, name: str = "") -> bytes:
    return fe.Parse(name, sql).encode() + bind_execute(name)


def bind_execute(name: str = "") -> bytes:
    return fe.Bind("", name, (), (), ()).encode() + fe.Execute("", 0).encode() + fe.Sync().encode()


# --- 1. lexing settings changed in a pipeline ----------------------------------------------
#
# The gate refuses statements while the session reports standard_conforming_strings=off
# or an unsafe client_encoding, but learns the new value only from the ParameterStatus
# the upstream sends after the SET ran. A statement pipelined behind the SET (same TCP
# write) is judged with the old value and lexed by PostgreSQL with the new one: with
# backslash escapes on, 'a\' , ' ends later than rowgate thinks, and the DROP hidden in
# the "second string" runs. Fix: a SET (or set_config) of standard_conforming_strings or
# client_encoding to a value rowgate cannot lex like the server is refused.

SMUGGLED_DROP = f"SELECT 'a\\' , ' ; DROP TABLE {SCHEMA}.victim; -- '"


@pytest.mark.parametrize(
    "setting",
    [
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO 'off'",
        "SET SESSION standard_conforming_strings = false",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false)",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'SJIS'",
        "SELECT set_config('client_encoding', 'SJIS', false)",
    ],
)
def test_lexing_setting_cannot_be_changed_under_a_pipelined_statement(
    gw: RunningProxy, direct: psycopg.Connection, setting: str
) -> None:
    c = bob(gw)
    try:
        c.send(fe.Query(setting).encode() + fe.Query(SMUGGLED_DROP).encode())
        first = until_z(c)
        second = until_z(c)
    finally:
        c.close()
    assert victim_exists(direct), (first, second)
    assert error_of(first).sqlstate == "42501", first


def test_lexing_setting_cannot_be_changed_in_an_extended_pipeline(gw: RunningProxy, direct: psycopg.Connection) -> None:
    c = bob(gw)
    try:
        c.send(extended("SET standard_conforming_strings = off") + extended(SMUGGLED_DROP))
        first = until_z(c)
        second = until_z(c)
    finally:
        c.close()
    assert victim_exists(direct), (first, second)
    assert error_of(first).sqlstate == "42501", first


def test_safe_lexing_settings_still_pass(gw: RunningProxy) -> None:
    c = bob(gw)
    try:
        for sql in ("SET standard_conforming_strings = on", "SET client_encoding = 'UTF8'", "SET NAMES 'LATIN1'",
                    "RESET client_encoding", "SELECT set_config('application_name', 'x', false)"):
            c.send(fe.Query(sql).encode())
            answer = until_z(c)
            assert not any(isinstance(m, be.ErrorResponse) for m in answer), (sql, answer)
    finally:
        c.close()


# --- 2. prepared statements re-analysed by PostgreSQL after SET search_path ----------------
#
# PostgreSQL re-analyses a cached statement when the search_path differs from the one it
# was prepared under (plancache.c, RevalidateCachedQuery). The gate judged the statement
# once, at Parse or PREPARE, under the old path; after SET search_path = evil, pg_catalog
# an unqualified lower() in it resolves to evil.lower, a function the gate would refuse
# (unknown_effect) in any new statement. Fix: remember the search path a statement was
# judged under, and judge it again at Bind / EXECUTE when the session's path changed.


def test_protocol_statement_is_judged_again_after_search_path_change(
    gw: RunningProxy, direct: psycopg.Connection
) -> None:
    c = bob(gw)
    try:
        c.send(fe.Parse("s", "SELECT lower('X')").encode() + fe.Sync().encode())
        assert not any(isinstance(m, be.ErrorResponse) for m in until_z(c))
        c.send(fe.Query(f"SET search_path = {SCHEMA}, pg_catalog").encode())
        assert not any(isinstance(m, be.ErrorResponse) for m in until_z(c))
        c.send(bind_execute("s"))
        answer = until_z(c)
    finally:
        c.close()
    assert victims(direct) == 3, answer
    assert error_of(answer).sqlstate == "42501", answer


def test_sql_prepare_is_judged_again_after_search_path_change(gw: RunningProxy, direct: psycopg.Connection) -> None:
    c = bob(gw)
    try:
        c.send(fe.Query("PREPARE p AS SELECT lower('X')").encode())
        assert not any(isinstance(m, be.ErrorResponse) for m in until_z(c))
        c.send(fe.Query(f"SET search_path = {SCHEMA}, pg_catalog").encode())
        assert not any(isinstance(m, be.ErrorResponse) for m in until_z(c))
        c.send(fe.Query("EXECUTE p").encode())
        answer = until_z(c)
        c.send(fe.Query("RESET search_path").encode())  # the path only ever widens in the gate
        until_z(c)
        c.send(bind_execute("p"))  # a SQL-level prepared statement bound by the protocol
        answer2 = until_z(c)
    finally:
        c.close()
    assert victims(direct) == 3, (answer, answer2)
    assert error_of(answer).sqlstate == "42501", answer
    assert error_of(answer2).sqlstate == "42501", answer2


def test_prepared_statement_still_runs_when_the_path_does_not_matter(gw: RunningProxy) -> None:
    c = bob(gw)
    try:
        c.send(fe.Parse("s", "SELECT 1 + 1").encode() + fe.Sync().encode())
        until_z(c)
        c.send(fe.Query(f"PREPARE p AS SELECT 2; SET search_path = {SCHEMA}, public").encode())
        until_z(c)
        c.send(bind_execute("s"))
        a = until_z(c)
        c.send(fe.Query("EXECUTE p").encode())
        b = until_z(c)
    finally:
        c.close()
    assert [m.values for m in a if isinstance(m, be.DataRow)] == [(b"2",)], a
    assert [m.values for m in b if isinstance(m, be.DataRow)] == [(b"2",)], b
