"""Mask strategies: what a masked identity sees instead of a sensitive value.

- ``redact``: fixed text, ``****``; dates of birth become ``1900-01-01`` and IP addresses
  ``0.0.0.0`` / ``::`` so the value stays valid for a date or inet column.
- ``partial``: keeps a little, exactly this and nothing else: an email's first character and
  its domain (``a***@example.com``); a card's last 4 digits (``**** **** **** 1234``); a phone's
  last 4 digits (last 2 when it has fewer than 10), formatting kept; an IBAN's country code and
  last 4 characters; a national id's last 4 characters; an IP's network (first two IPv4 octets,
  first 48 bits of IPv6); a date of birth's year; a person's initials; a secret's vendor prefix
  (``sk_live_****``). Other classes are redacted.
- ``pseudonym``: a keyed HMAC-SHA256 of the value, so equal values get equal pseudonyms (joins
  and GROUP BY still work) and nothing can be recovered without the key. Shapes are kept where
  that is useful: ``u_3f9a1c2b7d4e@pseudo.invalid``, digits stay digits at the same places (card
  pseudonyms are Luhn-valid), IBANs stay valid IBANs of the same country, IPs stay IPs.
- ``fake``: deterministic realistic values seeded by the HMAC: valid-looking emails at
  example.com/org/net, phone numbers, Luhn-valid cards, valid IBANs, plausible names, addresses,
  dates, documentation-range IPs.
- ``null``: SQL NULL (None).

Pseudonyms and fakes never equal the raw value nor share a 6-character fragment with it (the
derivation is retried with a counter), except for fixed text of the output format itself."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from binascii import hexlify
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from functools import cache, lru_cache, partial
from typing import TYPE_CHECKING

from stdnum import iban as stdnum_iban

from rowgate.masking.classes import Finding, PiiClass
from rowgate.masking.detectors import scan_text
from rowgate.masking.validators import compact
from rowgate.masking.validators import iban as iban_valid

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

STRATEGIES = ("redact", "partial", "pseudonym", "fake", "null")
REDACTED = "****"
_FRAGMENT = 6
_ATTEMPTS = 8
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_SECRET_PREFIX = re.compile(
    r"^(?:(?:sk|rk)_(?:live|test)_|gh[pousr]_|github_pat_|xox[abposr]-|AKIA|ASIA|AIza|glpat-|npm_|whsec_|SG\.)")
_DIGIT = re.compile(r"\d")
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# byte -> character tables for _reshape
_DIGITS = tuple(str(b % 10) for b in range(256))
_NONZERO = tuple(str(1 + b % 9) for b in range(256))
_UPPERS = tuple(_UPPER[b % 26] for b in range(256))
_LOWERS = tuple(_UPPER[b % 26].lower() for b in range(256))


def key_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer key pads (RFC 2104), one SHA-256 block each."""
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


@lru_cache(maxsize=64)
def _pads(key: bytes) -> tuple[Hash, Hash]:
    """SHA-256 states that have absorbed the key pads: copying them gives the same MAC as
    ``hmac.digest`` at half the cost, as the key is not re-hashed for every value."""
    inner, outer = key_pads(key)
    return hashlib.sha256(inner), hashlib.sha256(outer)


@lru_cache(maxsize=256)
def _prefix(purpose: str, cls: PiiClass, attempt: int) -> bytes:
    return f"{purpose}\0{cls}\0{attempt}\0".encode()


def _mac(pads: tuple[Hash, Hash], msg: bytes) -> bytes:
    inner = pads[0].copy()
    inner.update(msg)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.digest()


def _stream(key: bytes, purpose: str, cls: PiiClass, value: str, attempt: int, n: int = 32) -> bytes:
    """n pseudo-random bytes from HMAC-SHA256(key, purpose, class, attempt, value)."""
    digest = _mac(_pads(key), _prefix(purpose, cls, attempt) + value.encode("utf-8", "surrogatepass"))
    return digest if n <= 32 else hashlib.shake_256(digest).digest(n)


def _leaks(raw: str, out: str) -> bool:
    if out == raw:
        return True
    if len(raw) < _FRAGMENT:
        return False
    return any(out[i:i + _FRAGMENT] in raw for i in range(len(out) - _FRAGMENT + 1))


