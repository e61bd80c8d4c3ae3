"""The compiled DataRow loop (``_rowmask.c``) against the Python one it replaces.

Both run the same plan; for any batch of rows they must send the same bytes and count the
same masked values, and refuse the same malformed input. The rest of the suite (the bypass
corpus, the wire tests) runs through the compiled loop, as rowgate does by default."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.errors import MaskingError
from rowgate.masking import rewrite
from rowgate.masking.classes import PiiClass
from rowgate.masking.rewrite import Masker, RowRewriter, Treatment
from rowgate.masking.strategies import STRETCH_AFTER, LabelledPseudonym, mask_value
from rowgate.pgwire import backend as be

KEY = b"compiled-rows-test-key-0123456789"
TYPES = {"text": 25, "varchar": 1043, "int": 23, "json": 114, "jsonb": 3802, "date": 1082, "inet": 869,
         "bytea": 17}
# every kind of the compiled plan: pass (with and without the backstop), constant, cached and
# uncached functions, and label pseudonyms (computed in C)
TREATMENTS: list[Treatment] = [
    None, "scan",
    (PiiClass.EMAIL, "pseudonym"), (PiiClass.PERSON_NAME, "pseudonym"), (PiiClass.ADDRESS, "pseudonym"),
    (PiiClass.SECRET, "pseudonym"), (PiiClass.JWT, "pseudonym"),
    (PiiClass.PERSON_NAME, "redact"), (PiiClass.NATIONAL_ID, "null"), (PiiClass.PHONE, "partial"),
    (PiiClass.NATIONAL_ID, "partial"), (PiiClass.PHONE, "pseudonym"), (PiiClass.NATIONAL_ID, "pseudonym"),
    (PiiClass.EMAIL, "partial"), (PiiClass.PERSON_NAME, "partial"),
    (PiiClass.DATE_OF_BIRTH, "pseudonym"), (PiiClass.IP_ADDRESS, "fake"), (PiiClass.FREE_TEXT, "redact"),
]
_AROUND_STRETCH = [b"s" * k for k in (STRETCH_AFTER - 1, STRETCH_AFTER, STRETCH_AFTER + 1, 64)]
values = st.one_of(
    st.none(), st.just(b""),
    st.sampled_from([b"a@b.example", b"Ann Lee", b"+1-202-555-0101", b"123-45-6789", b"1985-07-04", b"10.1.2.3",
                     b"42", b'{"a": "x@y.example"}', b"plain", "é".encode(), "Zoë Ünal".encode(), b"\xff\xfe",
                     b"\x01{}", *_AROUND_STRETCH]),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
    # phones and ids: separators, extensions, and the whitespace str.strip and \s know
    st.text("0123456789 -+().xXeEtTa\t\n\x0b\x0c\r\x1c\x1f\xa0", max_size=30).map(str.encode),
)


@st.composite
def results(draw: st.DrawFn) -> tuple[list[be.FieldDescription], list[Treatment], list[bytes]]:
    n = draw(st.integers(0, 7))
    columns = [be.FieldDescription(f"c{i}", 0, 0, TYPES[draw(st.sampled_from(sorted(TYPES)))], -1, -1,
                                   draw(st.sampled_from([0, 0, 1]))) for i in range(n)]
    plan = [draw(st.sampled_from(TREATMENTS)) for _ in range(n)]
    rows = draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=1, max_size=20))
    return columns, plan, [be.DataRow(tuple(r)).encode() for r in rows]


def _run(rw: RowRewriter, data: bytes) -> tuple[str, object]:
    try:
        return "sent", rw.rewrite(data)
    except MaskingError as e:
        return "refused", str(e)


def _both(columns: list[be.FieldDescription], plan: list[Treatment]) -> tuple[RowRewriter, RowRewriter]:
    masker = Masker(lambda c: "redact", KEY)
    return (RowRewriter(columns, plan, masker, compiled=True),
            RowRewriter(columns, plan, Masker(lambda c: "redact", KEY), compiled=False))


def test_the_compiled_loop_is_built() -> None:
    assert rewrite.BUILT, (
        "rowgate.masking._rowmask did not build: masking falls back to the Python loop, several times slower. "
        "It needs a C compiler, the Python headers and OpenSSL's (libssl-dev); `pip install -e .` shows why it failed")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result=results())
def test_both_loops_send_the_same_bytes_and_count_the_same(
    result: tuple[list[be.FieldDescription], list[Treatment], list[bytes]],
) -> None:
    columns, plan, rows = result
    compiled, python = _both(columns, plan)
    data = b"".join(rows)
    assert _run(compiled, data) == _run(python, data)
    assert compiled.counts == python.counts
    # and again, row by row: the caches now hold these values
    for row in rows:
        assert _run(compiled, row) == _run(python, row)
    assert compiled.counts == python.counts


@st.composite
def damaged(draw: st.DrawFn) -> tuple[list[be.FieldDescription], list[Treatment], bytes]:
    columns, plan, rows = draw(results())
    data = bytearray(b"".join(rows))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "length", "count", "size", "insert"]))
        if how == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif how == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif how == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how in ("length", "count", "size") and len(data) >= 11:
            at, fmt = {"length": (1, "!i"), "count": (5, "!h"), "size": (7, "!i")}[how]
            big = 2**31 - 1 if fmt == "!i" else 2**15 - 1
            struct.pack_into(fmt, data, at, draw(st.integers(-big - 1, big)))
    return columns, plan, bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=damaged())
def test_damaged_rows_are_refused_alike_or_read_alike(
    case: tuple[list[be.FieldDescription], list[Treatment], bytes],
) -> None:
    columns, plan, data = case
    compiled, python = _both(columns, plan)
    assert _run(compiled, data) == _run(python, data)


@settings(max_examples=1500, deadline=None)
@given(value=st.one_of(
    st.binary(max_size=40),
    st.text("ab19 .-/():\t\n@$éeyJBEGIN-+_KeYtOkEnPaSsAuThPwDsecret", max_size=40).map(str.encode),
    st.text("aZ09+/_-", min_size=15, max_size=30).map(str.encode),
))
def test_the_compiled_prefilter_is_the_python_one(value: bytes) -> None:
    """The compiled loop skips a content-scanned value its pre-filter rejects: it must say
    yes wherever the Python one does, or a finding would pass unscanned."""
    assert rewrite._rowmask is not None
    assert rewrite._rowmask.suspicious(value) == rewrite.suspicious(value)


def test_a_cache_that_fills_is_given_up_alike() -> None:
    """Values that never repeat fill a column's cache; both loops then stop caching it and
    still mask every value, and a later repeat is masked the same."""
    columns = [be.FieldDescription("phone", 0, 0, 25, -1, -1, 0), be.FieldDescription("city", 0, 0, 25, -1, -1, 0)]
    plan: list[Treatment] = [(PiiClass.PHONE, "partial"), None]
    compiled, python = _both(columns, plan)
    phones = [f"+1-202-{i:07d}" for i in range(60_000)]
    batch = b"".join(be.DataRow((p.encode(), b"Berlin")).encode() for p in phones)
    out = compiled.rewrite(batch)
    assert out is not None and out == python.rewrite(batch)
    assert compiled.counts == python.counts == {"phone": 60_000}
    assert b"202-0001234" not in out
    again = be.DataRow((phones[7].encode(), b"Berlin")).encode()
    assert compiled.rewrite(again) == python.rewrite(again)


_SHAPED_TEXT = "0123456789 -+().@xXeEtTab\t\n\x0b\x0c\r\x1c\x1f\xa0"


@settings(max_examples=800, deadline=None)
@given(case=st.sampled_from([(PiiClass.PHONE, "partial"), (PiiClass.NATIONAL_ID, "partial"),
                             (PiiClass.EMAIL, "partial"), (PiiClass.PERSON_NAME, "partial"),
                             (PiiClass.PHONE, "pseudonym"), (PiiClass.NATIONAL_ID, "pseudonym")]),
       value=st.one_of(st.text(_SHAPED_TEXT, max_size=30), st.text("0123456789-AZaz", min_size=240, max_size=260),
                       st.text("0111-", max_size=12), st.emails(), st.text("ab @.\t", max_size=12)))
def test_values_masked_in_c_are_the_python_ones_for_any_text(case: tuple[PiiClass, str], value: str) -> None:
    cls, strategy = case
    columns = [be.FieldDescription("v", 0, 0, 25, -1, -1, 0)]
    compiled, python = _both(columns, [(cls, strategy)])
    row = be.DataRow((value.encode(),)).encode()
    assert compiled.rewrite(row) == python.rewrite(row)
    assert compiled.counts == python.counts


@pytest.mark.parametrize("phone", ["+1-202-555-0101", " (202) 555-0101 x123 ", "202 555 0101 ext. 7", "0101",
                                   "+44 20 7946 0958 EXT9", "12x3456789", "555-0101\x1c", "x1 202 555 0101"])
def test_partial_phones_in_c_are_the_python_ones(phone: str) -> None:
    columns = [be.FieldDescription("phone", 0, 0, 25, -1, -1, 0)]
    compiled, python = _both(columns, [(PiiClass.PHONE, "partial")])
    row = be.DataRow((phone.encode(),)).encode()
    out = compiled.rewrite(row)
    assert out == python.rewrite(row)
    masked = mask_value(PiiClass.PHONE, phone, "partial", KEY)
    assert out is not None and masked is not None and out.endswith(masked.encode())


def test_label_pseudonyms_in_c_are_the_documented_hmac() -> None:
    columns = [be.FieldDescription("email", 0, 0, 25, -1, -1, 0)]
    compiled, _ = _both(columns, [(PiiClass.EMAIL, "pseudonym")])
    emails = ["a@b.example", "x" * STRETCH_AFTER, "y" * (STRETCH_AFTER + 1), "long.name@a-long-domain.example.org"]
    out = compiled.rewrite(b"".join(be.DataRow((e.encode(),)).encode() for e in emails))
    assert out is not None
    expected = [mask_value(PiiClass.EMAIL, e, "pseudonym", KEY) for e in emails]
    got, pos = [], 0
    while pos < len(out):
        (length,) = struct.unpack_from("!i", out, pos + 1)
        msg = be.decode_backend(out[pos], out[pos + 5 : pos + 1 + length])
        assert isinstance(msg, be.DataRow)
        got.append(msg.values[0])
        pos += 1 + length
    assert got == [e.encode() for e in expected if e is not None]


def test_a_rewriter_that_failed_to_initialise_refuses_to_rewrite() -> None:
    assert rewrite._rowmask is not None
    rw = rewrite._rowmask.Rewriter.__new__(rewrite._rowmask.Rewriter)
    for bad in ([(3, None)], [(1, b"xy")], [(2, len, None)], [(4, len, b"p", b"short", b"x" * 64, b"", b"", 6, 28)],
                [(9,)], [(0,), "not a tuple"]):
        with pytest.raises((TypeError, ValueError)):
            rw.__init__(bad, object(), 10)  # type: ignore[misc]
        with pytest.raises(TypeError, match="not initialised"):
            rw.rewrite(b"D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01x")


def test_a_spec_that_runs_code_while_parsed_cannot_free_what_is_read() -> None:
    """Parsing a count calls its __index__: emptying the caller's list there must not free
    the specs being read."""
    assert rewrite._rowmask is not None
    columns: list[tuple[object, ...]] = []

    class Sneaky:
        def __index__(self) -> int:
            columns.clear()
            return 6

    fn = LabelledPseudonym(PiiClass.EMAIL, KEY)
    columns.append((4, fn, fn.prefix, fn.inner_pad, fn.outer_pad, fn.head, fn.tail, Sneaky(), STRETCH_AFTER))
    rw = rewrite._rowmask.Rewriter(columns, object(), 10)
    out, rows, masked = rw.rewrite(be.DataRow((b"a@b.example",)).encode())
    assert rows == 1 and masked == [1] and out is not None


@pytest.mark.parametrize("bad", [
    b"D\x00\x00\x00\x0a\x00\x01\x7f\xff\xff\xff",  # a value claiming 2 GB
    b"D\x7f\xff\xff\xff\x00\x01\x00\x00\x00\x01x",  # a row claiming 2 GB
    b"D\xff\xff\xff\xf0\x00\x01\x00\x00\x00\x01x",  # a negative row length
    b"D\x00\x00\x00\x0b\x00\x01\x80\x00\x00\x00x",  # the most negative value length
    b"D\x00\x00\x00\x0b\xff\xff\x00\x00\x00\x01x",  # -1 values
])
def test_lengths_past_the_row_are_refused(bad: bytes) -> None:
    columns = [be.FieldDescription("email", 0, 0, 25, -1, -1, 0)]
    compiled, _ = _both(columns, [(PiiClass.EMAIL, "pseudonym")])
    with pytest.raises(MaskingError):
        compiled.rewrite(bad)
