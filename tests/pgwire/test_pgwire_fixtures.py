"""The codec against bytes recorded from real libpq exchanges (psql and psycopg
talking to a real PostgreSQL; see record_fixtures.py for how they were made).

Each stream is framed whole, byte by byte and in random chunks, which must all give
the same frames; every frame must decode and re-encode to exactly its bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.framing import Frame, Framer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCENARIOS = ["psql_simple", "psql_copy", "psycopg_extended"]


def load(name: str, side: str) -> bytes:
    data = (FIXTURES / f"{name}.{side}.bin").read_bytes()
    assert data, f"fixture {name}.{side}.bin is empty; re-run tests/pgwire/record_fixtures.py"
    return data


def chunked(data: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    """Split data by the given sizes (cycled), the last chunk taking what is left."""
    sizes = list(sizes) or [len(data)]
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos : pos + n]
        pos += n
        i += 1


def frame_client(chunks: Iterable[bytes], *, switch: str = "continue") -> list[Frame]:
    """Frame a client stream: one untyped startup packet, then typed messages.

    switch="continue": flip ``framer.startup`` off and keep feeding (bytes that came
    after the startup packet in the same chunk stay buffered in the framer);
    switch="take_pending": take those bytes out and feed them again."""
    framer = Framer(startup=True, peer="client")
    frames: list[Frame] = []
    for chunk in chunks:
        events = framer.feed(chunk)
        for ev in events:
            assert isinstance(ev, Frame)
            frames.append(ev)
        if framer.startup and frames:
            assert len(frames) == 1 and frames[0].type == 0
            framer.startup = False
            if switch == "take_pending":
                for ev in framer.feed(framer.take_pending()):
                    assert isinstance(ev, Frame)
                    frames.append(ev)
    for ev in framer.feed(b""):  # flush anything left over from the startup switch
        assert isinstance(ev, Frame)
        frames.append(ev)
    assert framer.pending == 0
    return frames


def frame_server(chunks: Iterable[bytes]) -> list[Frame]:
    framer = Framer(peer="server")
    frames: list[Frame] = []
    for chunk in chunks:
        for ev in framer.feed(chunk):
            assert isinstance(ev, Frame)
            frames.append(ev)
    assert framer.pending == 0
    return frames


def frame_stream(side: str, chunks: Iterable[bytes], switch: str = "continue") -> list[Frame]:
    return frame_client(chunks, switch=switch) if side == "client" else frame_server(chunks)


def decode(side: str, frame: Frame) -> object:
    if frame.type == 0:
        return fe.decode_startup(frame.payload)
    if side == "client":
        return fe.decode_frontend(frame.type, frame.payload)
    return be.decode_backend(frame.type, frame.payload)


def messages(name: str, side: str) -> list[object]:
    return [decode(side, f) for f in frame_stream(side, [load(name, side)])]


def typed(msgs: list[object], cls: type) -> list[object]:
    return [m for m in msgs if isinstance(m, cls)]


STREAMS = [(name, side) for name in SCENARIOS for side in ("client", "server")]


# --- framing: whole, byte by byte, chunked -------------------------------------------


@pytest.mark.parametrize(("name", "side"), STREAMS)
def test_whole_stream_frames_cover_every_byte(name: str, side: str) -> None:
    data = load(name, side)
    frames = frame_stream(side, [data])
    assert b"".join(f.raw for f in frames) == data
    assert len(frames) > 5
    for f in frames:
        if f.type == 0:
            assert struct.unpack("!i", f.raw[:4])[0] == len(f.raw)
        else:
            assert f.raw[0] == f.type
            assert struct.unpack("!i", f.raw[1:5])[0] == len(f.raw) - 1


@pytest.mark.parametrize(("name", "side"), STREAMS)
@pytest.mark.parametrize("switch", ["continue", "take_pending"])
def test_byte_by_byte_gives_identical_frames(name: str, side: str, switch: str) -> None:
    data = load(name, side)
    whole = frame_stream(side, [data], switch)
    one_by_one = frame_stream(side, (data[i : i + 1] for i in range(len(data))), switch)
    assert one_by_one == whole


@pytest.mark.parametrize(("name", "side"), STREAMS)
@pytest.mark.parametrize("switch", ["continue", "take_pending"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=30))
def test_random_chunks_give_identical_frames(name: str, side: str, switch: str, sizes: list[int]) -> None:
    data = load(name, side)
    assert frame_stream(side, chunked(data, sizes), switch) == frame_stream(side, [data], switch)


@pytest.mark.parametrize(("name", "side"), STREAMS)
def test_every_frame_decodes_and_round_trips_exactly(name: str, side: str) -> None:
    for f in frame_stream(side, [load(name, side)]):
        msg = decode(side, f)
        assert msg.encode() == f.raw, msg  # type: ignore[attr-defined]


def test_startup_packet_then_messages_in_one_chunk_continue_after_switch() -> None:
    """A client may send its startup packet and more bytes in one segment; switching
    the framer out of startup mode must parse those buffered bytes as messages, each
    on its own, not glue them into one frame."""
    startup = fe.StartupMessage(fe.PROTOCOL_3_0, (("user", "u"),)).encode()
    rest = fe.Query("SELECT 1").encode() + fe.Sync().encode() + fe.Query("SELECT 2").encode()
    framer = Framer(startup=True)
    (first,) = framer.feed(startup + rest)
    assert isinstance(first, Frame) and first.raw == startup
    assert framer.pending == len(rest)
    framer.startup = False
    tail = fe.Terminate().encode()
    frames = framer.feed(tail[:2])
    frames += framer.feed(tail[2:])
    assert [f.raw for f in frames if isinstance(f, Frame)] == [
        fe.Query("SELECT 1").encode(),
        fe.Sync().encode(),
        fe.Query("SELECT 2").encode(),
        tail,
    ]
    assert framer.pending == 0


# --- protocol-level invariants that hold for every recorded session -----------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_one_ready_for_query_per_query_or_sync(name: str) -> None:
    client = messages(name, "client")
    server = messages(name, "server")
    assert isinstance(client[0], fe.StartupMessage)
    assert isinstance(client[-1], fe.Terminate)
    assert isinstance(server[0], be.Authentication) and server[0].code == be.AUTH_OK
    rfq = typed(server, be.ReadyForQuery)
    assert len(rfq) == 1 + len(typed(client, fe.Query)) + len(typed(client, fe.Sync))
    assert isinstance(server[-1], be.ReadyForQuery)
    keys = typed(server, be.BackendKeyData)
    assert len(keys) == 1 and len(keys[0].secret) == 4  # type: ignore[attr-defined]
    params = {m.name: m.value for m in typed(server, be.ParameterStatus)}  # type: ignore[attr-defined]
    assert params["server_encoding"] == "UTF8"
    assert params["client_encoding"] == "UTF8"
    assert "server_version" in params


# --- semantic content -----------------------------------------------------------------


def _groups(server: list[object]) -> list[list[object]]:
    """Server messages after the startup phase, split after each ReadyForQuery."""
    start = server.index(typed(server, be.ReadyForQuery)[0]) + 1
    out: list[list[object]] = [[]]
    for m in server[start:]:
        out[-1].append(m)
        if isinstance(m, be.ReadyForQuery):
            out.append([])
    assert out[-1] == []
    return out[:-1]


def _names(m: object) -> list[str]:
    assert isinstance(m, be.RowDescription)
    return [f.name for f in m.fields]


def test_psql_simple_query_session() -> None:
    client = messages("psql_simple", "client")
    server = messages("psql_simple", "server")

    startup = client[0]
    assert isinstance(startup, fe.StartupMessage)
    assert (startup.major, startup.minor) == (3, 0)
    assert startup.get("user") == "postgres"
    assert startup.get("database") == "postgres"
    assert startup.get("application_name") == "psql"

    queries = [m.sql for m in typed(client, fe.Query)]  # type: ignore[attr-defined]
    assert queries[0] == "SELECT 1 AS one, 'two' AS two, NULL::text AS three"
    assert queries[1].startswith("SELECT 'multi' AS first_col; SELECT 2 AS second_col;")
    assert "SELECT 1/0" in queries
    assert "NOTIFY rowgate_chan, 'hello payload'" in queries

    groups = _groups(server)
    assert len(groups) == len(queries)
    by_sql = dict(zip(queries, groups, strict=True))

    first = by_sql[queries[0]]
    assert _names(first[0]) == ["one", "two", "three"]
    assert first[1] == be.DataRow((b"1", b"two", None))
    assert first[2] == be.CommandComplete("SELECT 1")

    multi = by_sql[queries[1]]  # several statements, one Query, one ReadyForQuery
    assert [_names(m) for m in typed(multi, be.RowDescription)] == [["first_col"], ["second_col"]]
    assert [m.tag for m in typed(multi, be.CommandComplete)] == [  # type: ignore[attr-defined]
        "SELECT 1", "SELECT 1", "CREATE TABLE", "INSERT 0 2"
    ]

    (err,) = typed(by_sql["SELECT 1/0"], be.ErrorResponse)
    assert isinstance(err, be.ErrorResponse) and err.kind == b"E"
    assert err.sqlstate == "22012"
    assert err.message == "division by zero"
    assert err.get("S") == "ERROR"

    do_sql = next(q for q in queries if q.startswith("DO "))
    (notice,) = typed(by_sql[do_sql], be.ErrorResponse)
    assert isinstance(notice, be.ErrorResponse)
    assert notice.kind == b"N"
    assert notice.get("S") == "NOTICE"
    assert notice.message == "hello from a DO block"

    (note,) = typed(by_sql["NOTIFY rowgate_chan, 'hello payload'"], be.NotificationResponse)
    assert isinstance(note, be.NotificationResponse)
    assert (note.channel, note.payload) == ("rowgate_chan", "hello payload")
    assert note.pid == typed(server, be.BackendKeyData)[0].pid  # type: ignore[attr-defined]

    (bad_col,) = typed(by_sql["SELECT no_such_column"], be.ErrorResponse)
    assert bad_col.sqlstate == "42703"  # type: ignore[attr-defined]

    statuses = [m.status for m in typed(server, be.ReadyForQuery)]  # type: ignore[attr-defined]
    after = dict(zip(queries, statuses[1:], strict=True))
    assert after["BEGIN"] == "T"
    assert after["SELECT x FROM simple_t ORDER BY x"] == "T"
    assert after["SELECT no_such_column"] == "E"
    assert after["ROLLBACK"] == "I"
    assert statuses[0] == "I"

    assert by_sql[";"][0] == be.EmptyQueryResponse()


def test_psql_copy_in_and_out() -> None:
    client = messages("psql_copy", "client")
    server = messages("psql_copy", "server")
    queries = [m.sql for m in typed(client, fe.Query)]  # type: ignore[attr-defined]
    assert any(q.startswith("COPY  copy_t FROM STDIN") for q in queries)

    sent = b"".join(m.data for m in typed(client, fe.CopyData))  # type: ignore[attr-defined]
    assert sent == b'1,alpha\n2,beta\n3,"gamma, with comma"\n'
    assert len(typed(client, fe.CopyDone)) == 1

    copy_in = [m for m in server if isinstance(m, be.CopyResponse) and m.kind == b"G"]
    copy_out = [m for m in server if isinstance(m, be.CopyResponse) and m.kind == b"H"]
    assert [(m.format, m.column_formats) for m in copy_in] == [(0, (0, 0))]
    assert [(m.format, m.column_formats) for m in copy_out] == [(0, (0, 0)), (0, (0,))]

    received = [m.data for m in typed(server, be.CopyData)]  # type: ignore[attr-defined]
    assert received[:3] == [b"1\talpha\n", b"2\tbeta\n", b"3\tgamma, with comma\n"]
    assert received[3:] == [b"a10\n", b"10\n", b"20\n", b"30\n"]
    assert len(typed(server, be.CopyDone)) == 2
    assert [m.tag for m in typed(server, be.CommandComplete)].count("COPY 3") == 3  # type: ignore[attr-defined]


def test_psycopg_extended_protocol_and_pipeline() -> None:
    client = messages("psycopg_extended", "client")
    server = messages("psycopg_extended", "server")

    parses = typed(client, fe.Parse)
    first = parses[0]
    assert isinstance(first, fe.Parse)
    assert first.sql.startswith("SELECT $1::int4 + 1 AS answer")
    assert len(first.param_types) == 4

    bind = client[client.index(first) + 1]
    assert isinstance(bind, fe.Bind)
    assert bind.param_formats[:3] == (1, 1, 1)  # binary parameters
    (n,) = struct.unpack("!h", bind.params[0] or b"")  # psycopg sends a Python int as int2
    assert n == 41
    assert bind.params[1] == "héllo".encode()
    assert bind.params[2] == b"\x00\x01\xff"
    assert bind.params[3] is None
    assert bind.result_formats == (1,)

    # a named prepared statement, parsed once and bound twice
    named = [p for p in parses if isinstance(p, fe.Parse) and p.name]
    assert named
    binds_to_named = [b for b in typed(client, fe.Bind) if b.statement == named[0].name]  # type: ignore[attr-defined]
    assert len(binds_to_named) == 2

    # pipeline mode: several Execute messages before one Sync, then a Flush
    kinds = [type(m).__name__ for m in client]
    runs = "".join("E" if k == "Execute" else "S" if k == "Sync" else "" for k in kinds).split("S")
    assert max(len(r) for r in runs) >= 4
    assert "Flush" in kinds
    assert "Describe" in kinds

    fail = typed(client, fe.CopyFail)
    assert len(fail) == 1 and "abort the copy" in fail[0].message  # type: ignore[attr-defined]

    # server side: binary results described and returned
    rd = typed(server, be.RowDescription)[0]
    assert isinstance(rd, be.RowDescription)
    assert _names(rd) == ["answer", "label", "blob", "nothing"]
    assert {f.format for f in rd.fields} == {1}
    assert [f.type_oid for f in rd.fields] == [23, 25, 17, 23]
    row = typed(server, be.DataRow)[0]
    assert row == be.DataRow((struct.pack("!i", 42), "héllo".encode(), b"\x00\x01\xff", None))

    for cls in (be.ParseComplete, be.BindComplete, be.NoData):
        assert typed(server, cls)
    pipe_rows = [m.values for m in typed(server, be.DataRow)][-3:]  # type: ignore[attr-defined]
    assert pipe_rows == [(b"1", b"a"), (b"2", b"b"), (b"3", None)]
    errors = [m.sqlstate for m in typed(server, be.ErrorResponse)]  # type: ignore[attr-defined]
    assert errors == ["22012", "57014"]  # division by zero; COPY aborted by CopyFail
    copy_in = typed(server, be.CopyResponse)
    assert len(copy_in) == 1 and copy_in[0].kind == b"G"  # type: ignore[attr-defined]