def _derive(key: bytes, purpose: str, cls: PiiClass, value: str, make: Callable[[bytes], str], n: int = 32,
            *, fragments: bool = True) -> str:
    """make(random bytes), retried while the result gives the value away. `fragments` False: the
    output is fixed text plus hex, which shares 6 characters with the value by chance about never."""
    for attempt in range(_ATTEMPTS):
        out = make(_stream(key, purpose, cls, value, attempt, n))
        if out != value and not (fragments and _leaks(value, out)):
            return out
    return REDACTED  # the shape itself gives the value away (e.g. a "phone" without digits)


def _reshape(value: str, rnd: bytes, *, first_digit_nonzero: bool = False, letters: bool = True) -> str:
    """Digits -> digits, letters (if `letters`) -> letters of the same case, everything else kept.
    `rnd` has a byte per character (see _derive's n)."""
    out = list(value)
    first = first_digit_nonzero
    for i, ch in enumerate(value):
        b = rnd[i % len(rnd)]
        if "0" <= ch <= "9":
            out[i] = _NONZERO[b] if first else _DIGITS[b]
            first = False
        elif letters and "A" <= ch <= "Z":
            out[i] = _UPPERS[b]
        elif letters and "a" <= ch <= "z":
            out[i] = _LOWERS[b]
    return "".join(out)


def _luhn_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def _card(value: str, rnd: bytes, prefix: str = "") -> str:
    """Same length and separators as `value`, Luhn-valid, starting with `prefix`."""
    digits = compact(value)
    if not digits.isdigit() or len(digits) < 2:
        return REDACTED
    body = (prefix + _reshape(digits, rnd))[: len(digits) - 1]
    new = iter(body + _luhn_digit(body))
    return "".join(next(new) if ch.isdigit() else ch for ch in value)


def _iban(value: str, rnd: bytes) -> str:
    """A valid IBAN of the same country, length and spacing."""
    c = compact(value).upper()
    if not iban_valid(c):
        return REDACTED
    bban = _reshape(c[4:], rnd)
    check = stdnum_iban.calc_check_digits(c[:2] + "00" + bban)
    new = iter(c[:2] + check + bban)
    return "".join(next(new) if ch.isalnum() else ch for ch in value)


def _ip(value: str, rnd: bytes, v4_prefix: bytes, v6_prefix: bytes) -> str:
    addr, slash, bits = value.strip().partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return REDACTED
    if ip.version == 4:
        new: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
            v4_prefix + rnd[: 4 - len(v4_prefix)])
    else:
        new = ipaddress.IPv6Address(v6_prefix + rnd[: 16 - len(v6_prefix)])
    return f"{new}{slash}{bits}"


def _date(value: str, rnd: bytes, start: date, span_days: int) -> str:
    m = _DATE.match(value)
    if not m:
        return _reshape(value, rnd)
    d = start + timedelta(days=int.from_bytes(rnd[:4], "big") % span_days)
    return d.isoformat() + _DIGIT.sub("0", value[10:])


def _hex(rnd: bytes, n: int) -> str:
    return rnd.hex()[:n]


@cache
def _name_lists() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    from faker.providers.address.en_US import Provider as Address
    from faker.providers.person.en_US import Provider as Person

    return tuple(Person.first_names), tuple(Person.last_names), tuple(Address.street_suffixes)


def _pick(options: Sequence[str], b: bytes) -> str:
    return options[int.from_bytes(b, "big") % len(options)]


# --- redact ---------------------------------------------------------------------------------


def _redact(cls: PiiClass, value: str) -> str:
    if cls is PiiClass.DATE_OF_BIRTH and _DATE.match(value):
        return "1900-01-01" + _DIGIT.sub("0", value[10:])
    if cls is PiiClass.IP_ADDRESS:
        addr, slash, bits = value.strip().partition("/")
        return ("::" if ":" in addr else "0.0.0.0") + slash + bits
    return REDACTED


# --- partial --------------------------------------------------------------------------------


def _keep_last(value: str, keep: int, *, also_first: int = 0) -> str:
    """Mask every letter and digit except the first `also_first` and the last `keep`."""
    total = sum(ch.isalnum() for ch in value)
    out, i = [], 0
    for ch in value:
        if ch.isalnum():
            out.append(ch if i < also_first or i >= total - keep else "*")
            i += 1
        else:
            out.append(ch)
    return "".join(out)


