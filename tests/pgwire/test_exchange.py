"""Pairing results with the requests they answer, sans-IO: recorded libpq sessions and
hand-built pipelines with errors, fed in the order the wire would carry them."""

from __future__ import annotations

import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pgwire_fixtures import SCENARIOS, frame_client, load

from rowgate.errors import ProtocolViolation
from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.exchange import Exchange, Request, _kind_and_name, _text
from rowgate.pgwire.framing import Frame, Framer


def frames(*messages: bytes) -> list[Frame]:
    out = Framer(peer="test").feed(b"".join(messages))
    assert all(isinstance(f, Frame) for f in out)
    return out  # type: ignore[return-value]


def fd(name: str, type_oid: int = 25, fmt: int = 0, table: int = 0, col: int = 0) -> be.FieldDescription:
    return be.FieldDescription(name, table, col, type_oid, -1, -1, fmt)


def rows(*names: str) -> bytes:
    return be.RowDescription(tuple(fd(n) for n in names)).encode()


def complete(tag: str) -> bytes:
    return be.CommandComplete(tag).encode()


def ready(status: str = "I") -> bytes:
    return be.ReadyForQuery(status).encode()


def error(state: str) -> bytes:
    return be.error_response(state, "boom").encode()


def feed(ex: Exchange, client: list[bytes], server: list[bytes]) -> list[Request | None]:
    for f in frames(*client):
        ex.client(f)
    return [ex.server(f) for f in frames(*server)]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recorded_sessions_pair_up(scenario: str) -> None:
    """Every answer of a real psql/psycopg session belongs to a request, and at the end
    nothing is left outstanding."""
    client = [f for f in frame_client([load(scenario, "client")])[1:] if f.type not in b"pX"]
    server = Framer(peer="server").feed(load(scenario, "server"))
    after_login = [f for f in server if isinstance(f, Frame)]
    first_z = next(i for i, f in enumerate(after_login) if f.type == ord("Z"))
    ex = Exchange()
    finished: list[Request] = []
    ex.on_done.append(finished.append)
    for f in client:
        ex.client(f)
    for f in after_login[first_z + 1 :]:
        req = ex.server(f)
        if f.type not in b"NAS":
            assert req is not None, f"unpaired {chr(f.type)!r}"
    assert not ex._queue
    assert finished and all(r.done for r in finished)


def test_multi_statement_query_counts_its_statements() -> None:
    ex = Exchange()
    got = feed(
        ex,
        [fe.Query("SELECT a FROM t; SELECT b, c FROM u; UPDATE v SET x = 1").encode()],
        [rows("a"), be.DataRow((b"1",)).encode(), complete("SELECT 1"),
         rows("b", "c"), be.DataRow((b"2", b"3")).encode(), complete("SELECT 1"),
         complete("UPDATE 4"), ready()],
    )
    req = got[0]
    assert req is not None and req.kind == "query" and req.done
    assert [r.statement_index for r in got if r] == [2] * 8  # the same request object, seen at the end
    ex2 = Exchange()
    for f in frames(fe.Query("SELECT a FROM t; SELECT b, c FROM u").encode()):
        ex2.client(f)
    seen = []
    for f in frames(rows("a"), be.DataRow((b"1",)).encode(), complete("SELECT 1"), rows("b", "c"),
                    be.DataRow((b"2", b"3")).encode(), complete("SELECT 1"), ready()):
        r = ex2.server(f)
        assert r is not None
        seen.append((chr(f.type), r.statement_index, tuple(c.name for c in r.columns or ()), r.tag))
    assert seen == [
        ("T", 0, ("a",), None), ("D", 0, ("a",), None), ("C", 0, ("a",), "SELECT 1"),
        ("T", 1, ("b", "c"), "SELECT 1"), ("D", 1, ("b", "c"), "SELECT 1"), ("C", 1, ("b", "c"), "SELECT 1"),
        ("Z", 1, ("b", "c"), "SELECT 1"),
    ]


def test_extended_pipeline_uses_described_columns_with_bind_formats() -> None:
    ex = Exchange()
    client = [
        fe.Parse("s1", "SELECT email, id FROM customers WHERE id = $1").encode(),
        fe.Describe("S", "s1").encode(),
        fe.Sync().encode(),
        fe.Bind("", "s1", (1,), (b"\x00\x00\x00\x01",), (1, 0)).encode(),
        fe.Execute("").encode(),
        fe.Sync().encode(),
    ]
    server = [
        be.ParseComplete().encode(), be.ParameterDescription((23,)).encode(),
        be.RowDescription((fd("email", table=7, col=2), fd("id", 23, table=7, col=1))).encode(), ready(),
        be.BindComplete().encode(), be.DataRow((b"a@b.c", b"1")).encode(), complete("SELECT 1"), ready(),
    ]
    got = feed(ex, client, server)
    execute = got[5]
    assert execute is not None and execute.kind == "execute" and execute.statement == "s1"
    assert execute.sql is not None and execute.sql.startswith("SELECT email")
    assert execute.columns is not None
    assert [(c.name, c.format, c.table_oid, c.column) for c in execute.columns] == [
        ("email", 1, 7, 2), ("id", 0, 7, 1)
    ]
    assert execute.tag == "SELECT 1" and execute.done
    assert ex.statement_columns("s1") is not None


