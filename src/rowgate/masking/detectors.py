"""Content detectors: find PII and secrets in text.

Two entry points:

- :func:`scan_text` finds sensitive spans inside any text (free-text notes, error messages,
  JSON). It is the backstop run on every text value sent to a masked identity, so it starts with
  one pre-filter regex that rejects ordinary short values ("delivered", "Classic Oak Mug",
  "2024-06-30") in about a microsecond; only values with something suspicious (an ``@``, a run of
  digits, a long token, ``-----BEGIN``, ``eyJ``, ``key=``) get the full scan.
- :func:`classify_value` decides what a whole column value is, used when sampling a column.
  Classes without a checksum (names, addresses, dates of birth) are only recognised there, and
  names and dates of birth only with a column-name hint: see :mod:`rowgate.masking.people`.

Measured on the development machine (``python -m timeit``): scan_text takes 0.5-1.2 µs for an
ordinary value ("delivered", a 50-character product description, an ISO date) and ~30 µs for a
sentence holding a phone number and an email address."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

import phonenumbers

from rowgate.masking import people, validators
from rowgate.masking.classes import CustomDetector, Finding, PiiClass

# The pre-filter, in order of cost: substring tests, then three small regexes.
_SUSPECT_SUBSTRINGS = ("@", "eyJ", "-----BEGIN", "$2", "$argon2", "::")
_DIGIT_RUN = re.compile(r"\d[\d\s().\-/:]+\d")
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_\-]{20}")
_KEYWORD = re.compile(r"(?i:pass|pwd|secret|token|key|auth)\w*[\"']?\s*[=:]")
# Whole values that hold digits but nothing detectable: numbers too short for a card, ISO dates and times.
_PLAIN = re.compile(r"[+-]?\d{1,12}(?:\.\d+)?|\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
                    r"(?:[+-]\d{2}(?::?\d{2})?|Z)?)?")
_PEM = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*-----|.*)", re.S)
_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_KNOWN_SECRETS = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"  # Slack
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,}"  # Stripe
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|glpat-[A-Za-z0-9_\-]{20}|npm_[A-Za-z0-9]{36}|SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"  # GitLab, npm, SendGrid
    r")(?![A-Za-z0-9])"
)
_HASH = re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}|\$argon2(?:id|i|d)\$[A-Za-z0-9=,$+/]{20,}")
_ASSIGNMENT = re.compile(
    r"(?i)\b(?:api[_-]?key|apikey|secret(?:[_-]?key)?|client[_-]?secret|access[_-]?(?:key|token)|auth[_-]?token"
    r"|token|password|passwd|pwd|passphrase)\b[\"']?\s*[:=]\s*[\"']?([^\s\"',;&]{4,})"
)
_EMAIL = re.compile(r"(?<![\w.+%'-])[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_IDS = re.compile(
    r"(?<![\w-])(?:\d{3}-\d{2}-\d{4}|[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]|\d{8}-?[A-Z]"
    r"|[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]|[12] \d{2} \d{2} \d{2} \d{3} \d{3} \d{2})(?![\w-])"
)
# Phone numbers need phone-like formatting: a bare run of digits is as likely an id or a date.
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[\s.\-]?(?:\(\d{1,4}\)|\d{1,4})(?:[\s.\-]?\d{2,4}){2,4}"  # international
    r"|(?:001[\s.\-]|1[\s.\-])?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}"  # North American
    r"|0\d{1,4}[\s/\-]\d{3,4}[\s\-]?\d{3,4}"  # national, with a trunk prefix: 030 1234 5678
    r")(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?!\w)"
)
_BARE_PHONE = re.compile(r"\+?[\d\s().\-]{7,20}(?:\s?x\d{1,5})?")
# bare digits are a phone number in free text only right after a word that says so
_CUED_PHONE = re.compile(r"(?i)\b(?:call|phone|tel|telephone|mobile|cell|fax|sms|text|whatsapp|ph)\b[\s:.#]*"
                         r"(?:(?:no|nr|number)\.?[\s:#]*)?(\+?\d[\d\s().\-]{6,18}\d(?:\s?x\d{1,5})?)(?!\w)")
_DATE_LIKE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$")
_PHONE_REGIONS = ("US", "GB", "DE", "FR")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:/\d{1,3})?(?![\w:])")
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{20,}={0,2}")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_LOWER_WORD = re.compile(r"^[a-z]{3,}$")


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def high_entropy_token(token: str) -> bool:
    """A random-looking credential: long hex (≥ 40) or a mixed-case alphanumeric run (≥ 20) whose
    entropy is near that of random text. UUIDs, words, slugs and URL paths are not."""
    t = token.rstrip("=")
    if len(t) < 20 or _UUID.match(t):
        return False
    if _HEX.match(t):
        return len(t) >= 40 and entropy(t) >= 3.0
    if not (any(c.isupper() for c in t) and any(c.islower() for c in t) and any(c.isdigit() for c in t)):
        return False
    if "/" in t and any(_LOWER_WORD.match(part) for part in t.split("/")):
        return False
    return entropy(t) >= min(4.0, math.log2(len(t)) - 0.8)


def jwt(token: str) -> bool:
    """Three base64url parts whose first decodes to a JSON object (the JOSE header)."""
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and token.count(".") == 2


def phone(candidate: str) -> bool:
    """A phone number of plausible length for its country (or for one of a few common regions)."""
    stripped = candidate.lstrip()
    if stripped.startswith("00") and stripped[2:3].isdigit() and stripped[2] != "0":
        # "00" is the international prefix dialled from most countries ("001-208-957-0032"
        # is a US number); parsed as a national number of any one region it is no number
        candidate = "+" + stripped[2:]
    for region in _PHONE_REGIONS:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            return False
        if phonenumbers.is_possible_number(number):
            return True
        if candidate.lstrip().startswith(("+", "00")):
            return False  # the country code is explicit: other regions cannot help
    return False


def ip_address(candidate: str) -> bool:
    try:
        ipaddress.ip_interface(candidate)
    except ValueError:
        return False
    return True


def _iban_span(text: str, start: int, end: int) -> int | None:
    """The end of the longest valid IBAN starting at `start`: the regex may swallow a following
    upper-case word ("... 00 AND"), so shorter candidates are tried at space boundaries."""
    candidate = text[start:end]
    while True:
        if validators.iban(candidate):
            return start + len(candidate)
        cut = candidate.rfind(" ")
        if cut < 15:
            return None
        candidate = candidate[:cut]


Check = Callable[[str], bool]
_STRUCTURED: tuple[tuple[PiiClass, re.Pattern[str], Check | None], ...] = (
    (PiiClass.SECRET, _PEM, None),
    (PiiClass.JWT, _JWT, jwt),
    (PiiClass.SECRET, _KNOWN_SECRETS, None),
    (PiiClass.SECRET, _HASH, None),
    (PiiClass.EMAIL, _EMAIL, None),
    (PiiClass.PAYMENT_CARD, _CARD, validators.payment_card),
    (PiiClass.NATIONAL_ID, _IDS, validators.national_id),
    (PiiClass.PHONE, _PHONE, phone),
    (PiiClass.IP_ADDRESS, _IPV4, ip_address),
    (PiiClass.IP_ADDRESS, _IPV6, lambda s: s.count(":") >= 2 and s.strip(":") != "" and ip_address(s)),
    (PiiClass.SECRET, _TOKEN, high_entropy_token),
)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _raw_findings(value: str, extra: Sequence[CustomDetector]) -> Iterable[Finding]:
    for cls, regex, check in _STRUCTURED:
        for m in regex.finditer(value):
            if check is None or check(m.group()):
                yield Finding(cls, m.start(), m.end())
    for m in _CUED_PHONE.finditer(value):
        if not _DATE_LIKE.match(m.group(1)) and phone(m.group(1)):
            yield Finding(PiiClass.PHONE, m.start(1), m.end(1))
    for m in _IBAN.finditer(value):
        end = _iban_span(value, m.start(), m.end())
        if end is not None:
            yield Finding(PiiClass.IBAN, m.start(), end)
    for m in _ASSIGNMENT.finditer(value):
        yield Finding(PiiClass.SECRET, m.start(1), m.end(1))
    for d in extra:
        validate = validators.VALIDATORS.get(d.validator) if d.validator else None
        for m in _compiled(d.pattern).finditer(value):
            # with a capture group, the validator checks the group: r"EMP-(\d{8})" with luhn
            if m.end() > m.start() and (validate is None or validate(m.group(1) if m.re.groups else m.group())):
                yield Finding(d.cls, m.start(), m.end())


def _merge(findings: Iterable[Finding]) -> list[Finding]:
    """Overlapping spans become one span (masked once), named for its longest part."""
    out: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start, -(f.end - f.start))):
        if out and f.start < out[-1].end:
            last = out[-1]
            if f.end > last.end:
                longest = last.cls if last.end - last.start >= f.end - f.start else f.cls
                out[-1] = Finding(longest, last.start, f.end)
            continue
        out.append(f)
    return out


def suspicious(value: str) -> bool:
    """The cheap pre-filter: False means scan_text (without custom detectors) would find nothing."""
    if any(s in value for s in _SUSPECT_SUBSTRINGS):
        return True
    if _DIGIT_RUN.search(value):
        return _PLAIN.fullmatch(value) is None
    if len(value) >= 20 and _LONG_RUN.search(value):
        return True
    return ("=" in value or ":" in value) and _KEYWORD.search(value) is not None


def scan_text(value: str, extra: Sequence[CustomDetector] = ()) -> list[Finding]:
    """Sensitive spans in `value`, sorted and non-overlapping. Names and postal addresses inside
    free text are not detected (no reliable signal without a column name)."""
    if not extra and not suspicious(value):
        return []
    return _merge(_raw_findings(value, extra))


def _whole(regex: re.Pattern[str], value: str) -> bool:
    m = regex.match(value)
    return m is not None and m.end() == len(value)


def classify_value(value: str, hints: frozenset[PiiClass] = frozenset()) -> PiiClass | None:
    """What the whole value is, or None. `hints`: the classes the column's name suggests, which
    enable the weaker checks (names, dates of birth, undelimited national ids, bare phone digits)."""
    v = value.strip()
    if not v or len(v) > 4096:
        return None
    if "@" in v and _whole(_EMAIL, v):
        return PiiClass.EMAIL
    if v.startswith("eyJ") and _whole(_JWT, v) and jwt(v):
        return PiiClass.JWT
    if _whole(_CARD, v) and validators.payment_card(v):
        return PiiClass.PAYMENT_CARD
    if v[:2].isalpha() and validators.iban(v):
        return PiiClass.IBAN
    if validators.national_id(v, hinted=PiiClass.NATIONAL_ID in hints):
        return PiiClass.NATIONAL_ID
    if (":" in v or "." in v) and ip_address(v):
        return PiiClass.IP_ADDRESS
    if PiiClass.DATE_OF_BIRTH in hints and people.birth_date(v):
        return PiiClass.DATE_OF_BIRTH
    if _whole(_PHONE, v) and phone(v):
        return PiiClass.PHONE
    if PiiClass.PHONE in hints and _whole(_BARE_PHONE, v) and not _DATE_LIKE.match(v) and phone(v):
        return PiiClass.PHONE
    if _secret(v) or (PiiClass.SECRET in hints and " " not in v):
        return PiiClass.SECRET
    if PiiClass.PERSON_NAME in hints and people.person_name_shape(v):
        return PiiClass.PERSON_NAME
    if people.street_address(v) or (PiiClass.ADDRESS in hints and people.address_part(v)):
        return PiiClass.ADDRESS
    return None


def _secret(v: str) -> bool:
    return bool(_whole(_KNOWN_SECRETS, v) or _whole(_HASH, v) or (v.startswith("-----BEGIN") and _PEM.match(v))
                or (_whole(_TOKEN, v) and high_entropy_token(v)))