class Partial:
    """``_partial`` of emails, names, phones and national ids over UTF-8 bytes; its fields tell
    the compiled row loop (``rewrite``) how to do the same for ASCII values."""

    SHAPES = {PiiClass.PHONE: 0, PiiClass.NATIONAL_ID: 0, PiiClass.EMAIL: 1, PiiClass.PERSON_NAME: 2}
    __slots__ = ("cls", "count_alnum", "extension", "keep_few", "keep_many", "many_at", "min_count", "shape")

    def __init__(self, cls: PiiClass) -> None:
        self.cls, self.shape = cls, self.SHAPES[cls]
        phone = cls is PiiClass.PHONE
        self.extension, self.count_alnum = phone, not phone
        self.min_count, self.many_at, self.keep_many, self.keep_few = (6, 10, 4, 2) if phone else (8, 0, 4, 4)

    def __call__(self, raw: bytes) -> bytes:
        return _partial(self.cls, raw.decode("utf-8")).encode()


def _partial(cls: PiiClass, value: str) -> str:
    v = value.strip()
    if cls is PiiClass.EMAIL:
        local, at, domain = v.rpartition("@")
        return f"{local[0]}***@{domain}" if local and at and domain else REDACTED
    if cls is PiiClass.PAYMENT_CARD:
        digits = re.sub(r"\D", "", v)
        return f"**** **** **** {digits[-4:]}" if len(digits) >= 12 else REDACTED
    if cls is PiiClass.PHONE:
        main = re.split(r"(?i)\s?(?:x|ext\.?)\s?\d", v, maxsplit=1)[0]
        digits = sum(ch.isdigit() for ch in main)
        if digits < 6:
            return REDACTED
        return _keep_last(main, 4 if digits >= 10 else 2)
    if cls is PiiClass.IBAN:
        return _keep_last(v, 4, also_first=2) if len(compact(v)) >= 12 else REDACTED
    if cls is PiiClass.NATIONAL_ID:
        return _keep_last(v, 4) if sum(ch.isalnum() for ch in v) >= 8 else REDACTED
    if cls is PiiClass.IP_ADDRESS:
        addr, slash, bits = v.partition("/")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return REDACTED
        net = ipaddress.ip_network(f"{ip}/{16 if ip.version == 4 else 48}", strict=False)
        return f"{net.network_address}{slash}{bits}"
    if cls is PiiClass.DATE_OF_BIRTH:
        m = _DATE.match(v)
        return f"{m.group(1)}-01-01" + _DIGIT.sub("0", v[10:]) if m else REDACTED
    if cls is PiiClass.PERSON_NAME:
        initials = [w[0] + "." for w in v.split() if w[:1].isalpha()]
        return " ".join(initials) if initials else REDACTED
    if cls is PiiClass.SECRET:
        m = _SECRET_PREFIX.match(v)
        return (m.group() if m else "") + REDACTED
    return _redact(cls, v)


# --- pseudonym and fake ---------------------------------------------------------------------


# pseudonyms that keep the value's shape (and so may share parts with it by chance)
_SHAPED = frozenset({PiiClass.PAYMENT_CARD, PiiClass.IBAN, PiiClass.IP_ADDRESS, PiiClass.DATE_OF_BIRTH,
                     PiiClass.PHONE, PiiClass.NATIONAL_ID})


_LABELS = {PiiClass.PERSON_NAME: "name", PiiClass.ADDRESS: "addr", PiiClass.JWT: "jwt"}


def _pseudonym(cls: PiiClass, value: str, key: bytes) -> str:
    def make(rnd: bytes) -> str:
        if cls is PiiClass.EMAIL:
            return f"u_{_hex(rnd, 12)}@pseudo.invalid"
        if cls is PiiClass.PAYMENT_CARD:
            return _card(value, rnd)
        if cls is PiiClass.IBAN:
            return _iban(value, rnd)
        if cls is PiiClass.IP_ADDRESS:
            return _ip(value, rnd, b"\x0a", b"\xfd")
        if cls is PiiClass.DATE_OF_BIRTH:
            return _date(value, rnd, date(1930, 1, 1), 80 * 365)
        if cls in (PiiClass.PHONE, PiiClass.NATIONAL_ID):
            return _reshape(value, rnd, letters=cls is PiiClass.NATIONAL_ID)
        return f"{_LABELS.get(cls, 'secret')}_{_hex(rnd, 16)}"

    return _derive(key, "pseudonym", cls, value, make, n=len(value) + 4, fragments=cls in _SHAPED)


