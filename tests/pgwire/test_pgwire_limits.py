"""Framer limits and streaming: every length is checked from the header alone,
before anything is buffered for the body; large streamable messages pass through in
pieces with bounded memory."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.errors import MessageTooLarge, ProtocolViolation
from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.framing import DEFAULT_MAX_STARTUP, Event, Frame, Framer, StreamChunk, StreamStart

TWO_GB = 2**31 - 1  # the largest int32 length field


def header(type_byte: bytes, length: int) -> bytes:
    return type_byte + struct.pack("!i", length)


# --- typed message limits ------------------------------------------------------------


@pytest.mark.parametrize("max_length", [None, 1000, 0])
def test_huge_length_raises_from_the_header_alone(max_length: int | None) -> None:
    framer = Framer() if max_length is None else Framer(max_length=max_length)
    with pytest.raises(MessageTooLarge):
        framer.feed(header(b"D", TWO_GB))  # just the 5 header bytes, no body


def test_huge_length_raises_on_the_fifth_byte_when_fed_byte_by_byte() -> None:
    framer = Framer(max_length=1 << 20)
    hdr = header(b"d", TWO_GB)
    for b in hdr[:4]:
        assert framer.feed(bytes([b])) == []
    with pytest.raises(MessageTooLarge):
        framer.feed(hdr[4:])


def test_huge_length_after_a_valid_message_in_the_same_chunk() -> None:
    framer = Framer(max_length=100)
    with pytest.raises(MessageTooLarge):
        framer.feed(be.ReadyForQuery("I").encode() + header(b"D", 105) + b"\x00\x01")


def test_huge_length_split_across_feeds_after_a_message() -> None:
    framer = Framer(max_length=100)
    events = framer.feed(be.ReadyForQuery("I").encode() + b"D\x00")
    assert [type(e) for e in events] == [Frame]
    with pytest.raises(MessageTooLarge):
        framer.feed(b"\x00\x10\x00")


def test_message_too_large_is_a_protocol_violation_with_its_own_sqlstate() -> None:
    with pytest.raises(ProtocolViolation) as info:
        Framer(max_length=10).feed(header(b"Q", 4 + 11))
    assert isinstance(info.value, MessageTooLarge)
    assert info.value.sqlstate == "54000"


def test_length_exactly_at_the_limit_is_accepted() -> None:
    framer = Framer(max_length=10)
    msg = fe.CopyData(b"0123456789").encode()
    assert framer.feed(msg[:5]) == []  # header accepted, waiting for the body
    assert framer.feed(msg[5:]) == [Frame(ord("d"), msg)]
    with pytest.raises(MessageTooLarge):
        Framer(max_length=10).feed(fe.CopyData(b"0123456789A").encode())


@pytest.mark.parametrize("length", [3, 0, -1, -4, -(2**31)])
def test_too_small_or_negative_length_is_a_protocol_violation(length: int) -> None:
    for framer_chunks in ([header(b"Q", length)], [header(b"Q", length)[:2], header(b"Q", length)[2:]]):
        framer = Framer()
        with pytest.raises(ProtocolViolation) as info:
            for chunk in framer_chunks:
                framer.feed(chunk)
        assert not isinstance(info.value, MessageTooLarge)


def test_minimal_length_four_is_an_empty_payload() -> None:
    assert Framer().feed(b"S\x00\x00\x00\x04") == [Frame(ord("S"), b"S\x00\x00\x00\x04")]


def test_zero_type_byte_is_refused() -> None:
    """Frame.type 0 means an untyped startup packet, so no typed frame may have it."""
    with pytest.raises(ProtocolViolation):
        Framer().feed(b"\x00\x00\x00\x00\x04")


# --- startup packet limits -----------------------------------------------------------


def test_startup_packet_over_the_default_limit_raises_from_the_length_alone() -> None:
    assert DEFAULT_MAX_STARTUP == 10_000
    with pytest.raises(MessageTooLarge):
        Framer(startup=True).feed(struct.pack("!i", 10_001))
    with pytest.raises(MessageTooLarge):
        Framer(startup=True).feed(struct.pack("!i", TWO_GB))


def test_startup_packet_at_the_limit_is_accepted() -> None:
    big = fe.StartupMessage(fe.PROTOCOL_3_0, (("user", "u"), ("options", "x" * 9000)))
    raw = big.encode()
    assert len(raw) <= DEFAULT_MAX_STARTUP
    framer = Framer(startup=True)
    (f,) = framer.feed(raw)
    assert isinstance(f, Frame) and fe.decode_startup(f.payload) == big
    with pytest.raises(MessageTooLarge):
        Framer(startup=True, max_startup_length=len(raw) - 1).feed(raw[:4])


def test_startup_packet_limit_checked_when_length_arrives_in_pieces() -> None:
    framer = Framer(startup=True, max_startup_length=100)
    assert framer.feed(b"\x00\x00") == []
    with pytest.raises(MessageTooLarge):
        framer.feed(b"\x01\x00")


@pytest.mark.parametrize("length", [7, 4, 0, -1, -(2**31)])
def test_startup_packet_too_small_or_negative(length: int) -> None:
    with pytest.raises(ProtocolViolation) as info:
        Framer(startup=True).feed(struct.pack("!i", length) + b"\x00" * 8)
    assert not isinstance(info.value, MessageTooLarge)


def test_startup_mode_stops_after_one_packet() -> None:
    """After an SSLRequest the next bytes are TLS: the framer must not parse them."""
    ssl = fe.SSLRequest().encode()
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    framer = Framer(startup=True)
    assert framer.feed(ssl + tls_hello) == [Frame(0, ssl)]
    assert framer.take_pending() == tls_hello
    assert framer.pending == 0


def test_cancel_request_is_one_startup_packet() -> None:
    cancel = fe.CancelRequest(1234, b"\x01\x02\x03\x04").encode()
    (f,) = Framer(startup=True).feed(cancel)
    assert isinstance(f, Frame)
    assert fe.decode_startup(f.payload) == fe.CancelRequest(1234, b"\x01\x02\x03\x04")


# --- streaming -----------------------------------------------------------------------

BIG_VALUE = bytes(random.Random(7).getrandbits(8) for _ in range(50_000))
BIG_ROW = be.DataRow((b"id-1", BIG_VALUE, None)).encode()
STREAM = (
    be.RowDescription((be.FieldDescription("v", 0, 0, 17, -1, -1, 0),)).encode()
    + BIG_ROW
    + be.DataRow((b"small",)).encode()
    + BIG_ROW
    + be.CommandComplete("SELECT 2").encode()
    + be.ReadyForQuery("I").encode()
)
EXPECTED = [
    be.RowDescription((be.FieldDescription("v", 0, 0, 17, -1, -1, 0),)).encode(),
    BIG_ROW,
    be.DataRow((b"small",)).encode(),
    BIG_ROW,
    be.CommandComplete("SELECT 2").encode(),
    be.ReadyForQuery("I").encode(),
]
THRESHOLD = 1024


def streaming_framer() -> Framer:
    framer = Framer(peer="server", stream_threshold=THRESHOLD)
    framer.streamable = frozenset({ord("D")})
    return framer


def reassemble(events: list[Event]) -> tuple[list[bytes], list[bool]]:
    """Messages rebuilt from events, and for each whether it came streamed."""
    out: list[bytes] = []
    streamed: list[bool] = []
    current: bytearray | None = None
    for ev in events:
        if isinstance(ev, Frame):
            assert current is None, "a whole frame inside a streamed message"
            out.append(ev.raw)
            streamed.append(False)
        elif isinstance(ev, StreamStart):
            assert current is None
            assert ev.type == ord("D")
            assert ev.head[:1] == b"D" and struct.unpack("!i", ev.head[1:5])[0] == ev.length + 4
            current = bytearray(ev.head)
            expected_len = ev.length + 5
        else:
            assert isinstance(ev, StreamChunk) and current is not None
            current += ev.data
            assert len(current) <= expected_len
            if ev.last:
                assert len(current) == expected_len
                out.append(bytes(current))
                streamed.append(True)
                current = None
            else:
                assert len(current) < expected_len
    assert current is None, "stream ended inside a message"
    return out, streamed


def feed_all(framer: Framer, chunks: list[bytes], max_pending: int | None = None) -> list[Event]:
    events: list[Event] = []
    for c in chunks:
        events += framer.feed(c)
        if max_pending is not None:
            assert framer.pending <= max_pending
    assert framer.pending == 0
    return events


def test_large_datarow_fed_byte_by_byte_streams_with_bounded_memory() -> None:
    framer = streaming_framer()
    # the framer never holds more than a whole small message (the RowDescription, here)
    events = feed_all(framer, [STREAM[i : i + 1] for i in range(len(STREAM))], max_pending=THRESHOLD + 5)
    messages, streamed = reassemble(events)
    assert messages == EXPECTED
    assert streamed == [False, True, False, True, False, False]
    starts = [e for e in events if isinstance(e, StreamStart)]
    assert [s.length for s in starts] == [len(BIG_ROW) - 5] * 2
    assert [s.head for s in starts] == [BIG_ROW[:5]] * 2  # only the header was held
    lasts = [e for e in events if isinstance(e, StreamChunk) and e.last]
    assert len(lasts) == 2


def test_large_datarow_fed_whole_gives_the_same_bytes() -> None:
    whole, _ = reassemble(feed_all(streaming_framer(), [STREAM]))
    one_by_one, _ = reassemble(feed_all(streaming_framer(), [STREAM[i : i + 1] for i in range(len(STREAM))]))
    assert whole == one_by_one == EXPECTED
    decoded = [be.decode_backend(m[0], m[5:]) for m in whole]
    assert decoded[1] == be.DataRow((b"id-1", BIG_VALUE, None))


def test_large_datarow_streams_when_its_header_arrives_with_part_of_the_body() -> None:
    head = 300
    split = STREAM.index(BIG_ROW) + head
    events = feed_all(streaming_framer(), [STREAM[:split], STREAM[split : split + 7000], STREAM[split + 7000 :]])
    messages, streamed = reassemble(events)
    assert messages == EXPECTED
    assert streamed[1] is True
    first_start = next(e for e in events if isinstance(e, StreamStart))
    assert first_start.head == BIG_ROW[:head]


def test_large_datarow_streams_after_a_split_header() -> None:
    split = STREAM.index(BIG_ROW) + 3  # header cut in the middle
    events = feed_all(streaming_framer(), [STREAM[:split], STREAM[split : split + 100], STREAM[split + 100 :]])
    messages, streamed = reassemble(events)
    assert messages == EXPECTED
    assert streamed[1] is True


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_large_datarow_random_chunks_give_the_same_bytes(sizes: list[int]) -> None:
    chunks, pos, i = [], 0, 0
    while pos < len(STREAM):
        chunks.append(STREAM[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    messages, _ = reassemble(feed_all(streaming_framer(), chunks))
    assert messages == EXPECTED


def test_non_streamable_large_message_is_buffered_whole() -> None:
    framer = Framer(peer="server", stream_threshold=THRESHOLD)
    framer.streamable = frozenset({ord("d")})  # CopyData only
    events = feed_all(framer, [STREAM[i : i + 4096] for i in range(0, len(STREAM), 4096)])
    assert all(isinstance(e, Frame) for e in events)
    assert [e.raw for e in events if isinstance(e, Frame)] == EXPECTED


def test_streamed_message_still_checked_against_max_length() -> None:
    framer = Framer(peer="server", stream_threshold=THRESHOLD, max_length=len(BIG_ROW) - 6)
    framer.streamable = frozenset({ord("D")})
    with pytest.raises(MessageTooLarge):
        framer.feed(BIG_ROW[:5])


def test_message_just_at_the_threshold_is_not_streamed() -> None:
    at = fe.CopyData(b"x" * THRESHOLD).encode()
    over = fe.CopyData(b"x" * (THRESHOLD + 1)).encode()
    framer = Framer(stream_threshold=THRESHOLD)
    framer.streamable = frozenset({ord("d")})
    assert framer.feed(at[:5]) == []
    assert framer.feed(at[5:]) == [Frame(ord("d"), at)]
    assert framer.feed(over[:5]) == [StreamStart(ord("d"), THRESHOLD + 1, over[:5])]
    assert framer.feed(over[5:]) == [StreamChunk(over[5:], True)]
