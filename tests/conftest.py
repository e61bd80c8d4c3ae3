from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from proxyutil import RunningProxy, UpstreamDB, start_proxy

from rowgate.embedded import EmbeddedPostgres

TEST_DB = "rowgate_test"

# roles that make the upstream ask rowgate for each password method
AUTH_ROLES = {"rg_md5": "md5", "rg_password": "password", "rg_scram": "scram-sha-256"}
AUTH_PASSWORD = "upstream-pw-9"


def _prepare(admin_dsn: str, embedded: bool) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEST_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEST_DB}")
        if embedded:
            for role, method in AUTH_ROLES.items():
                conn.execute(f"DROP ROLE IF EXISTS {role}")
                enc = "md5" if method == "md5" else "scram-sha-256"
                conn.execute(f"SET password_encryption = '{enc}'")
                conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{AUTH_PASSWORD}'")


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamDB]:
    dsn = os.environ.get("ROWGATE_TEST_PG_DSN")
    if dsn:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        db = UpstreamDB(
            host=str(info.get("host", "127.0.0.1")),
            port=int(info.get("port", 5432)),
            user=str(info.get("user", "postgres")),
            database=TEST_DB,
            embedded=False,
            password=str(info["password"]) if info.get("password") else None,
        )
        _prepare(dsn, embedded=False)
        yield db
        return
    hba = [f"host all {role} 127.0.0.1/32 {method}" for role, method in AUTH_ROLES.items()]
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("upstream"), hba=hba).start()
    try:
        _prepare(pg.dsn("postgres"), embedded=True)
        yield UpstreamDB("127.0.0.1", pg.port, pg.user, TEST_DB, embedded=True)
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def proxy(upstream: UpstreamDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """One proxy shared by tests that only need a working relay."""
    p = start_proxy(upstream, tmp_path_factory.mktemp("proxy"))
    yield p
    p.stop()


@pytest.fixture
def direct(upstream: UpstreamDB) -> Iterator[psycopg.Connection]:
    """A direct connection to the upstream, to check what really happened there."""
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
