"""The request/answer pairing against real drivers through the proxy: every statement a
client runs completes once, with its own command tag, in simple, extended, pipelined,
COPY and error-skipping traffic."""

from __future__ import annotations

import asyncio
import io

import asyncpg
import psycopg
import pytest
from proxyutil import PERMISSIVE_POLICY, start_proxy

from rowgate.pgwire.exchange import Request
from rowgate.pgwire.framing import Frame
from rowgate.policy.model import Policy
from rowgate.proxy.gate import StatementGate
from rowgate.proxy.hooks import Action, Pipeline, SessionInfo


class Completions:
    uses_exchange = True
    frontend_types = frozenset(b"QP")  # the first message of any session
    backend_types = frozenset(b"T")

    def __init__(self) -> None:
        self.done: list[tuple[str, str | None, str | None, str | None]] = []
        self.columns: list[tuple[str, ...]] = []

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        assert session.exchange is not None
        if "completions" not in session.stage_state:
            session.stage_state["completions"] = True
            session.exchange.on_done.append(self._record)
        return None

    def _record(self, req: Request) -> None:
        if req.kind in ("query", "execute"):
            self.done.append((req.kind, req.sql, req.tag, req.error))

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        assert session.exchange is not None
        req = session.exchange.current_server
        assert req is not None and req.columns is not None
        self.columns.append(tuple(c.name for c in req.columns))
        return None


@pytest.fixture
def tracked(upstream, tmp, direct):
    direct.execute("DROP TABLE IF EXISTS xch; CREATE TABLE xch (id int PRIMARY KEY, email text)")
    rec = Completions()
    gate = StatementGate(Policy.model_validate(PERMISSIVE_POLICY))
    p = start_proxy(upstream, tmp, pipeline=Pipeline([gate, rec]))
    yield p, rec
    p.stop()


def test_simple_and_extended_statements_complete_with_their_tags(tracked):
    p, rec = tracked
    with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
        conn.execute("INSERT INTO xch VALUES (1, 'a@x.org'), (2, 'b@x.org'); SELECT id FROM xch", prepare=False)
        conn.execute("UPDATE xch SET email = %s WHERE id = %s", ["c@x.org", 1])
        conn.execute("SELECT email, id FROM xch WHERE id = %s", [2], binary=True)
    tags = [(kind, tag) for kind, _sql, tag, _err in rec.done]
    assert ("query", "SELECT 2") in tags
    assert ("execute", "UPDATE 1") in tags
    assert ("execute", "SELECT 1") in tags
    assert ("id",) in rec.columns and ("email", "id") in rec.columns


def test_pipeline_with_an_error_skips_the_rest(tracked):
    p, rec = tracked
    with psycopg.connect(p.dsn("bob")) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero), conn.pipeline():
            conn.execute("INSERT INTO xch VALUES (10, 'p@x.org')")
            conn.execute("SELECT 1/(id - id) FROM xch")  # fails while executing, not at Bind
            conn.execute("INSERT INTO xch VALUES (11, 'q@x.org')")
        conn.rollback()
    outcome = [(sql.split()[0], tag, err) for kind, sql, tag, err in rec.done if kind == "execute" and sql]

    assert ("INSERT", "INSERT 0 1", None) in outcome
    assert ("SELECT", None, "22012") in outcome
    assert ("INSERT", None, "skipped") in outcome


def test_copy_in_and_out_complete(tracked):
    p, rec = tracked
    with psycopg.connect(p.dsn("bob"), autocommit=True) as conn:
        with conn.cursor().copy("COPY xch FROM STDIN") as copy:
            copy.write(b"20\tr@x.org\n21\ts@x.org\n")
        buf = io.BytesIO()
        with conn.cursor().copy("COPY xch TO STDOUT") as copy:
            for chunk in copy:
                buf.write(chunk)
    tags = [tag for _k, _s, tag, _e in rec.done]
    assert "COPY 2" in tags and any(t and t.startswith("COPY ") for t in tags[tags.index("COPY 2") + 1 :])


def test_asyncpg_prepared_executions(tracked):
    p, rec = tracked

    async def run() -> None:
        conn = await asyncpg.connect(p.dsn("bob"))
        try:
            await conn.executemany("INSERT INTO xch VALUES ($1, $2)", [(30, "t@x.org"), (31, "u@x.org")])
            stmt = await conn.prepare("SELECT email FROM xch WHERE id = $1")
            assert await stmt.fetch(30) == [("t@x.org",)]
            assert await stmt.fetch(31) == [("u@x.org",)]
        finally:
            await conn.close()

    asyncio.run(run())
    selects = [tag for kind, sql, tag, _e in rec.done if kind == "execute" and sql and sql.startswith("SELECT email")]
    assert selects == ["SELECT 1", "SELECT 1"]
    assert sum(1 for kind, sql, tag, _e in rec.done if tag == "INSERT 0 1") == 2
