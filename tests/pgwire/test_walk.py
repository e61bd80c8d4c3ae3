"""The compiled walks of ``Framer.split`` (``_walk.c``) against their Python versions: for any
bytes, from any offset, both stop at the same place, and the framer splits any stream, cut
anywhere, into the same parts with either."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.errors import RowgateError
from rowgate.pgwire import framing
from rowgate.pgwire.framing import Framer

try:
    from rowgate.pgwire import _walk as compiled
except ImportError:  # test_walk_is_built fails, saying so; the comparisons cannot run
    compiled = None  # type: ignore[assignment]
needs_c = pytest.mark.skipif(compiled is None, reason="rowgate.pgwire._walk was not built")
MAX = 1000


def test_walk_is_built() -> None:
    assert compiled is not None, (
        "rowgate.pgwire._walk did not build: the framer runs its Python walks (slower); `pip install -e .` shows why")
    assert framing._skip is compiled.skip and framing._run_end is compiled.run_end


def message(t: int, body: bytes, length: int | None = None) -> bytes:
    return bytes([t]) + struct.pack("!i", len(body) + 4 if length is None else length) + body


# whole messages, mostly of a few types, some with lengths that lie (negative, short, huge,
# past the end), and loose bytes
pieces = st.one_of(
    st.builds(message, st.sampled_from(b"DDDCZNd\x00"), st.binary(max_size=30)),
    st.builds(message, st.sampled_from(b"DC"), st.binary(max_size=8),
              st.sampled_from([-1, 0, 3, 4, MAX + 4, MAX + 5, 2**31 - 1, -(2**31), 40])),
    st.binary(max_size=6),
)
streams = st.lists(pieces, max_size=30).map(b"".join)
wanted_sets = st.sets(st.sampled_from(b"DCZNd")).map(frozenset)


@needs_c
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams, wanted=wanted_sets, at=st.integers(0, 400), t=st.sampled_from(b"DCZ"))
def test_both_walks_stop_at_the_same_offset(data: bytes, wanted: frozenset[int], at: int, t: int) -> None:
    pos = min(at, len(data))
    table = framing._table(wanted)
    assert compiled.skip(data, pos, table, MAX) == framing._skip_py(data, pos, table, MAX)
    assert compiled.run_end(data, pos, t, MAX) == framing._run_end_py(data, pos, t, MAX)


def _split_all(stream: bytes, sizes: list[int], wanted: frozenset[int]) -> list[object]:
    framer = Framer(peer="server", max_length=MAX)
    out: list[object] = []
    pos = i = 0
    try:
        while pos < len(stream):
            chunk = stream[pos : pos + sizes[i % len(sizes)]]
            pos += len(chunk)
            i += 1
            out += [(type(p).__name__, p.type, p.raw) if isinstance(p, framing.Frame) else p
                    for p in framer.split(chunk, wanted, frozenset(b"D") & wanted)]
    except RowgateError as e:
        out.append(("refused", type(e).__name__, str(e)))
    return out


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams, wanted=wanted_sets, sizes=st.lists(st.integers(1, 80), min_size=1, max_size=5))
def test_the_framer_splits_alike_with_either_walk(data: bytes, wanted: frozenset[int], sizes: list[int]) -> None:
    with_c = _split_all(data, sizes, wanted)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(framing, "_skip", framing._skip_py)
        m.setattr(framing, "_run_end", framing._run_end_py)
        assert _split_all(data, sizes, wanted) == with_c


@needs_c
@pytest.mark.parametrize("call", [
    lambda: compiled.skip(b"D", 2, bytes(256), MAX),  # past the end
    lambda: compiled.skip(b"D", -1, bytes(256), MAX),
    lambda: compiled.skip(b"D", 0, b"short", MAX),  # not a table of 256
    lambda: compiled.run_end("text", 0, 68, MAX),  # not bytes
])
def test_bad_arguments_raise_instead_of_reading_out_of_bounds(call: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        call()  # type: ignore[operator]
