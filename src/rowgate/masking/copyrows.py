"""Masking the rows of COPY ... TO STDOUT (text and CSV formats with the default
delimiters; the inference defence refuses the others for masked identities), sans-IO.

PostgreSQL sends one row per CopyData message. Fields are cut without decoding the
others; a field to mask is unescaped, masked as text by the same per-column functions
as DataRow values, and escaped again.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from rowgate.errors import MaskingError
from rowgate.masking.rewrite import RowRewriter, Treatment, ValueMasker
from rowgate.pgwire.backend import FieldDescription

_I32 = struct.Struct("!i")
_TEXT_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_TEXT_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)")
_CSV_FIELD = re.compile(rb'"(?:[^"]|"")*"|[^,]*')


def _text_unescape(s: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] == "x" and len(e) > 1:
            return chr(int(e[1:], 16))
        if e[0] in "01234567":
            return chr(int(e, 8))
        return _TEXT_ESCAPES.get(e, e)

    return _TEXT_ESCAPE.sub(one, s)


def _text_escape(s: str) -> str:
    return (s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\b", "\\b").replace("\f", "\\f").replace("\v", "\\v"))


class CopyRewriter:
    def __init__(
        self,
        columns: Sequence[FieldDescription],
        treatments: Sequence[Treatment],
        masker: ValueMasker,
        *,
        csv: bool,
        counts: dict[str, int] | None = None,
    ) -> None:
        self._rows = RowRewriter(columns, treatments, masker, counts=counts)
        self.counts = self._rows.counts
        self._csv = csv

    def rewrite(self, raw: bytes) -> bytes | None:
        """A CopyData message with its row masked; None when nothing changed."""
        data = raw[5:]
        eol = b"\r\n" if data.endswith(b"\r\n") else b"\n" if data.endswith(b"\n") else b""
        line = data[: len(data) - len(eol)]
        fields = self._split_csv(line) if self._csv else line.split(b"\t")
        fns = self._rows.fns
        if len(fields) != len(fns):
            raise MaskingError(f"a COPY row has {len(fields)} fields where rowgate expected {len(fns)}")
        out: list[bytes] = []
        changed = False
        for value, (fn, name) in zip(fields, fns, strict=True):
            if fn is None or (value == b"\\N" and not self._csv) or (self._csv and value == b""):
                out.append(value)
                continue
            plain = self._decode(value)
            new = fn(plain)
            if new is plain:
                out.append(value)
                continue
            changed = True
            self.counts[name] = self.counts.get(name, 0) + 1
            out.append(self._encode(new))
        if not changed:
            return None
        body = (b"," if self._csv else b"\t").join(out) + eol
        return b"d" + _I32.pack(len(body) + 4) + body

    @staticmethod
    def _split_csv(line: bytes) -> list[bytes]:
        fields: list[bytes] = []
        pos = 0
        while True:
            m = _CSV_FIELD.match(line, pos)
            assert m is not None  # the pattern matches the empty string
            fields.append(m.group(0))
            pos = m.end()
            if pos >= len(line):
                return fields
            if line[pos : pos + 1] != b",":
                raise MaskingError("a COPY CSV row rowgate cannot read")
            pos += 1
            if pos == len(line):
                fields.append(b"")
                return fields

    def _decode(self, value: bytes) -> bytes:
        if self._csv:
            if value.startswith(b'"'):
                return value[1:-1].replace(b'""', b'"')
            return value
        return _text_unescape(value.decode("utf-8")).encode("utf-8") if b"\\" in value else value

    def _encode(self, value: bytes | None) -> bytes:
        if value is None:
            return b"" if self._csv else b"\\N"
        if self._csv:
            return b'"' + value.replace(b'"', b'""') + b'"'
        return _text_escape(value.decode("utf-8")).encode("utf-8")
