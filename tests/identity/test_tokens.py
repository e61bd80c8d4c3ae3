"""Token identities from the state store, end to end: created with the real CLI,
used by real clients (psql, psycopg, asyncpg; SCRAM), revoked and expired, and a
store that holds no token in clear."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest
from identutil import create_token, proxy_from, rowgate, write_config
from proxyutil import TOKENS, UpstreamDB, raw_login, tool
from test_statestore import STATE_DB

from rowgate.identity.tokenstore import TokenStore
from rowgate.pgwire import backend as be
from rowgate.statestore import open_database


def _error(messages: list[object]) -> dict[str, str]:
    """The fields of the error a raw login ended with (C: SQLSTATE, M: message, ...)."""
    err = messages[-1]
    assert isinstance(err, be.ErrorResponse), messages
    return dict(err.fields)


def test_cli_token_logs_in_with_psql_psycopg_and_asyncpg(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp)
    doc = create_token(cfg, "etl-bot", "--kind", "agent", "-g", "agents", "-g", "etl", "--on-behalf-of", "alice",
                       "--attr", "team=data", "--expires", "30d")
    token = doc["token"]
    assert len(token) >= 40 and doc["status"] == "active" and doc["groups"] == ["agents", "etl"]
    p = proxy_from(cfg)
    try:
        dsn = p.dsn("etl-bot", token=token)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("rowgate:etl-bot",)
            (session,) = p.server.sessions.values()
            principal = session.info.principal
            assert principal is not None and principal.kind == "agent"
            assert principal.groups == ("agents", "etl") and dict(principal.attributes) == {"team": "data"}
            assert principal.on_behalf_of == "alice"
            assert session.login is not None and session.login.method == "scram"
        out = subprocess.run([tool("psql"), dsn, "-XAtc", "SELECT 40 + 2"], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "42", out.stderr

        async def via_asyncpg() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return int(await conn.fetchval("SELECT 7"))
            finally:
                await conn.close()

        assert asyncio.run(via_asyncpg()) == 7
        # config identities keep working next to store tokens
        with psycopg.connect(p.dsn("alice")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(p.dsn("etl-bot", token=token[:-1] + ("x" if token[-1] != "x" else "y")))
    finally:
        p.stop()
    # the store keeps verifiers only: no token in clear anywhere in its files
    for f in (tmp / "data").glob("state.db*"):
        assert token.encode() not in f.read_bytes(), f
    listed = rowgate(cfg, "token", "list", "--json").stdout
    assert token not in listed
    names = {r["name"]: r for r in json.loads(listed)}
    assert names["etl-bot"]["source"] == "store" and names["alice"]["source"] == "config"


def test_revoked_and_expired_tokens_are_refused(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp)
    revoked = create_token(cfg, "gone")["token"]
    rowgate(cfg, "token", "revoke", "gone")
    db = open_database(None, tmp / "data" / "state.db")
    now = time.time()
    expired, _ = TokenStore(db).create("old", kind="service", groups=(), attributes={}, on_behalf_of=None,
                                       expires=now - 1, now=now - 100)
    db.close()
    p = proxy_from(cfg)
    try:
        err = _error(raw_login(p.port, "gone", revoked))
        assert err["C"] == "28000" and "revoked" in err["M"]
        err = _error(raw_login(p.port, "old", expired))
        assert err["C"] == "28000" and "expired" in err["M"]
        # without the token nobody learns the token's state
        err = _error(raw_login(p.port, "gone", "not-the-token-at-all"))
        assert err["C"] == "28P01" and "revoked" not in err["M"]
    finally:
        p.stop()
    # a revoked name can be issued again; an active one cannot
    assert create_token(cfg, "gone")["status"] == "active"
    again = rowgate(cfg, "token", "create", "gone", check=False)
    assert again.returncode == 2 and "already has an active token" in again.stderr


def test_live_session_of_a_revoked_token_is_closed(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp)
    token = create_token(cfg, "temp", "-g", "analysts")["token"]
    p = proxy_from(cfg)
    try:
        with psycopg.connect(p.dsn("temp", token=token), autocommit=True) as conn, \
                psycopg.connect(p.dsn("alice"), autocommit=True) as other:
            conn.execute("SELECT 1")
            rowgate(cfg, "token", "revoke", "temp")
            revoked_at = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as e:
                while time.monotonic() - revoked_at < 10:
                    conn.execute("SELECT 1")
                    time.sleep(0.1)
            assert time.monotonic() - revoked_at < 5
            assert "revoked" in str(e.value)
            assert other.execute("SELECT 2").fetchone() == (2,)  # other identities are untouched
        err = _error(raw_login(p.port, "temp", token))
        assert "revoked" in err["M"]
    finally:
        p.stop()


def test_a_name_in_config_and_store_is_an_error(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp)
    out = rowgate(cfg, "token", "create", "alice", check=False)
    assert out.returncode == 2 and "already defined in the config file" in out.stderr
    db = open_database(None, tmp / "data" / "state.db")
    TokenStore(db).create("bob", kind="human", groups=(), attributes={}, on_behalf_of=None, expires=None,
                          now=time.time())
    db.close()
    p = proxy_from(cfg)
    try:
        err = _error(raw_login(p.port, "bob", TOKENS["bob"]))
        assert err["C"] == "28000" and "both in the config file and in the token store" in err["M"]
    finally:
        p.stop()


def test_cli_needs_a_state_store(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp, data_dir=None)
    out = rowgate(cfg, "token", "list", check=False)
    assert out.returncode == 2 and "no state store" in out.stderr and "data_dir" in out.stderr


def _salt(messages: list[object]) -> bytes:
    for m in messages:
        if isinstance(m, be.Authentication) and m.code == be.AUTH_SASL_CONTINUE:
            attrs = dict(a.split("=", 1) for a in m.data.decode().split(","))
            return attrs["s"].encode()
    raise AssertionError(messages)


def test_salts_are_stable_across_restarts(upstream: UpstreamDB, tmp: Path) -> None:
    """An unknown name and a config name both get a salt derived from the stored key:
    a restart (or another replica) shows the same salts, so neither stands out."""
    cfg = write_config(upstream, tmp)
    salts = []
    for _ in range(2):
        p = proxy_from(cfg)
        try:
            salts.append((_salt(raw_login(p.port, "nobody", "x" * 20)), _salt(raw_login(p.port, "alice", "y" * 20))))
        finally:
            p.stop()
    assert salts[0] == salts[1]
    assert len(salts[0][0]) == len(salts[0][1])


def test_token_store_on_postgresql(upstream: UpstreamDB, tmp: Path) -> None:
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {STATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {STATE_DB}")
    cfg = write_config(upstream, tmp, data_dir=None, state=upstream.dsn(STATE_DB))
    token = create_token(cfg, "pg-bot", "--kind", "service")["token"]
    p = proxy_from(cfg)
    try:
        with psycopg.connect(p.dsn("pg-bot", token=token), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            rowgate(cfg, "token", "revoke", "pg-bot")
            deadline = time.monotonic() + 5
            with pytest.raises(psycopg.OperationalError, match="revoked"):
                while time.monotonic() < deadline:
                    conn.execute("SELECT 1")
                    time.sleep(0.1)
    finally:
        p.stop()
    with psycopg.connect(upstream.dsn(STATE_DB)) as conn:
        dump = conn.execute("SELECT string_agg(t::text, ' ') FROM rowgate_tokens t").fetchone()
    assert dump is not None and token not in str(dump[0])


def test_session_ends_when_its_token_expires(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp)
    db = open_database(None, tmp / "data" / "state.db")
    now = time.time()
    token, _ = TokenStore(db).create("short", kind="service", groups=(), attributes={}, on_behalf_of=None,
                                     expires=now + 2, now=now)
    db.close()
    p = proxy_from(cfg)
    try:
        with psycopg.connect(p.dsn("short", token=token), autocommit=True) as conn:
            with pytest.raises(psycopg.OperationalError, match='token of identity "short" expired'):
                while time.time() < now + 10:
                    conn.execute("SELECT 1")
                    time.sleep(0.1)
            assert time.time() < now + 2 + 2.5
    finally:
        p.stop()
