"""How a whole value of each PostgreSQL type is masked in text format, sans-IO: what
``rewrite`` compiles into its per-column functions. A masked value stays valid for its
type (numbers stay numbers of the same shape, dates dates, JSON JSON, arrays arrays) or
becomes NULL (None) where it cannot."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Protocol

from rowgate.errors import MaskingError
from rowgate.masking.classes import PiiClass

# type OIDs whose text and binary forms are the same UTF-8 text
TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705})
JSON, JSONB = 114, 3802
NUMBER_TYPES = frozenset({20, 21, 23, 26, 700, 701, 1700, 790})
DATE = 1082
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")
INET_TYPES = frozenset({869, 650})
# text-format types whose values hold text a detector can find (scanned by the backstop)
TEXTUAL_TYPES = TEXT_TYPES | {JSON, JSONB, 142, 2249, 3614, 1009, 1015, 1014, 1003, 199, 3807, 143, 2287}
ARRAY_ELEMENTS = {1009: 25, 1015: 1043, 1014: 1042, 1003: 19, 199: JSON, 3807: JSONB, 1007: 23, 1016: 20,
                  1005: 21, 1231: 1700, 1021: 700, 1022: 701, 1182: DATE}
# types rowgate knows not to be text: a masked value of any other type OID that arrives
# in text format (domains, enums, citext) is masked as text
KNOWN_OTHER = frozenset({16, 17, 18, 142, 2249, 3614, 869, 650, 829, 774, 2950, 1083, 1266, 1114, 1184, 1186, 790,
                         600, 601, 602, 603, 604, 718, 1560, 1562, 3904, 3906, 3908, 3910, 3912, 3926, 24, 2205,
                         2206, 4089, 4096, 3734, 3769, 2278, 2287, 143, 1000, 1001, 1002})

NOT_TEXT = KNOWN_OTHER | NUMBER_TYPES | INET_TYPES | {DATE, JSON, JSONB} | ARRAY_ELEMENTS.keys()


class ValueMasker(Protocol):
    custom: bool  # custom detectors are configured: the pre-filter cannot vouch for them

    def mask(self, cls: PiiClass, text: str, strategy: str) -> str | None:
        """The masked form of a whole value (None: NULL)."""

    def masking(self, cls: PiiClass, strategy: str) -> Callable[[str], str | None]:
        """``lambda text: self.mask(cls, text, strategy)``, made once per column."""

    def masking_utf8(self, cls: PiiClass, strategy: str) -> Callable[[bytes], bytes] | None:
        """``masking`` over UTF-8 bytes where that is faster, else None; raises UnicodeDecodeError
        on invalid UTF-8."""

    def scan(self, text: str) -> str:
        """``text`` with every detector finding masked; the same object when none."""

    def digits(self, text: str) -> str:
        """A keyed, deterministic string of digits as long as ``text``."""


def not_utf8() -> MaskingError:
    return MaskingError("a result value is not valid UTF-8, so rowgate cannot mask it")


def decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8() from e


def _number(text: str, strategy: str, masker: ValueMasker) -> str | None:
    if strategy not in ("pseudonym", "fake") or not re.fullmatch(r"-?\d+(\.\d+)?", text):
        return None
    sign = "-" if text.startswith("-") else ""
    body = text.lstrip("-")
    digits = masker.digits(body.replace(".", ""))
    if body[0] != "0" and digits[0] == "0":
        digits = "1" + digits[1:]
    out, k = [], 0
    for ch in body:
        if ch == ".":
            out.append(".")
        else:
            out.append(digits[k])
            k += 1
    return sign + "".join(out)


def _date(cls: PiiClass, text: str, strategy: str, masker: ValueMasker) -> str | None:
    if not _DATE_TEXT.fullmatch(text):
        return None
    out = masker.mask(cls, text, strategy)
    return out if out is not None and _DATE_TEXT.fullmatch(out) else None


def _inet(cls: PiiClass, text: str, strategy: str, masker: ValueMasker) -> str | None:
    out = masker.mask(cls, text.split("/")[0], strategy)
    if out is None:
        return None
    try:
        ipaddress.ip_address(out)
    except ValueError:
        return None
    return out


def _json_mask(node: object, cls: PiiClass, strategy: str, masker: ValueMasker) -> object:
    if isinstance(node, str):
        return masker.mask(cls, node, strategy)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int | float):
        masked = _number(str(node), strategy, masker)
        return None if masked is None else json.loads(masked)
    if isinstance(node, list):
        return [_json_mask(v, cls, strategy, masker) for v in node]
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for i, (k, v) in enumerate(node.items()):
            key = masker.mask(cls, k, strategy) or f"masked_{i}"
            out[key if key not in out else f"{key}_{i}"] = _json_mask(v, cls, strategy, masker)
        return out
    raise MaskingError(f"unexpected JSON value of type {type(node).__name__}")


def json_text(text: str, cls: PiiClass, strategy: str, masker: ValueMasker) -> str | None:
    try:
        node = json.loads(text)
    except ValueError:
        return None
    return json.dumps(_json_mask(node, cls, strategy, masker), ensure_ascii=False)


_ARRAY_SPECIAL = re.compile(r'[{},"\\\s]')


def _parse_array(text: str) -> list[object] | None:
    """A text-format array literal as nested lists of str/None; None if it is not a plain
    one (dimension decorations, a non-comma delimiter)."""
    pos = 0

    def parse() -> list[object]:
        nonlocal pos
        assert text[pos] == "{"
        pos += 1
        items: list[object] = []
        if text[pos] == "}":
            pos += 1
            return items
        while True:
            ch = text[pos]
            if ch == "{":
                items.append(parse())
            elif ch == '"':
                pos += 1
                buf = []
                while text[pos] != '"':
                    if text[pos] == "\\":
                        pos += 1
                    buf.append(text[pos])
                    pos += 1
                pos += 1
                items.append("".join(buf))
            else:
                end = pos
                while text[end] not in ",}":
                    end += 1
                raw = text[pos:end].strip()
                items.append(None if raw.upper() == "NULL" else raw)
                pos = end
            if text[pos] == ",":
                pos += 1
                continue
            if text[pos] == "}":
                pos += 1
                return items
            raise ValueError("bad array")

    if not text.startswith("{"):
        return None
    try:
        out = parse()
    except (IndexError, ValueError, AssertionError):
        return None
    return out if pos == len(text) else None


def _format_array(items: list[object]) -> str:
    parts = []
    for v in items:
        if isinstance(v, list):
            parts.append(_format_array(v))
        elif v is None:
            parts.append("NULL")
        else:
            s = str(v)
            if s == "" or s.upper() == "NULL" or _ARRAY_SPECIAL.search(s):
                s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(s)
    return "{" + ",".join(parts) + "}"


def text_masker(type_oid: int, cls: PiiClass, strategy: str, masker: ValueMasker) -> Callable[[str], str | None]:
    """How a whole value of a text-format type is masked (None: NULL)."""
    if type_oid in TEXT_TYPES or type_oid not in NOT_TEXT:
        return masker.masking(cls, strategy)
    if type_oid in NUMBER_TYPES:
        return lambda s: _number(s, strategy, masker)
    if type_oid == DATE:
        return lambda s: _date(cls, s, strategy, masker)
    if type_oid in INET_TYPES:
        return lambda s: _inet(cls, s, strategy, masker)
    if type_oid in (JSON, JSONB):
        return lambda s: json_text(s, cls, strategy, masker)
    if (element := ARRAY_ELEMENTS.get(type_oid)) is not None:
        inner = text_masker(element, cls, strategy, masker)

        def each(items: list[object]) -> list[object]:
            return [each(v) if isinstance(v, list) else None if v is None else inner(str(v)) for v in items]

        def array(s: str) -> str | None:
            items = _parse_array(s)
            return None if items is None else _format_array(each(items))

        return array
    return lambda s: None