def test_error_skips_every_request_up_to_sync() -> None:
    ex = Exchange()
    finished: list[Request] = []
    ex.on_done.append(finished.append)
    client = [
        fe.Parse("", "SELECT 1/0").encode(), fe.Bind("", "").encode(), fe.Execute("").encode(),
        fe.Parse("", "INSERT INTO t VALUES (1)").encode(), fe.Bind("", "").encode(), fe.Execute("").encode(),
        fe.Sync().encode(),
        fe.Parse("", "SELECT 2").encode(), fe.Bind("", "").encode(), fe.Execute("").encode(), fe.Sync().encode(),
    ]
    server = [
        be.ParseComplete().encode(), be.BindComplete().encode(), error("22012"), ready("I"),
        be.ParseComplete().encode(), be.BindComplete().encode(), rows("?column?"),
        be.DataRow((b"2",)).encode(), complete("SELECT 1"), ready(),
    ]
    feed(ex, client, server)
    outcome = [(r.kind, r.error, r.tag) for r in finished]
    assert outcome == [
        ("parse", None, None), ("bind", None, None), ("execute", "22012", None),
        ("parse", "skipped", None), ("bind", "skipped", None), ("execute", "skipped", None), ("sync", None, None),
        ("parse", None, None), ("bind", None, None), ("execute", None, "SELECT 1"), ("sync", None, None),
    ]


def test_failed_parse_forgets_the_statement() -> None:
    ex = Exchange()
    feed(ex, [fe.Parse("bad", "SELEC").encode(), fe.Sync().encode()], [error("42601"), ready()])
    assert ex.statement_columns("bad") is None and "bad" not in ex._statements


def test_sync_during_copy_in_is_not_answered() -> None:
    ex = Exchange()
    for f in frames(fe.Query("COPY t FROM STDIN").encode()):
        ex.client(f)
    ex.server(frames(be.CopyResponse(b"G", 0, ()).encode())[0])
    for f in frames(fe.Sync().encode(), b"d\x00\x00\x00\x06x\n", b"c\x00\x00\x00\x04"):
        ex.client(f)
    got = [ex.server(f) for f in frames(complete("COPY 1"), ready())]
    assert all(r is not None and r.kind == "query" for r in got)
    assert not ex._queue


def test_injected_describe_goes_before_the_current_message() -> None:
    ex = Exchange()
    for f in frames(fe.Parse("", "SELECT email FROM c").encode(), fe.Bind("", "").encode()):
        ex.client(f)
    execute = ex.client(frames(fe.Execute("").encode())[0])
    injected = ex.inject(frames(fe.Describe("P", "").encode())[0])
    assert injected.injected and injected.describe_kind == "P"
    for f in frames(fe.Sync().encode()):
        ex.client(f)
    got = [ex.server(f) for f in frames(be.ParseComplete().encode(), be.BindComplete().encode(),
                                        rows("email"), be.DataRow((b"x",)).encode(), complete("SELECT 1"),
                                        ready())]
    assert got[2] is injected and got[3] is execute
    assert execute is not None and execute.columns is not None and execute.columns[0].name == "email"


def test_async_messages_belong_to_nothing() -> None:
    ex = Exchange()
    ex.client(frames(fe.Query("SELECT 1").encode())[0])
    notice = be.error_response("01000", "hello", severity="NOTICE", notice=True).encode()
    got = [ex.server(f) for f in frames(notice, be.ParameterStatus("TimeZone", "UTC").encode())]
    assert got == [None, None]
    assert ex._queue


def _decoded_tag(payload: bytes) -> str:
    return typing.cast(be.CommandComplete, be.decode_backend(ord("C"), payload)).tag


def _decoded_text(payload: bytes) -> str:
    return typing.cast(fe.Query, fe.decode_frontend(ord("Q"), payload)).sql


def _decoded_kind_and_name(payload: bytes) -> tuple[str, str]:
    msg = typing.cast(fe.Describe, fe.decode_frontend(ord("D"), payload))
    return msg.kind, msg.name


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=24) | st.sampled_from([b"", b"\x00", b"SELECT 1\x00", b"SELECT\x001\x00", b"Sx\x00"]))
def test_tags_texts_and_names_read_as_the_decoders_do(payload: bytes) -> None:
    """The Exchange reads a CommandComplete's tag, a Query's text and a Describe's kind and
    name without building the message: the same answer, or the same refusal."""
    readers: list[tuple[typing.Callable[[bytes], object], typing.Callable[[bytes], object]]] = [
        (be.command_tag, _decoded_tag),
        (lambda p: _text(p, 0, "Query"), _decoded_text),
        (_kind_and_name, _decoded_kind_and_name),
    ]
    for read, decode in readers:
        try:
            expected = decode(payload)
        except ProtocolViolation:
            with pytest.raises(ProtocolViolation):
                read(payload)
        else:
            assert read(payload) == expected


def test_columns_are_decoded_only_when_asked_for() -> None:
    """Pairing never decodes a RowDescription or a Bind: a stage that asks for columns gets
    them with the Bind's result formats, decoded then."""
    ex = Exchange()
    client = [fe.Parse("s", "SELECT a, b FROM t").encode(), fe.Describe("S", "s").encode(),
              fe.Bind("", "s", (), (), (1,)).encode(), fe.Execute("").encode(), fe.Sync().encode()]
    server = [be.ParseComplete().encode(), be.ParameterDescription(()).encode(), rows("a", "b"),
              be.BindComplete().encode(), be.DataRow((b"\x00", b"\x01")).encode(), complete("SELECT 1"), ready()]
    got = feed(ex, client, server)
    execute = got[4]
    assert execute is not None and execute.kind == "execute" and execute._columns is not None
    assert execute._columns.value is None  # nothing decoded yet
    assert execute.columns is not None and [(c.name, c.format) for c in execute.columns] == [("a", 1), ("b", 1)]
    assert ex.statement_columns("s") is not None and [c.format for c in ex.statement_columns("s") or ()] == [0, 0]
