"""The masked-results hot path gives exactly what the plain definitions give: batches of rows
are rewritten as the rows one by one would be, the per-column maskers agree with
``mask_value``, and pseudonyms are the documented HMAC-SHA256 of the value (stable across
versions), whatever the key's length."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.errors import MaskingError
from rowgate.masking.classes import PiiClass
from rowgate.masking.rewrite import Masker, RowRewriter, Treatment
from rowgate.masking.strategies import STRATEGIES, mask_value, utf8_masker, value_masker
from rowgate.pgwire import backend as be

KEYS = [b"", b"k", b"k" * 32, b"k" * 64, b"k" * 65, bytes(range(200))]


def reference_email_pseudonym(value: str, key: bytes) -> str:
    """The documented derivation, written with the standard library's HMAC."""
    mac = hmac.digest(key, b"pseudonym\0email\0" + b"0\0" + value.encode(), "sha256")
    if len(value) + 4 > 32:
        mac = hashlib.shake_256(mac).digest(len(value) + 4)
    return f"u_{mac.hex()[:12]}@pseudo.invalid"


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", ["a@b.example", "user123@example-mail.com", "x" * 28, "y" * 29, "é" * 20,
                                   "long.address.of.somebody@a-very-long-domain.example.org"])
def test_pseudonyms_are_hmac_sha256_for_any_key(key: bytes, value: str) -> None:
    expected = reference_email_pseudonym(value, key)
    assert mask_value(PiiClass.EMAIL, value, "pseudonym", key) == expected
    assert value_masker(PiiClass.EMAIL, "pseudonym", key)(value) == expected
    fast = utf8_masker(PiiClass.EMAIL, "pseudonym", key)
    assert fast is not None and fast(value.encode()) == expected.encode()


texts = st.one_of(st.text(max_size=40), st.emails(), st.text("abc@.-+ 0123456789", max_size=40))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(list(PiiClass)), strategy=st.sampled_from(STRATEGIES), value=texts,
       key=st.sampled_from(KEYS))
def test_per_column_maskers_agree_with_mask_value(cls: PiiClass, strategy: str, value: str, key: bytes) -> None:
    expected = mask_value(cls, value, strategy, key)
    assert value_masker(cls, strategy, key)(value) == expected
    fast = utf8_masker(cls, strategy, key)
    if fast is not None:
        assert fast(value.encode()) == (None if expected is None else expected.encode())


def test_the_utf8_masker_refuses_invalid_utf8() -> None:
    fast = utf8_masker(PiiClass.PERSON_NAME, "pseudonym", b"k")
    assert fast is not None
    with pytest.raises(UnicodeDecodeError):
        fast(b"\xff\xfe Garcia")


# --- rows ----------------------------------------------------------------------------------

TYPES = {"text": 25, "int": 23, "json": 114, "date": 1082, "inet": 869, "numeric": 1700}
TREATMENTS: list[Treatment] = [None, "scan", (PiiClass.EMAIL, "pseudonym"), (PiiClass.PERSON_NAME, "redact"),
                               (PiiClass.PHONE, "partial"), (PiiClass.NATIONAL_ID, "null"),
                               (PiiClass.DATE_OF_BIRTH, "pseudonym"), (PiiClass.IP_ADDRESS, "fake")]
values = st.one_of(st.none(), st.just(b""), st.sampled_from([b"a@b.example", b"Ann Lee", b"+1-202-555-0101",
                                                             b"123-45-6789", b"1985-07-04", b"10.1.2.3", b"42",
                                                             b'{"a": "x@y.example"}', b"plain", "é".encode()]),
                   st.text(max_size=12).map(str.encode))


@st.composite
def results(draw: st.DrawFn) -> tuple[list[be.FieldDescription], list[Treatment], list[bytes]]:
    n = draw(st.integers(1, 6))
    columns = [be.FieldDescription(f"c{i}", 0, 0, TYPES[draw(st.sampled_from(sorted(TYPES)))], -1, -1, 0)
               for i in range(n)]
    plan = [draw(st.sampled_from(TREATMENTS)) for _ in range(n)]
    rows = draw(st.lists(st.lists(values, min_size=n, max_size=n), min_size=1, max_size=30))
    return columns, plan, [be.DataRow(tuple(r)).encode() for r in rows]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result=results())
def test_a_batch_is_rewritten_as_its_rows_one_by_one(
    result: tuple[list[be.FieldDescription], list[Treatment], list[bytes]],
) -> None:
    columns, plan, rows = result
    masker = Masker(lambda c: "redact", b"k" * 32)
    one_by_one = RowRewriter(columns, plan, masker)
    expected = []
    for raw in rows:
        out = one_by_one.rewrite(raw)
        expected.append(raw if out is None else out)
    batched = RowRewriter(columns, plan, masker)
    out = batched.rewrite(b"".join(rows))
    assert (b"".join(rows) if out is None else out) == b"".join(expected)
    assert batched.counts == one_by_one.counts
    assert len(_rows(out or b"".join(rows))) == len(rows)  # whole, well-formed DataRows


def test_any_bad_row_in_a_batch_fails_the_whole_batch() -> None:
    columns = [be.FieldDescription("email", 0, 0, 25, -1, -1, 0), be.FieldDescription("n", 0, 0, 23, -1, -1, 0)]
    rw = RowRewriter(columns, [(PiiClass.EMAIL, "pseudonym"), None], Masker(lambda c: "redact", b"k" * 32))
    good = be.DataRow((b"a@b.example", b"1")).encode()
    bad_rows = [
        good[:-1],  # cut short
        be.DataRow((b"a@b.example",)).encode(),  # a value missing
        be.DataRow((b"\xff\xfe@b.example", b"1")).encode(),  # not UTF-8
        b"C" + good[1:],  # not a DataRow
        good[:7] + struct.pack("!i", -2) + good[11:],  # a negative length other than NULL's
    ]
    for bad in bad_rows:
        with pytest.raises(MaskingError):
            rw.rewrite(good * 3 + bad + good)


def test_values_that_never_repeat_stay_masked_past_the_cache() -> None:
    """A column whose values do not repeat stops being cached; every value is still masked."""
    columns = [be.FieldDescription("email", 0, 0, 25, -1, -1, 0), be.FieldDescription("city", 0, 0, 25, -1, -1, 0)]
    key = b"k" * 32
    rw = RowRewriter(columns, [(PiiClass.EMAIL, "pseudonym"), None], Masker(lambda c: "redact", key))
    emails = [f"user{i}@example-mail.com" for i in range(60_000)]
    batch = b"".join(be.DataRow((e.encode(), b"Berlin")).encode() for e in emails)
    out = rw.rewrite(batch)
    assert out is not None
    masked = [m.values[0] for m in _rows(out)]
    expected = [mask_value(PiiClass.EMAIL, e, "pseudonym", key) for e in emails]
    assert masked == [e.encode() for e in expected if e is not None]
    assert rw.counts == {"email": 60_000}
    again = rw.rewrite(be.DataRow((emails[0].encode(), b"Berlin")).encode())
    assert again is not None and _rows(again)[0].values[0] == masked[0]


def _rows(raw: bytes) -> list[be.DataRow]:
    out, pos = [], 0
    while pos < len(raw):
        (length,) = struct.unpack_from("!i", raw, pos + 1)
        row = be.decode_backend(raw[pos], raw[pos + 5 : pos + 1 + length])
        assert isinstance(row, be.DataRow)
        out.append(row)
        pos += 1 + length
    return out
