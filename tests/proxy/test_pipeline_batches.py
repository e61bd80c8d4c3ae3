"""Result messages reach only the stages that asked for them (statically or with
``SessionInfo.watch``), and DataRows reach a stage that takes batches in runs, one call
per run read together, while other stages still get them one at a time."""

from __future__ import annotations

import psycopg
import pytest
from proxyutil import start_proxy

from rowgate.pgwire import backend as be
from rowgate.pgwire.framing import Batch, Frame
from rowgate.proxy.hooks import Action, Pipeline, SessionInfo

_D, _Z = ord("D"), ord("Z")


def _rows(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        end = pos + 1 + int.from_bytes(raw[pos + 1 : pos + 5], "big")
        out.append(raw[pos:end])
        pos = end
    assert pos == len(raw)
    return out


def _suffixed(row: bytes, suffix: bytes) -> bytes:
    msg = be.decode_backend(_D, row[5:])
    assert isinstance(msg, be.DataRow)
    return be.DataRow(tuple(None if v is None else v + suffix for v in msg.values)).encode()


class Batcher:
    """Watches rows of queries that mention watch_me, until their ReadyForQuery; appends '+b'."""

    takes_batches = True
    frontend_types = frozenset(b"Q")
    backend_types = frozenset(b"Z")

    def __init__(self) -> None:
        self.calls: list[int] = []  # rows per call

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        if b"watch_me" in message.payload:
            session.watch(self, frozenset(b"D"))
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        if message.type == _Z:
            session.watch(self, frozenset())
            return None
        assert message.type == _D and type(message) is Batch
        rows = _rows(message.raw)
        self.calls.append(len(rows))
        return b"".join(_suffixed(r, b"+b") for r in rows)


class OneByOne:
    """Sees every DataRow (static), one message at a time; appends '+o'."""

    frontend_types: frozenset[int] = frozenset()
    backend_types = frozenset(b"D")

    def __init__(self) -> None:
        self.rows = 0

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        assert type(message) is Frame and len(_rows(message.raw)) == 1
        self.rows += 1
        return _suffixed(message.raw, b"+o")


class Bystander:
    """Asked only for CommandComplete: must never see a row, however others watch them."""

    frontend_types: frozenset[int] = frozenset()
    backend_types = frozenset(b"C")

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        self.seen.add(message.type)
        return None


@pytest.fixture
def stages(upstream, tmp):
    batcher, one, bystander = Batcher(), OneByOne(), Bystander()
    p = start_proxy(upstream, tmp, pipeline=Pipeline([batcher, one, bystander]))
    yield p, batcher, one, bystander
    p.stop()


def test_rows_go_in_batches_to_the_stage_that_takes_them_and_one_by_one_to_others(stages) -> None:
    p, batcher, one, bystander = stages
    with psycopg.connect(p.dsn("alice"), autocommit=True) as conn:
        rows = conn.execute("SELECT g::text /* watch_me */ FROM generate_series(1, 20000) g").fetchall()
        assert rows == [(f"{g}+b+o",) for g in range(1, 20001)]
        assert sum(batcher.calls) == 20000 and max(batcher.calls) > 1
        assert conn.execute("SELECT 'plain'").fetchone() == ("plain+o",)  # the watch ended at ReadyForQuery
    assert sum(batcher.calls) == 20000 and one.rows == 20001
    assert bystander.seen == {ord("C")}


def test_watch_replaces_and_clears_a_stage_s_own_set_only() -> None:
    a, b = object(), object()
    info = SessionInfo(1, None, "test")
    info.watch(a, frozenset(b"DZ"))
    info.watch(b, frozenset(b"E"))
    assert info.watched_backend == frozenset(b"DZE")
    info.watch(a, frozenset(b"d"))
    assert info.watched == {a: frozenset(b"d"), b: frozenset(b"E")}
    info.watch(a, frozenset())
    assert info.watched == {b: frozenset(b"E")} and info.watched_backend == frozenset(b"E")
