"""Framer.split's batches: runs of whole messages of one type handed over as one ``Batch``
(how a masked session's rows reach the masking stage), with nothing lost, invented,
reordered or handed over before it is whole."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.errors import MessageTooLarge, ProtocolViolation
from rowgate.pgwire.framing import Batch, Frame, Framer

BATCH = frozenset(b"D")
WANTED = frozenset(b"DZC")


def message(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


def messages_of(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        (length,) = struct.unpack_from("!i", raw, pos + 1)
        out.append(raw[pos : pos + 1 + length])
        pos += 1 + length
    assert pos == len(raw)
    return out


streams = st.lists(
    st.tuples(st.sampled_from([b"D", b"D", b"D", b"C", b"Z", b"N", b"d"]), st.binary(max_size=40)),
    min_size=1,
    max_size=40,
).map(lambda ms: [message(t, body) for t, body in ms])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=streams, data=st.data())
def test_batches_hold_whole_runs_and_the_stream_stays_intact(msgs: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(msgs)
    sizes = data.draw(st.lists(st.integers(1, 120), min_size=1, max_size=6))
    framer = Framer(peer="server")
    emitted = bytearray()
    handed: list[bytes] = []  # every wanted message, in order, as the caller saw it
    pos = i = 0
    while pos < len(stream):
        chunk = stream[pos : pos + sizes[i % len(sizes)]]
        pos += len(chunk)
        i += 1
        for part in framer.split(chunk, WANTED, BATCH):
            if isinstance(part, Frame):
                assert part.type in WANTED
                assert (type(part) is Batch) == (part.type in BATCH)  # a batch type never comes alone
                inner = messages_of(part.raw)
                assert inner and all(m[0] == part.type for m in inner)
                if type(part) is Frame:
                    assert len(inner) == 1
                handed += inner
                emitted += part.raw
            else:
                emitted += part
        assert bytes(emitted) + bytes(framer._buf) == stream[:pos]
    assert bytes(emitted) == stream and framer.at_boundary
    assert handed == [m for m in msgs if m[0] in WANTED]


def test_a_run_read_at_once_is_one_batch() -> None:
    rows = [message(b"D", struct.pack("!hi", 1, 3) + b"abc") for _ in range(100)]
    stream = message(b"T", b"x") + b"".join(rows) + message(b"C", b"SELECT 100\0")
    parts = Framer(peer="server").split(stream, WANTED, BATCH)
    batches = [p for p in parts if type(p) is Batch]
    assert len(batches) == 1 and batches[0].raw == b"".join(rows)


def test_a_run_cut_by_a_read_ends_its_batch_before_the_unfinished_row() -> None:
    rows = [message(b"D", bytes([k]) * 10) for k in range(5)]
    stream = b"".join(rows)
    framer = Framer(peer="server")
    first = framer.split(stream[:-3], WANTED, BATCH)
    assert [p.raw for p in first if isinstance(p, Frame)] == [b"".join(rows[:4])]
    assert framer.pending == len(rows[4]) - 3
    second = framer.split(stream[-3:], WANTED, BATCH)
    assert len(second) == 1 and type(second[0]) is Batch and second[0].raw == rows[4]


@pytest.mark.parametrize("bad,error", [(b"D" + struct.pack("!i", 2), ProtocolViolation),
                                       (b"D" + struct.pack("!i", 1 << 30), MessageTooLarge)])
def test_a_bad_length_inside_a_run_still_raises(bad: bytes, error: type[Exception]) -> None:
    framer = Framer(peer="server", max_length=1 << 20)
    with pytest.raises(error):
        framer.split(message(b"D", b"ok") * 3 + bad + b"\0" * 8, WANTED, BATCH)
