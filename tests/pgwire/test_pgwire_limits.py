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
from rowgate.pgwire.framing import DEFAULT_MAX_STARTUP, Frame, Framer

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
WANTED = frozenset({ord("Z"), ord("S")})  # what the relay tracks: small messages


def split_all(framer: Framer, chunks: list[bytes], wanted: frozenset[int] = WANTED, max_pending: int | None = None):
    """Split every chunk; return (all bytes emitted in order, the whole frames)."""
    emitted = bytearray()
    frames: list[Frame] = []
    for c in chunks:
        for part in framer.split(c, wanted):
            if isinstance(part, Frame):
                frames.append(part)
                emitted += part.raw
            else:
                emitted += part
        if max_pending is not None:
            assert framer.pending <= max_pending
    assert framer.pending == 0 and framer.at_boundary
    return bytes(emitted), frames


def test_large_datarow_fed_byte_by_byte_passes_through_with_bounded_memory() -> None:
    # an unwanted message is never held: at most a cut header or an unfinished small
    # wanted message (ReadyForQuery is 6 bytes) waits
    emitted, frames = split_all(Framer(peer="server"), [STREAM[i : i + 1] for i in range(len(STREAM))], max_pending=5)
    assert emitted == STREAM
    assert [f.raw for f in frames] == [EXPECTED[-1]]


def test_large_datarow_whole_and_byte_by_byte_give_the_same_bytes() -> None:
    whole, _ = split_all(Framer(peer="server"), [STREAM])
    one_by_one, _ = split_all(Framer(peer="server"), [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert whole == one_by_one == STREAM


def test_wanted_large_message_is_held_back_until_whole() -> None:
    framer = Framer(peer="server")
    cut = STREAM.index(BIG_ROW) + 300
    first = framer.split(STREAM[:cut], frozenset({ord("D")}))
    # the bytes before the big row went on; the partial big row did not
    assert b"".join(p.raw if isinstance(p, Frame) else p for p in first) == STREAM[: STREAM.index(BIG_ROW)]
    assert framer.pending == 300
    _, frames = split_all(framer, [STREAM[cut:]], frozenset({ord("D")}))
    assert frames[0].raw == BIG_ROW


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=20),
    wanted=st.sampled_from([frozenset(), WANTED, frozenset({ord("D")}), frozenset(b"TDCZ")]),
)
def test_split_random_chunks_give_the_same_bytes_and_frames(sizes: list[int], wanted: frozenset[int]) -> None:
    chunks, pos, i = [], 0, 0
    while pos < len(STREAM):
        chunks.append(STREAM[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    emitted, frames = split_all(Framer(peer="server"), chunks, wanted)
    assert emitted == STREAM
    assert [f.raw for f in frames] == [m for m in EXPECTED if m[0] in wanted]


def test_passed_through_message_still_checked_against_max_length() -> None:
    framer = Framer(peer="server", max_length=len(BIG_ROW) - 6)
    with pytest.raises(MessageTooLarge):
        framer.split(BIG_ROW[:5], WANTED)
