"""Identity → upstream mapping: who may reach which upstream, as which database role,
and what the DBA sees in application_name."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from proxyutil import TOKENS, UpstreamDB, raw_login, start_proxy

from rowgate.errors import ConfigError
from rowgate.pgwire import backend as be


@pytest.fixture(scope="module", autouse=True)
def roles(upstream: UpstreamDB) -> None:
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        for role in ("rg_reader", "rg_agent"):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} LOGIN")  # the test upstream trusts local logins


def test_groups_reach_upstreams_as_their_roles(upstream: UpstreamDB, tmp: Path) -> None:
    app = {
        "host": upstream.host, "port": upstream.port, "database": upstream.database, "user": upstream.user,
        "access": [{"groups": ["analysts"], "user": "rg_reader"}, {"identities": ["bob"]}],
    }
    other = {**app, "access": [{"groups": ["agents"], "user": "rg_agent"}]}
    p = start_proxy(upstream, tmp, upstreams={"app": app, "other": other},
                    auth={"application_name": "rowgate:{identity}:{application_name}"})
    try:
        with psycopg.connect(p.dsn("alice", application_name="report"), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("rg_reader",)
            assert conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                                ).fetchone() == ("rowgate:alice:report",)
            assert conn.info.parameter_status("application_name") == "report"  # the client sees its own
        with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (upstream.user,)
        with psycopg.connect(p.dsn("agent", database="other"), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("rg_agent",)
        for identity, database in (("agent", "app"), ("alice", "other"), ("bob", "other")):
            out = raw_login(p.port, identity, TOKENS[identity], database=database)
            err = out[-1]
            assert isinstance(err, be.ErrorResponse)
            assert err.sqlstate == "28000"
            assert err.message == f'identity "{identity}" may not connect to database "{database}"'
    finally:
        p.stop()


def test_no_access_key_lets_everyone_in(upstream: UpstreamDB, tmp: Path) -> None:
    p = start_proxy(upstream, tmp)
    try:
        for identity in TOKENS:
            with psycopg.connect(p.dsn(identity), autocommit=True) as conn:
                assert conn.execute("SELECT current_setting('application_name')").fetchone() == (f"rowgate:{identity}",)
    finally:
        p.stop()


def test_bad_access_and_template_config(upstream: UpstreamDB, tmp: Path) -> None:
    up = {"host": upstream.host, "port": upstream.port, "database": upstream.database, "user": upstream.user}
    with pytest.raises(ConfigError, match="needs 'identities' or 'groups'"):
        start_proxy(upstream, tmp, upstreams={"app": {**up, "access": [{"user": "x"}]}})
    with pytest.raises(ConfigError, match="unknown field"):
        start_proxy(upstream, tmp, auth={"application_name": "rowgate:{password}"})
