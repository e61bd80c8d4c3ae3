"""The hook point later stages attach to: they see statements before the upstream
does and results before the client does; a failing stage denies."""

from __future__ import annotations

import psycopg
import pytest
from proxyutil import start_proxy

from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.framing import Frame
from rowgate.proxy.hooks import Action, Pipeline, SessionInfo


class Recorder:
    """Sees every Query and Parse; answers one query itself; upper-cases text results."""

    frontend_types = frozenset({ord("Q"), ord("P")})
    backend_types = frozenset({ord("D")})

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        msg = fe.decode_frontend(message.type, message.payload)
        assert isinstance(msg, fe.Query | fe.Parse)
        assert session.principal is not None
        self.seen.append((session.principal.name, msg.sql))
        if isinstance(msg, fe.Query) and "forbidden_marker" in msg.sql:
            # replaced by a statement that fails in the upstream, in its place
            return Action(to_upstream=fe.Query("SELECT 1/0 AS refused_by_the_test_stage").encode())
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        row = be.decode_backend(message.type, message.payload)
        assert isinstance(row, be.DataRow)
        return be.DataRow(tuple(v.upper() if v is not None else None for v in row.values)).encode()


class Broken:
    frontend_types = frozenset({ord("Q")})
    backend_types: frozenset[int] = frozenset()

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        raise RuntimeError("stage bug")

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        return None


@pytest.fixture
def recorder(upstream, tmp):
    rec = Recorder()
    p = start_proxy(upstream, tmp, pipeline=Pipeline([rec]))
    yield p, rec
    p.stop()


def test_stage_sees_statements_with_identity(recorder):
    p, rec = recorder
    with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
        conn.execute("SELECT 'a simple one'")
        conn.execute("SELECT %s::text", ["extended"])
    sqls = [sql for who, sql in rec.seen if who == "bob"]
    assert "SELECT 'a simple one'" in sqls
    assert any("$1" in s for s in sqls)


def test_stage_rewrites_results(recorder):
    p, _ = recorder
    with psycopg.connect(p.dsn("alice")) as conn:
        assert conn.execute("SELECT 'quiet', 'x'::text").fetchone() == ("QUIET", "X")


def test_stage_can_replace_a_statement(recorder, direct):
    p, _ = recorder
    direct.execute("CREATE TABLE IF NOT EXISTS hook_target (v int)")
    direct.execute("TRUNCATE hook_target")
    with psycopg.connect(p.dsn("alice"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("INSERT INTO hook_target VALUES (1) -- forbidden_marker")
        assert conn.execute("SELECT 'after'").fetchone() == ("AFTER",)
    assert direct.execute("SELECT count(*) FROM hook_target").fetchone() == (0,)


def test_failing_stage_denies_and_nothing_runs(upstream, tmp, direct):
    direct.execute("CREATE TABLE IF NOT EXISTS hook_broken (v int)")
    direct.execute("TRUNCATE hook_broken")
    p = start_proxy(upstream, tmp, pipeline=Pipeline([Broken()]))
    try:
        with psycopg.connect(p.dsn("alice"), autocommit=True) as conn:
            with pytest.raises(psycopg.Error, match="could not check a statement") as exc:
                conn.execute("INSERT INTO hook_broken VALUES (1)")
            assert exc.value.sqlstate == "XX000"
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        assert direct.execute("SELECT count(*) FROM hook_broken").fetchone() == (0,)
    finally:
        p.stop()
