"""The state store on both back ends: SQLite (default) and PostgreSQL (``state:`` URL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from proxyutil import UpstreamDB

from rowgate.errors import ConfigError
from rowgate.statestore import Database, open_database, open_state

STATE_DB = "rowgate_state_test"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp: Path, upstream: UpstreamDB) -> Iterator[Database]:
    if request.param == "sqlite":
        d = open_database(None, tmp / "state.db")
    else:
        with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {STATE_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {STATE_DB}")
        d = open_database(upstream.dsn(STATE_DB), tmp / "unused.db")
    yield d
    d.close()


def test_roundtrip_transactions_and_placeholders(db: Database) -> None:
    db.execute(f"CREATE TABLE t (a TEXT PRIMARY KEY, b {db.blob}, c {db.real})")
    assert db.execute("INSERT INTO t VALUES (?, ?, ?)", ("50%?", b"\0\1", 1.5)) == 1
    db.executemany("INSERT INTO t VALUES (?, ?, ?)", [("m1", b"", 1), ("m2", None, None)])
    with db.transaction():
        db.execute("INSERT INTO t VALUES (?, ?, ?)", ("y", b"x", 2))
        with db.transaction():  # nested: joins the outer one
            db.execute("INSERT INTO t VALUES (?, ?, ?)", ("y2", b"x", 2))
    with pytest.raises(ValueError), db.transaction():
        db.execute("INSERT INTO t VALUES (?, ?, ?)", ("rolled-back", b"", 0))
        raise ValueError
    rows = db.query("SELECT a, b, c FROM t WHERE a LIKE '%' AND a <> '?' ORDER BY a")
    assert [r[0] for r in rows] == ["50%?", "m1", "m2", "y", "y2"]
    assert bytes(rows[0][1]) == b"\0\1" and rows[0][2] == 1.5


def test_threads_share_one_connection(db: Database) -> None:
    db.execute("CREATE TABLE n (i INTEGER)")

    def work(k: int) -> None:
        for i in range(50):
            with db.transaction():
                db.execute("INSERT INTO n VALUES (?)", (k * 1000 + i,))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.query("SELECT count(*) FROM n") == [(200,)]


def test_open_state_needs_a_location(tmp: Path) -> None:
    with pytest.raises(ConfigError, match="no state store") as e:
        open_state(None, None)
    assert e.value.hint and "data_dir" in e.value.hint
    assert open_state(None, tmp).where == str(tmp / "state.db")
    with pytest.raises(ConfigError, match="unsupported URL"):
        open_state("mysql://x", tmp)
    with pytest.raises(ConfigError, match="cannot connect") as e2:
        open_state("postgresql://u:sekret@127.0.0.1:1/x", tmp)
    assert "sekret" not in e2.value.message


def test_postgresql_store_reconnects(upstream: UpstreamDB, tmp: Path) -> None:
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {STATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {STATE_DB}")
    db = open_database(upstream.dsn(STATE_DB), tmp / "unused.db")
    assert db.query("SELECT 1") == [(1,)]
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (STATE_DB,))
    assert db.query("SELECT 2") == [(2,)]
    db.close()
