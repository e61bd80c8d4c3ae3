"""Rewriting result rows for a masked identity, sans-IO.

A result's plan says, per output column, whether its values pass, are masked as one
class, or are scanned by the content detectors. ``RowRewriter`` compiles that plan
once per result into one small function per column (``typed`` has the masked form of
each type) and then rewrites the DataRows in runs, as the relay read them: columns that
pass are never decoded and keep their exact bytes, and rows that do not change are
never copied; a masked value stays valid for the column's type and format, or becomes
NULL where it cannot (binary values of non-text types, bytea, records, ...). Anything
unexpected raises ``MaskingError``: the stage then closes the connection rather than
send the rows.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import struct
from collections.abc import Callable, Sequence
from typing import Literal

from rowgate.errors import MaskingError
from rowgate.masking.classes import CustomDetector, PiiClass
from rowgate.masking.strategies import STRETCH_AFTER, LabelledPseudonym, Partial, Reshaped
from rowgate.masking.typed import (
    DATE,
    JSON,
    JSONB,
    KNOWN_OTHER,
    NOT_TEXT,
    NUMBER_TYPES,
    TEXT_TYPES,
    TEXTUAL_TYPES,
    decode,
    json_text,
    not_utf8,
    text_masker,
)
from rowgate.masking.typed import ValueMasker as ValueMasker  # re-exported: copyrows takes one too
from rowgate.pgwire.backend import FieldDescription

try:
    from rowgate.masking import _rowmask
except ImportError:  # built without a C compiler or OpenSSL headers: the Python loop below
    _rowmask = None  # type: ignore[assignment]

# whether RowRewriter runs its compiled loop (``_rowmask.c``) by default; ROWGATE_PURE_PYTHON=1
# turns it off (both give the same bytes: tests/masking/test_compiled_rows.py)
BUILT = _rowmask is not None
COMPILED = BUILT and os.environ.get("ROWGATE_PURE_PYTHON", "") in ("", "0")

# per output column: None passes (still under the content backstop), "scan" masks what
# the content detectors find, (class, strategy) masks the whole value
Treatment = tuple[PiiClass, str] | Literal["scan"] | None

_I32 = struct.Struct("!i")

# a superset of the detectors' pre-filter (``detectors.suspicious``), over raw bytes, in three
# cheap steps: trigger characters and digit runs; key words; long token-like runs. Values it
# cannot match are never decoded; any non-ASCII byte goes to the full scan, which reads
# Unicode digits and spaces
_TRIGGER = re.compile(rb"[@$:\x80-\xff]|\d[\d\s().\-/:]*\d|eyJ|-----BEGIN").search
_KEYWORD = re.compile(rb"pass|pwd|secret|token|key|auth").search
_LONG_RUN = re.compile(rb"[A-Za-z0-9+/_\-]{20}").search


def suspicious(value: bytes) -> bool:
    return (_TRIGGER(value) is not None or _KEYWORD(value.lower()) is not None
            or (len(value) >= 20 and _LONG_RUN(value) is not None))


class Masker:
    """The ValueMasker of one masking profile (the compiled columns cache its results)."""

    def __init__(
        self, strategy_for: Callable[[PiiClass], str], key: bytes, detectors: Sequence[CustomDetector] = ()
    ) -> None:
        from rowgate.masking import detectors as det
        from rowgate.masking import strategies

        self._strategy_for = strategy_for
        self._key = key
        self._detectors = tuple(detectors)
        self.custom = bool(self._detectors)
        self._value_masker = strategies.value_masker
        self._utf8_masker = strategies.utf8_masker
        self._mask_findings = strategies.mask_findings
        self._scan_text = det.scan_text
        self._maskers: dict[tuple[PiiClass, str], Callable[[str], str | None]] = {}

    def mask(self, cls: PiiClass, text: str, strategy: str) -> str | None:
        return self.masking(cls, strategy)(text)

    def masking(self, cls: PiiClass, strategy: str) -> Callable[[str], str | None]:
        fn = self._maskers.get((cls, strategy))
        if fn is None:
            fn = self._maskers[cls, strategy] = self._value_masker(cls, strategy, self._key)
        return fn

    def masking_utf8(self, cls: PiiClass, strategy: str) -> Callable[[bytes], bytes] | None:
        return self._utf8_masker(cls, strategy, self._key)

    def scan(self, text: str) -> str:
        findings = self._scan_text(text, self._detectors)
        return self._mask_findings(text, findings, self._strategy_for, self._key) if findings else text

    def digits(self, text: str) -> str:
        mac = hmac.digest(self._key, b"digits:" + text.encode(), "sha256")
        n = int.from_bytes(mac, "big")
        out = []
        for _ in range(len(text)):
            n, d = divmod(n, 10)
            out.append(str(d))
        return "".join(out)


# --- columns ------------------------------------------------------------------------

ValueFn = Callable[[bytes], bytes | None]  # returns its argument (same object) when unchanged

_CACHE_LIMIT = 50_000  # masked values remembered per column (results repeat values: keys, groups)
_SAME = object()  # cached: the value passes unchanged


def _cached(fn: ValueFn) -> ValueFn:
    cache: dict[bytes, object] = {}

    def cached(value: bytes) -> bytes | None:
        out = cache.get(value, cache)
        if out is cache:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            try:
                new = fn(value)
            except UnicodeDecodeError as e:
                raise not_utf8() from e
            cache[value] = _SAME if new is value else new
            return new
        if out is _SAME:
            return value
        assert out is None or isinstance(out, bytes)
        return out

    return cached


def _constant(col: FieldDescription, cls: PiiClass, strategy: str, masker: ValueMasker) -> bytes | bool | None:
    """The one masked form every value of a text column gets (redaction), or False."""
    if strategy not in ("redact", "null") or cls in (PiiClass.DATE_OF_BIRTH, PiiClass.IP_ADDRESS):
        return False
    if col.type_oid not in TEXT_TYPES and (col.format == 1 or col.type_oid in NOT_TEXT):
        return False
    first, second = masker.mask(cls, "rowgate-probe-1", strategy), masker.mask(cls, "x", strategy)
    if first != second:
        return False
    return None if first is None else first.encode()


def _uncached_mask_fn(col: FieldDescription, cls: PiiClass, strategy: str, masker: ValueMasker) -> ValueFn:
    oid = col.type_oid
    if col.format == 1:
        if oid in TEXT_TYPES or oid == JSON:
            oid = 25 if oid != JSON else JSON
        elif oid == JSONB:
            def jsonb(value: bytes) -> bytes | None:
                if value[:1] != b"\x01":
                    return None
                out = json_text(decode(value[1:]), cls, strategy, masker)
                return None if out is None else b"\x01" + out.encode()
            return jsonb
        else:
            return lambda value: None  # no masked form of this binary value: NULL
    if (oid in TEXT_TYPES or oid not in NOT_TEXT) and (on_bytes := masker.masking_utf8(cls, strategy)) is not None:
        return on_bytes  # invalid UTF-8 raises UnicodeDecodeError: RowRewriter fails with not_utf8
    text_fn = text_masker(oid, cls, strategy, masker)

    def fn(value: bytes) -> bytes | None:
        out = text_fn(decode(value))
        return None if out is None else out.encode()

    return fn


class _Scan:
    """Content scanning of a column's values: findings masked in place in text, NULL where a
    finding cannot be masked inside the type. ``prefiltered``: values ``suspicious`` rejects
    pass unread (the compiled loop applies the same pre-filter before calling)."""

    __slots__ = ("_in_place", "_is_json", "_masker", "_textual", "prefiltered")

    def __init__(self, masker: ValueMasker, prefiltered: bool, textual: bool, in_place: bool, is_json: bool) -> None:
        self._masker, self.prefiltered = masker, prefiltered
        self._textual, self._in_place, self._is_json = textual, in_place, is_json

    def __call__(self, value: bytes) -> bytes | None:
        if self.prefiltered and not suspicious(value):
            return value
        if not self._textual:  # binary of another type: look at its bytes, NULL it on any finding
            text = value.decode("latin-1")
            return value if self._masker.scan(text) is text else None
        text = decode(value)
        out = self._masker.scan(text)
        if out is text:
            return value
        if self._is_json:
            try:
                json.loads(out)
            except ValueError:
                return None
            return out.encode()
        return out.encode() if self._in_place else None


def _scan_fn(col: FieldDescription, masker: ValueMasker, prefilter: bool) -> _Scan | None:
    """The content scanning of a column; None: the column cannot hold text."""
    oid, binary = col.type_oid, col.format == 1
    textual = oid in TEXT_TYPES or oid == JSON or (not binary and oid not in NUMBER_TYPES and oid != DATE)
    if prefilter and not (textual and (oid in TEXTUAL_TYPES or oid not in KNOWN_OTHER)):
        return None
    in_place = oid in TEXT_TYPES or oid not in KNOWN_OTHER | NUMBER_TYPES | {DATE}
    is_json = oid in (JSON, JSONB) and not (binary and oid == JSONB)
    return _Scan(masker, prefilter and not masker.custom, textual, in_place, is_json)


# --- rows ---------------------------------------------------------------------------

_ROW_HEADER = struct.Struct("!ih")  # after the type byte: message length, number of values
_OUT_HEADER = struct.Struct("!ci")
_NULL = b"\xff\xff\xff\xff"
_D = ord("D")
# how a column's values are treated: passed, replaced by a constant, mapped by a function
# whose results are cached, or by one whose are not (they did not repeat)
_PASS, _CONSTANT, _CACHED, _UNCACHED = 0, 1, 2, 3
# the compiled loop only: a label pseudonym (HMAC-SHA256 in C), a partial email, name, phone or
# national id, a pseudonymised phone or national id
_LABEL, _PARTIAL, _RESHAPE = 4, 5, 6
# (index, treatment, constant (with its length), its length, the cache, the function)
_Column = tuple[int, int, bytes, int, dict[bytes, object], ValueFn]


def _malformed() -> MaskingError:
    return MaskingError("malformed DataRow")


def _never(value: bytes) -> bytes | None:
    raise AssertionError("a column without a function")


def _always(constant: bytes | None) -> ValueFn:
    return lambda value: constant


class RowRewriter:
    """The compiled plan of one result: ``rewrite`` its DataRows, many at a time."""

    __slots__ = ("_cols", "_compiled", "_constants", "_n", "_rows", "counts", "fns", "names")

    def __init__(
        self,
        columns: Sequence[FieldDescription],
        treatments: Sequence[Treatment],
        masker: ValueMasker,
        *,
        backstop: bool = True,
        counts: dict[str, int] | None = None,
        compiled: bool | None = None,
    ) -> None:
        if len(columns) != len(treatments):
            raise MaskingError("the masking plan does not match the result's columns")
        self.names = tuple(c.name for c in columns)
        self.counts: dict[str, int] = {} if counts is None else counts  # output column -> values masked
        fns: list[tuple[ValueFn | None, str]] = []
        self._cols: list[_Column] = []
        for i, (col, t) in enumerate(zip(columns, treatments, strict=True)):
            fn: ValueFn | None = None
            if t is None:
                fn = _scan_fn(col, masker, prefilter=True) if backstop else None
            elif t == "scan":
                fn = _scan_fn(col, masker, prefilter=False)
            elif (constant := _constant(col, t[0], t[1], masker)) is not False:
                assert not isinstance(constant, bool)
                fns.append((_always(constant), col.name))
                with_length = _NULL if constant is None else _I32.pack(len(constant)) + constant
                self._cols.append((i, _CONSTANT, with_length, 0 if constant is None else len(constant), {}, _never))
                continue
            else:
                fn = _uncached_mask_fn(col, t[0], t[1], masker)
            fns.append((_cached(fn) if fn is not None else None, col.name))
            self._cols.append((i, _PASS, b"", 0, {}, _never) if fn is None else (i, _CACHED, b"", 0, {}, fn))
        self.fns = tuple(fns)  # per column, for COPY rows (``copyrows``)
        self._n = len(self._cols)
        self._constants = tuple(c[0] for c in self._cols if c[1] == _CONSTANT)
        self._rows = 0
        self._compiled = _compile(self._cols) if (COMPILED if compiled is None else compiled) else None

    @property
    def passes(self) -> bool:
        """True when no value of this result can change."""
        return all(fn is None for fn, _ in self.fns)

    def rewrite(self, data: bytes) -> bytes | None:
        """``data``, one or more whole DataRows of this result, with their values masked;
        None when no byte changed. What does not change is never copied."""
        if self._compiled is not None:
            return self._rewrite_compiled(self._compiled, data)
        cols, ncols, n = self._cols, self._n, len(data)
        unpack, header, pack = _I32.unpack_from, _ROW_HEADER.unpack_from, _I32.pack
        pieces: list[bytes] = []
        masked = [0] * ncols  # values changed, but for constant columns: all but the empty ones
        empty = [0] * ncols
        last = pos = rows = 0
        try:
            while pos < n:
                if data[pos] != _D:
                    raise _malformed()
                length, count = header(data, pos + 1)
                end = pos + 1 + length
                if count != ncols:
                    raise MaskingError(f"a row has {count} values where its result has {ncols} columns")
                if end > n:
                    raise _malformed()
                rows += 1
                p = pos + 7
                row: list[bytes] | None = None
                row_last = pos + 5  # the row's bytes up to here are in ``row``
                delta = 0  # how much longer the row got
                for i, kind, constant, constant_size, cache, fn in cols:
                    (size,) = unpack(data, p)
                    if size <= 0:  # NULL, or empty: nothing to mask
                        if size < -1:
                            raise _malformed()
                        p += 4
                        empty[i] += 1
                        continue
                    at = p  # the value's length field
                    p += 4 + size
                    if p > end:  # past its row: refused before any function sees those bytes
                        raise _malformed()
                    if kind == _PASS:
                        continue
                    if kind == _CONSTANT:
                        if row is None:
                            row = []
                        if row_last != at:
                            row.append(data[row_last:at])
                        row.append(constant)
                        delta += constant_size - size
                        row_last = p
                        continue
                    value = data[at + 4 : p]
                    if kind == _CACHED:
                        new = cache.get(value, cache)
                        if new is cache:
                            new = fn(value)
                            if len(cache) >= _CACHE_LIMIT:
                                self._cache_full(i, self._rows + rows)
                            cache[value] = _SAME if new is value else new
                        elif new is _SAME:
                            continue
                    else:
                        new = fn(value)
                    if new is value:
                        continue
                    if row is None:
                        row = []
                    if row_last != at:
                        row.append(data[row_last:at])
                    if new is None:
                        row.append(_NULL)
                        delta -= size
                    else:
                        assert isinstance(new, bytes)
                        row.append(pack(len(new)) + new)
                        delta += len(new) - size
                    row_last = p
                    masked[i] += 1
                if p != end:  # also catches a value cut short, before anything is sent
                    raise _malformed()
                if row is not None:
                    pieces.append(data[last:pos])
                    pieces.append(_OUT_HEADER.pack(b"D", length + delta))
                    pieces += row
                    pieces.append(data[row_last:end])
                    last = end
                pos = end
        except struct.error as e:
            raise _malformed() from e
        except UnicodeDecodeError as e:
            raise not_utf8() from e
        for i in self._constants:
            masked[i] = rows - empty[i]
        self._count(rows, masked)
        if not pieces:
            return None
        pieces.append(data[last:])
        return b"".join(pieces)

    def _count(self, rows: int, masked: Sequence[int]) -> None:
        """What a batch that is sent adds up to (a refused one is never sent)."""
        self._rows += rows
        counts = self.counts
        for name, k in zip(self.names, masked, strict=True):
            if k:
                counts[name] = counts.get(name, 0) + k

    def _cache_full(self, i: int, rows: int) -> None:
        """Column i's cache is full: start afresh, or stop caching when it filled about as fast
        as rows came (its values hardly repeat: keys, emails)."""
        index, _, constant, constant_size, cache, fn = self._cols[i]
        cache.clear()
        if rows < _CACHE_LIMIT * 9 // 8:  # fewer than one value in nine was seen before
            self._cols[i] = (index, _UNCACHED, constant, constant_size, cache, fn)

    def _rewrite_compiled(self, compiled: _rowmask.Rewriter, data: bytes) -> bytes | None:
        try:
            out, rows, masked = compiled.rewrite(data)
        except _rowmask.Malformed as e:
            raise MaskingError(str(e)) from None
        except UnicodeDecodeError as e:
            raise not_utf8() from e
        self._count(rows, masked)
        return out


def _compile(cols: Sequence[_Column]) -> _rowmask.Rewriter | None:
    """The plan for the compiled loop: the same kinds, a cache of its own per column, label
    pseudonyms computed in C from their HMAC pads, partial values and shaped pseudonyms in C."""
    if _rowmask is None:
        return None
    specs: list[tuple[object, ...]] = []
    for _, kind, constant, _, _, fn in cols:
        if kind == _PASS:
            specs.append((_PASS,))
        elif kind == _CONSTANT:
            specs.append((_CONSTANT, constant))
        elif isinstance(fn, LabelledPseudonym):
            specs.append((_LABEL, fn, fn.prefix, fn.inner_pad, fn.outer_pad, fn.head, fn.tail, fn.size,
                          STRETCH_AFTER))
        elif isinstance(fn, Partial):
            specs.append((_PARTIAL, fn, fn.shape, fn.extension, fn.count_alnum, fn.min_count, fn.many_at, fn.keep_many,
                          fn.keep_few))
        elif isinstance(fn, Reshaped):
            specs.append((_RESHAPE, fn, fn.prefixes, fn.inner_pad, fn.outer_pad, fn.letters))
        elif kind == _CACHED:
            specs.append((kind, fn, {}, isinstance(fn, _Scan) and fn.prefiltered))
        else:
            specs.append((kind, fn))
    return _rowmask.Rewriter(specs, _SAME, _CACHE_LIMIT)
