"""Property tests for the pgwire codec: every message class round-trips through
encode, Framer and decode; and arbitrary or mangled bytes make the framer and the
decoders raise ProtocolViolation (or MessageTooLarge), never anything else."""

from __future__ import annotations

import struct
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.errors import ProtocolViolation
from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.buffer import frame
from rowgate.pgwire.framing import Frame, Framer

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------

# Strings travel as NUL-terminated UTF-8; any text without NUL (and without lone
# surrogates, which no decoded wire string yields except as escaped bytes) round-trips.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
name_text = text.filter(bool)
i16 = st.integers(-(2**15), 2**15 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)
blob = st.binary(max_size=64)
maybe_blob = st.none() | blob
i16s = st.lists(i16, max_size=6).map(tuple)
values = st.lists(maybe_blob, max_size=8).map(tuple)
kind = st.sampled_from(["S", "P"])
secret = st.binary(min_size=4, max_size=256)

FRONTEND: dict[type, st.SearchStrategy[Any]] = {
    fe.Query: st.builds(fe.Query, text),
    fe.Parse: st.builds(fe.Parse, text, text, st.lists(u32, max_size=6).map(tuple)),
    fe.Bind: st.builds(fe.Bind, text, text, i16s, values, i16s),
    fe.Describe: st.builds(fe.Describe, kind, text),
    fe.Close: st.builds(fe.Close, kind, text),
    fe.Execute: st.builds(fe.Execute, text, i32),
    fe.Sync: st.just(fe.Sync()),
    fe.Flush: st.just(fe.Flush()),
    fe.Terminate: st.just(fe.Terminate()),
    fe.CopyData: st.builds(fe.CopyData, blob),
    fe.CopyDone: st.just(fe.CopyDone()),
    fe.CopyFail: st.builds(fe.CopyFail, text),
    fe.FunctionCall: st.builds(fe.FunctionCall, u32, i16s, values, i16),
    fe.PasswordMessage: st.builds(fe.PasswordMessage, blob),
}

STARTUP: dict[type, st.SearchStrategy[Any]] = {
    fe.StartupMessage: st.builds(
        fe.StartupMessage,
        st.integers(0, 0xFFFF).map(lambda minor: (3 << 16) | minor),
        st.lists(st.tuples(name_text, text), max_size=8).map(tuple),
    ),
    fe.SSLRequest: st.just(fe.SSLRequest()),
    fe.GSSENCRequest: st.just(fe.GSSENCRequest()),
    fe.CancelRequest: st.builds(fe.CancelRequest, i32, secret),
}

field_description = st.builds(be.FieldDescription, text, u32, i16, u32, i16, i32, i16)
error_fields = st.lists(st.tuples(st.characters(min_codepoint=1, max_codepoint=255), text), max_size=10).map(tuple)

BACKEND: dict[type, st.SearchStrategy[Any]] = {
    be.Authentication: st.builds(be.Authentication, i32, blob),
    be.BackendKeyData: st.builds(be.BackendKeyData, i32, secret),
    be.ParseComplete: st.just(be.ParseComplete()),
    be.BindComplete: st.just(be.BindComplete()),
    be.CloseComplete: st.just(be.CloseComplete()),
    be.NoData: st.just(be.NoData()),
    be.EmptyQueryResponse: st.just(be.EmptyQueryResponse()),
    be.PortalSuspended: st.just(be.PortalSuspended()),
    be.CommandComplete: st.builds(be.CommandComplete, text),
    be.CopyResponse: st.builds(be.CopyResponse, st.sampled_from([b"G", b"H", b"W"]), st.integers(0, 255), i16s),
    be.CopyData: st.builds(be.CopyData, blob),
    be.CopyDone: st.just(be.CopyDone()),
    be.DataRow: st.builds(be.DataRow, values),
    be.ErrorResponse: st.builds(be.ErrorResponse, error_fields, st.sampled_from([b"E", b"N"])),
    be.FunctionCallResponse: st.builds(be.FunctionCallResponse, maybe_blob),
    be.NegotiateProtocolVersion: st.builds(be.NegotiateProtocolVersion, i32, st.lists(text, max_size=5).map(tuple)),
    be.NotificationResponse: st.builds(be.NotificationResponse, i32, text, text),
    be.ParameterDescription: st.builds(be.ParameterDescription, st.lists(u32, max_size=8).map(tuple)),
    be.ParameterStatus: st.builds(be.ParameterStatus, text, text),
    be.ReadyForQuery: st.builds(be.ReadyForQuery, st.sampled_from(["I", "T", "E"])),
    be.RowDescription: st.builds(be.RowDescription, st.lists(field_description, max_size=5).map(tuple)),
}