# a label pseudonym's MAC is stretched with SHAKE-256 for values longer than this (_stream)
STRETCH_AFTER = 28


class LabelledPseudonym:
    """``_pseudonym`` of a class whose pseudonym is a label and hex digits (no shape kept), over
    the value's UTF-8 bytes (UnicodeDecodeError if they are not), its first attempt inlined: the
    hot path of masked results. Its fields are what the compiled row loop needs to compute the
    same pseudonyms (``rewrite``)."""

    __slots__ = ("_inner", "_key", "_outer", "cls", "head", "inner_pad", "outer_pad", "prefix", "size", "tail")

    def __init__(self, cls: PiiClass, key: bytes) -> None:
        self.cls, self._key = cls, key
        self.inner_pad, self.outer_pad = key_pads(key)
        self._inner, self._outer = _pads(key)
        self.prefix = _prefix("pseudonym", cls, 0)
        self.head, self.tail, self.size = (b"u_", b"@pseudo.invalid", 6) if cls is PiiClass.EMAIL else (
            _LABELS.get(cls, "secret").encode() + b"_", b"", 8)

    def __call__(self, raw: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(self.prefix + raw)
        outer = self._outer.copy()
        outer.update(inner.digest())
        rnd = outer.digest()
        # _stream stretches to len(value) + 4 bytes past 32: SHAKE outputs share their prefixes
        if (len(raw) if raw.isascii() else len(raw.decode("utf-8"))) > STRETCH_AFTER:
            rnd = hashlib.shake_256(rnd).digest(self.size)
        out = self.head + hexlify(rnd[: self.size]) + self.tail
        if out != raw:
            return out
        return _pseudonym(self.cls, raw.decode("utf-8"), self._key).encode()


class Reshaped:
    """``_pseudonym`` of phones and national ids (digits stay digits, an id's letters stay
    letters) over UTF-8 bytes; its fields tell the compiled row loop (``rewrite``) how to derive
    the same for ASCII values."""

    __slots__ = ("_key", "cls", "inner_pad", "letters", "outer_pad", "prefixes")

    def __init__(self, cls: PiiClass, key: bytes) -> None:
        self.cls, self._key = cls, key
        self.letters = cls is PiiClass.NATIONAL_ID
        self.inner_pad, self.outer_pad = key_pads(key)
        self.prefixes = tuple(_prefix("pseudonym", cls, attempt) for attempt in range(_ATTEMPTS))

    def __call__(self, raw: bytes) -> bytes:
        return _pseudonym(self.cls, raw.decode("utf-8"), self._key).encode()


def _fake_ssn(rnd: bytes) -> str:
    area = 1 + int.from_bytes(rnd[:2], "big") % 665  # 001-665: issued areas below 666
    return f"{area:03d}-{1 + rnd[2] % 99:02d}-{1 + int.from_bytes(rnd[3:5], 'big') % 9999:04d}"


def _fake(cls: PiiClass, value: str, key: bytes) -> str:
    def make(rnd: bytes) -> str:
        first, last, suffixes = _name_lists()
        if cls is PiiClass.EMAIL:
            tld = ("com", "org", "net")[rnd[6] % 3]
            return f"{_pick(first, rnd[0:2]).lower()}.{_pick(last, rnd[2:4]).lower()}{rnd[4] % 100}@example.{tld}"
        if cls is PiiClass.PERSON_NAME:
            return f"{_pick(first, rnd[0:2])} {_pick(last, rnd[2:4])}"
        if cls is PiiClass.ADDRESS:
            return f"{1 + int.from_bytes(rnd[0:2], 'big') % 9999} {_pick(last, rnd[2:4])} {_pick(suffixes, rnd[4:6])}"
        if cls is PiiClass.PAYMENT_CARD:
            return _card(value, rnd[8:], prefix="4")
        if cls is PiiClass.IBAN:
            return _iban(value, rnd)
        if cls is PiiClass.IP_ADDRESS:
            # the documentation ranges (RFC 5737; RFC 3849 and RFC 9637 for IPv6)
            nets = (b"\xc0\x00\x02", b"\xc6\x33\x64", b"\xcb\x00\x71")
            nets6 = (b"\x20\x01\x0d\xb8", b"\x3f\xff\x00")
            return _ip(value, rnd[2:], nets[rnd[0] % 3], nets6[rnd[1] % 2])
        if cls is PiiClass.DATE_OF_BIRTH:
            return _date(value, rnd, date(1950, 1, 1), 50 * 365)
        if cls is PiiClass.NATIONAL_ID and re.fullmatch(r"\d{3}-\d{2}-\d{4}", value.strip()):
            return _fake_ssn(rnd)
        if cls in (PiiClass.PHONE, PiiClass.NATIONAL_ID):
            return _reshape(value, rnd, first_digit_nonzero=True, letters=cls is PiiClass.NATIONAL_ID)
        return f"{'jwt' if cls is PiiClass.JWT else 'secret'}_{_hex(rnd, 16)}"

    return _derive(key, "fake", cls, value, make, n=len(value) + 4)


# --- entry points ---------------------------------------------------------------------------


def mask_value(cls: PiiClass, value: str, strategy: str, key: bytes) -> str | None:
    """The masked form of `value` (of class `cls`) under `strategy`; None means SQL NULL.
    Free text is masked finding by finding with the same strategy (NULL: the whole value)."""
    if strategy == "null":
        return None
    if cls is PiiClass.FREE_TEXT:
        return mask_findings(value, scan_text(value), lambda _: strategy, key)
    if strategy == "redact":
        return _redact(cls, value)
    if strategy == "partial":
        return _partial(cls, value)
    if strategy == "pseudonym":
        return _pseudonym(cls, value, key)
    if strategy == "fake":
        return _fake(cls, value, key)
    raise ValueError(f"unknown mask strategy {strategy!r} (use one of {', '.join(STRATEGIES)})")


def _null(value: str) -> None:
    return None


def _redacted(value: str) -> str:
    return REDACTED


def value_masker(cls: PiiClass, strategy: str, key: bytes) -> Callable[[str], str | None]:
    """``lambda value: mask_value(cls, value, strategy, key)``, with everything that does not
    depend on the value worked out once: what a masked result calls for every value."""
    if strategy == "null":
        return _null
    if cls is PiiClass.FREE_TEXT:
        return partial(mask_value, cls, strategy=strategy, key=key)
    if strategy == "redact":
        return partial(_redact, cls) if cls in (PiiClass.DATE_OF_BIRTH, PiiClass.IP_ADDRESS) else _redacted
    if strategy == "partial":
        return partial(_partial, cls)
    if strategy == "pseudonym":
        if cls in _SHAPED:
            return partial(_pseudonym, cls, key=key)
        on_bytes = LabelledPseudonym(cls, key)

        def pseudonym(value: str) -> str:
            try:
                return on_bytes(value.encode("utf-8", "surrogatepass")).decode()
            except UnicodeDecodeError:  # lone surrogates
                return _pseudonym(cls, value, key)

        return pseudonym
    if strategy == "fake":
        return partial(_fake, cls, key=key)
    return partial(mask_value, cls, strategy=strategy, key=key)  # raises the unknown strategy's error


def utf8_masker(cls: PiiClass, strategy: str, key: bytes) -> Callable[[bytes], bytes] | None:
    """``value_masker`` over UTF-8 bytes (UnicodeDecodeError if they are not), where that saves
    work (label pseudonyms, which need no decoded text) or the compiled row loop can do the
    same (partial emails, names, phones and ids; pseudonymised phones and ids); else None."""
    if strategy == "pseudonym" and cls not in _SHAPED and cls is not PiiClass.FREE_TEXT:
        return LabelledPseudonym(cls, key)
    if strategy == "partial" and cls in Partial.SHAPES:
        return Partial(cls)
    if strategy == "pseudonym" and cls in (PiiClass.PHONE, PiiClass.NATIONAL_ID):
        return Reshaped(cls, key)
    return None


def mask_findings(value: str, findings: Sequence[Finding], strategy_for: Callable[[PiiClass], str],
                  key: bytes) -> str:
    """`value` with every finding replaced by its masked form; findings must not overlap. Inside
    text, NULL cannot stand for a part, so a finding whose strategy is ``null`` is redacted."""
    out, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < pos:
            raise ValueError("overlapping findings")
        strategy = strategy_for(f.cls)
        masked = mask_value(f.cls, value[f.start:f.end], "redact" if strategy == "null" else strategy, key)
        out.append(value[pos:f.start])
        out.append(masked if masked is not None else REDACTED)
        pos = f.end
    out.append(value[pos:])
    return "".join(out)