def test_strategies_cover_every_message_class() -> None:
    assert set(FRONTEND) == set(typing.get_args(fe.FrontendMessage))
    assert set(STARTUP) == set(typing.get_args(fe.StartupPacket))
    assert set(BACKEND) == set(typing.get_args(be.BackendMessage))


# --- round trips ---------------------------------------------------------------------


def _single_frame(framer: Framer, data: bytes) -> Frame:
    events = framer.feed(data)
    assert len(events) == 1 and isinstance(events[0], Frame)
    assert events[0].raw == data
    assert framer.pending == 0
    return events[0]


@pytest.mark.parametrize("cls", list(FRONTEND), ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_frontend_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(FRONTEND[cls])
    raw = msg.encode()
    assert raw[:1] == msg.type
    assert struct.unpack("!i", raw[1:5])[0] == len(raw) - 1
    f = _single_frame(Framer(), raw)
    assert f.type == msg.type[0]
    decoded = fe.decode_frontend(f.type, f.payload)
    assert decoded == msg
    assert type(decoded) is cls
    assert decoded.encode() == raw


@pytest.mark.parametrize("cls", list(STARTUP), ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_startup_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(STARTUP[cls])
    raw = msg.encode()
    assert struct.unpack("!i", raw[:4])[0] == len(raw)
    framer = Framer(startup=True)
    f = _single_frame(framer, raw)
    assert f.type == 0
    decoded = fe.decode_startup(f.payload)
    assert decoded == msg
    assert decoded.encode() == raw


@pytest.mark.parametrize("cls", list(BACKEND), ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_backend_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(BACKEND[cls])
    raw = msg.encode()
    assert struct.unpack("!i", raw[1:5])[0] == len(raw) - 1
    f = _single_frame(Framer(peer="server"), raw)
    decoded = be.decode_backend(f.type, f.payload)
    assert decoded == msg
    assert type(decoded) is cls
    assert decoded.encode() == raw


@SETTINGS
@given(
    msgs=st.lists(st.one_of(*BACKEND.values()), min_size=1, max_size=12),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_backend_sequence_round_trip_in_chunks(msgs: list[Any], sizes: list[int]) -> None:
    stream = b"".join(m.encode() for m in msgs)
    framer = Framer(peer="server")
    frames: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        frames += framer.feed(stream[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    assert framer.pending == 0
    assert all(isinstance(f, Frame) for f in frames)
    assert [be.decode_backend(f.type, f.payload) for f in frames if isinstance(f, Frame)] == msgs


@SETTINGS
@given(
    startup=st.one_of(*STARTUP.values()),
    msgs=st.lists(st.one_of(*FRONTEND.values()), max_size=12),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_client_stream_round_trip_in_chunks(startup: Any, msgs: list[Any], sizes: list[int]) -> None:
    """Startup packet then typed messages, chunked anywhere; the framer leaves startup
    mode right after the first packet (bytes already received stay buffered)."""
    stream = startup.encode() + b"".join(m.encode() for m in msgs)
    framer = Framer(startup=True)
    frames: list[Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        for ev in framer.feed(stream[pos : pos + sizes[i % len(sizes)]]):
            assert isinstance(ev, Frame)
            frames.append(ev)
        framer.startup = not frames
        pos += sizes[i % len(sizes)]
        i += 1
    for ev in framer.feed(b""):
        assert isinstance(ev, Frame)
        frames.append(ev)
    assert framer.pending == 0
    assert fe.decode_startup(frames[0].payload) == startup
    assert [fe.decode_frontend(f.type, f.payload) for f in frames[1:]] == msgs


def test_helpers_shape_messages_as_postgresql_does() -> None:
    err = be.error_response("42501", "permission denied", detail="d", hint="h")
    assert err.fields == (("S", "ERROR"), ("V", "ERROR"), ("C", "42501"), ("M", "permission denied"),
                          ("D", "d"), ("H", "h"))
    assert (err.sqlstate, err.message, err.kind) == ("42501", "permission denied", b"E")
    notice = be.error_response("01000", "careful", severity="WARNING", notice=True)
    assert notice.kind == b"N" and notice.get("S") == "WARNING" and notice.get("D") is None
    assert be.decode_backend(ord("N"), notice.encode()[5:]) == notice

    sasl = be.Authentication.sasl(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"])
    body = b"SCRAM-SHA-256\x00SCRAM-SHA-256-PLUS\x00\x00"
    assert sasl.encode() == b"R" + struct.pack("!ii", 4 + 4 + len(body), 10) + body
    decoded = be.decode_backend(ord("R"), sasl.encode()[5:])
    assert isinstance(decoded, be.Authentication)
    assert decoded.mechanisms() == ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]

    sm = fe.StartupMessage(fe.PROTOCOL_3_0, (("user", "alice"), ("database", "shop")))
    assert (sm.major, sm.minor, sm.get("user"), sm.get("nope", "dflt")) == (3, 0, "alice", "dflt")
    assert fe.SSLRequest().encode() == struct.pack("!ii", 8, 80877103)
    assert fe.GSSENCRequest().encode() == struct.pack("!ii", 8, 80877104)
    assert fe.CancelRequest(7, b"abcd").encode() == struct.pack("!iii", 16, 80877102, 7) + b"abcd"


# --- malformed payloads --------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "type_byte", "payload"),
    [
        ("fe", b"Q", b"SELECT 1"),  # unterminated string
        ("fe", b"Q", b"SELECT 1\x00extra"),  # trailing bytes
        ("fe", b"B", b"\x00\x00" + struct.pack("!h", -1)),  # negative format count
        ("fe", b"B", b"\x00\x00\x00\x00" + struct.pack("!h", 1) + struct.pack("!i", -2) + b"\x00\x00"),
        ("fe", b"B", b"\x00\x00\x00\x00" + struct.pack("!h", 30000)),  # count beyond the payload
        ("fe", b"P", b"\x00SELECT\x00" + struct.pack("!h", 2) + b"\x00\x00\x00\x17"),  # truncated oids
        ("fe", b"D", b"X\x00"),  # bad describe kind
        ("fe", b"C", b""),
        ("fe", b"E", b"\x00\x00\x00"),
        ("fe", b"S", b"\x00"),
        ("fe", b"?", b""),  # unknown type
        ("be", b"D", struct.pack("!h", 1) + struct.pack("!i", -5)),  # negative value length
        ("be", b"D", struct.pack("!h", 1) + struct.pack("!i", 1 << 30)),  # value longer than the payload
        ("be", b"D", struct.pack("!h", -1)),
        ("be", b"T", struct.pack("!h", 1) + b"x\x00"),  # truncated field description
        ("be", b"Z", b"X"),  # bad transaction status
        ("be", b"Z", b""),
        ("be", b"K", struct.pack("!i", 1) + b"ab"),  # secret key too short
        ("be", b"v", struct.pack("!ii", 0, 1 << 30)),  # absurd option count
        ("be", b"E", b"Mno terminator\x00"),
        ("be", b"R", b"\x00\x00"),
        ("be", b"1", b"\x00"),
        ("be", b"?", b""),
    ],
)
def test_malformed_payloads_are_protocol_violations(side: str, type_byte: bytes, payload: bytes) -> None:
    decode = fe.decode_frontend if side == "fe" else be.decode_backend
    with pytest.raises(ProtocolViolation):
        decode(type_byte[0], payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        struct.pack("!I", 80877103) + b"\x00",  # SSLRequest with trailing bytes
        struct.pack("!Ii", 80877102, 1) + b"ab",  # cancel key too short
        struct.pack("!Ii", 80877102, 1) + b"a" * 257,  # cancel key too long
        struct.pack("!I", 2 << 16) + b"\x00",  # protocol 2.0
        struct.pack("!I", 4 << 16) + b"\x00",  # protocol 4.0
        struct.pack("!I", 3 << 16) + b"user\x00alice",  # unterminated value
        struct.pack("!I", 3 << 16) + b"user\x00alice\x00",  # missing list terminator
        struct.pack("!I", 3 << 16) + b"\x00junk",
    ],
)
def test_malformed_startup_packets_are_protocol_violations(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        fe.decode_startup(payload)


# --- fuzz ----------------------------------------------------------------------------


def _mangle(data: st.DataObject, raw: bytes) -> bytes:
    """Truncate, extend, or overwrite a few bytes of a valid encoding."""
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "add"]))
        if op == "flip" and b:
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, data.draw(st.integers(0, 255))]))
        elif op == "cut" and b:
            del b[data.draw(st.integers(0, len(b) - 1)) :]
        else:
            b += data.draw(st.binary(max_size=8))
    return bytes(b)


any_message = st.one_of(*FRONTEND.values(), *BACKEND.values())


@FUZZ
@given(type_byte=st.integers(0, 255), payload=st.binary(max_size=200))
def test_fuzz_decoders_with_arbitrary_bytes(type_byte: int, payload: bytes) -> None:
    _check_decoders(type_byte, payload)


@FUZZ
@given(msg=any_message, data=st.data())
def test_fuzz_decoders_with_mangled_messages(msg: Any, data: st.DataObject) -> None:
    raw = msg.encode()
    payload = _mangle(data, raw[5:])
    type_byte = data.draw(st.sampled_from([raw[0], data.draw(st.integers(0, 255))]))
    _check_decoders(type_byte, payload)


def _check_decoders(type_byte: int, payload: bytes) -> None:
    """Either a ProtocolViolation, or a message that re-encodes to exactly these bytes
    (so a decoded-then-forwarded message can never differ from what was received)."""
    for decode in (fe.decode_frontend, be.decode_backend):
        try:
            msg = decode(type_byte, payload)
        except ProtocolViolation:
            continue
        assert msg.encode() == frame(bytes([type_byte]), payload)
    try:
        startup = fe.decode_startup(payload)
    except ProtocolViolation:
        pass
    else:
        assert startup.encode() == struct.pack("!i", len(payload) + 4) + payload


@FUZZ
@given(msg=st.one_of(*STARTUP.values()), data=st.data())
def test_fuzz_startup_decoder_with_mangled_packets(msg: Any, data: st.DataObject) -> None:
    _check_decoders(0, _mangle(data, msg.encode()[4:]))


framer_input = st.one_of(
    st.binary(max_size=300),
    st.lists(any_message, max_size=6).map(lambda ms: b"".join(m.encode() for m in ms)),
)


@FUZZ
@given(
    payload=framer_input,
    data=st.data(),
    startup=st.booleans(),
    max_length=st.sampled_from([0, 10, 100, 1 << 30]),
    max_startup=st.sampled_from([8, 50, 10_000]),
)
def test_fuzz_framer(payload: bytes, data: st.DataObject, startup: bool, max_length: int, max_startup: int) -> None:
    stream = _mangle(data, payload)
    sizes = data.draw(st.lists(st.integers(1, 50), min_size=1, max_size=8))
    framer = Framer(max_length=max_length, max_startup_length=max_startup, startup=startup)
    emitted = bytearray()
    fed = 0
    pos, i = 0, 0
    try:
        while pos < len(stream):
            chunk = stream[pos : pos + sizes[i % len(sizes)]]
            pos += len(chunk)
            i += 1
            frames = framer.feed(chunk)
            fed += len(chunk)
            for f in frames:
                _check_frame(f, framer.startup, max_length, max_startup, _check_decoders)
                emitted += f.raw
            if framer.startup and frames:
                framer.startup = False
            # nothing is lost or invented: what came out plus what is held is what went in
            assert bytes(emitted) + bytes(framer._buf) == stream[:fed]
    except ProtocolViolation:
        pass


@FUZZ
@given(
    payload=framer_input,
    data=st.data(),
    max_length=st.sampled_from([0, 10, 100, 1 << 30]),
    wanted=st.sampled_from([frozenset(), frozenset(b"ZS"), frozenset(b"QPBDE"), frozenset(range(1, 256))]),
)
def test_fuzz_split(payload: bytes, data: st.DataObject, max_length: int, wanted: frozenset[int]) -> None:
    stream = _mangle(data, payload)
    sizes = data.draw(st.lists(st.integers(1, 50), min_size=1, max_size=8))
    framer = Framer(max_length=max_length)
    emitted = bytearray()
    fed = 0
    pos, i = 0, 0
    try:
        while pos < len(stream):
            chunk = stream[pos : pos + sizes[i % len(sizes)]]
            pos += len(chunk)
            i += 1
            fed += len(chunk)
            for part in framer.split(chunk, wanted):
                if isinstance(part, Frame):
                    assert part.type in wanted
                    _check_frame(part, False, max_length, 0, _check_decoders)
                    emitted += part.raw
                else:
                    emitted += part
            # the relay forwards exactly what came in, in order, holding back only an
            # unfinished wanted message (or a cut header)
            assert bytes(emitted) + bytes(framer._buf) == stream[:fed]
    except ProtocolViolation:
        pass


def _check_frame(ev: Frame, startup: bool, max_length: int, max_startup: int, check: Any) -> None:
    if ev.type == 0:
        assert startup
        (length,) = struct.unpack("!i", ev.raw[:4])
        assert length == len(ev.raw) and 8 <= length <= max_startup
    else:
        (length,) = struct.unpack("!i", ev.raw[1:5])
        assert ev.raw[0] == ev.type and length == len(ev.raw) - 1 and length - 4 <= max_length
    check(ev.type, ev.payload)
