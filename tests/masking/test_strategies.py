"""Mask strategies: determinism, shapes that stay valid, and that nothing of the raw value leaks."""

from __future__ import annotations

import ipaddress
import random
import re
import string
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowgate.demo.data import card_number, iban_valid, luhn_valid, ssn
from rowgate.masking.classes import PiiClass
from rowgate.masking.detectors import classify_value, scan_text
from rowgate.masking.strategies import REDACTED, mask_findings, mask_value

KEY = b"test-key-0123456789abcdef"
OTHER_KEY = b"another-key-fedcba9876543210"
EMAIL_RE = re.compile(r"^[^@\s]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


def fragments(raw: str, n: int = 6, alnum: int = 0) -> set[str]:
    """Substrings of `raw` of length n with at least `alnum` letters or digits."""
    windows = (raw[i:i + n] for i in range(len(raw) - n + 1))
    return {w for w in windows if sum(c.isalnum() for c in w) >= alnum}


def leaks(raw: str, out: str | None, alnum: int = 0) -> bool:
    return out is not None and (out == raw or any(f in out for f in fragments(raw, alnum=alnum)))


# --- realistic values per class, for the property tests -------------------------------------

_local = st.text(string.ascii_lowercase + string.digits + "._", min_size=2, max_size=20).filter(
    lambda s: s[0] not in "._")
_domain = st.text(string.ascii_lowercase, min_size=3, max_size=12).map(lambda s: s + ".com")
emails = st.builds(lambda a, b: f"{a}@{b}", _local, _domain)
cards = st.randoms(use_true_random=False).map(card_number)
ssns = st.randoms(use_true_random=False).map(ssn)
phones = st.builds(lambda a, b, c, fmt: fmt.format(a, b, c), st.integers(200, 999), st.integers(200, 999),
                   st.integers(1000, 9999), st.sampled_from(["({}){}-{}", "{}-{}-{}", "+1-{}-{}-{}", "{}.{}.{}"]))
# not in 0.0.0.0/16: those are their own redaction and partial form (nothing to hide)
ipv4s = st.ip_addresses(v=4).map(str).filter(lambda ip: not ip.startswith("0.0.") and not ip.endswith(".0.0"))
names = st.builds(lambda a, b: f"{a} {b}", st.sampled_from(["Maria", "John", "Aiko", "Lars"]),
                  st.text(string.ascii_lowercase, min_size=3, max_size=10).map(str.capitalize))
secrets_ = st.text(string.ascii_letters + string.digits, min_size=20, max_size=40).map(lambda s: "sk_live_" + s)
VALUES = {
    PiiClass.EMAIL: emails, PiiClass.PAYMENT_CARD: cards, PiiClass.NATIONAL_ID: ssns, PiiClass.PHONE: phones,
    PiiClass.IP_ADDRESS: ipv4s, PiiClass.PERSON_NAME: names, PiiClass.SECRET: secrets_,
}
class_and_value = st.sampled_from(sorted(VALUES)).flatmap(lambda c: st.tuples(st.just(c), VALUES[c]))


@settings(max_examples=300, deadline=None)
@given(class_and_value, st.sampled_from(["redact", "pseudonym", "fake"]))
def test_never_the_raw_value_nor_a_fragment(cv: tuple[PiiClass, str], strategy: str) -> None:
    cls, raw = cv
    out = mask_value(cls, raw, strategy, KEY)
    assert not leaks(raw, out), (raw, out)


@settings(max_examples=300, deadline=None)
@given(class_and_value)
def test_partial_keeps_exactly_what_it_documents(cv: tuple[PiiClass, str]) -> None:
    cls, raw = cv
    out = mask_value(cls, raw, "partial", KEY)
    assert out is not None and out != raw
    kept = {
        PiiClass.EMAIL: lambda: raw.split("@")[1],  # and the first character of the local part
        PiiClass.PAYMENT_CARD: lambda: raw[-4:],
        PiiClass.NATIONAL_ID: lambda: raw[-4:],
        PiiClass.PHONE: lambda: raw[-4:],
        PiiClass.IP_ADDRESS: lambda: ".".join(raw.split(".")[:2]),
        PiiClass.SECRET: lambda: "sk_live_",
        PiiClass.PERSON_NAME: lambda: "",
    }[cls]()
    remainder = out.replace(kept, "") if kept else out
    assert not leaks(raw, remainder), (raw, out)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60), st.sampled_from(list(PiiClass)), st.sampled_from(["redact", "partial", "pseudonym",
                                                                                "fake", "null"]))
def test_any_input_is_masked_without_error(raw: str, cls: PiiClass, strategy: str) -> None:
    """Fail closed: malformed values (an 'email' without @, a 'card' of letters) still mask. Shapes
    keep separators, so only fragments with 3+ letters or digits count as leaks here."""
    out = mask_value(cls, raw, strategy, KEY)
    if strategy == "null":
        assert out is None
    elif cls is not PiiClass.FREE_TEXT and sum(c.isalnum() for c in raw) >= 4 and strategy != "partial":
        assert not leaks(raw, out, alnum=3), (raw, out)


def test_pseudonyms_are_deterministic_and_keyed() -> None:
    a = mask_value(PiiClass.EMAIL, "jane.doe@gmail.com", "pseudonym", KEY)
    assert a == mask_value(PiiClass.EMAIL, "jane.doe@gmail.com", "pseudonym", KEY)
    assert a != mask_value(PiiClass.EMAIL, "jane.doe@gmail.com", "pseudonym", OTHER_KEY)
    assert a != mask_value(PiiClass.EMAIL, "john.doe@gmail.com", "pseudonym", KEY)
    assert a is not None and a.endswith("@pseudo.invalid") and EMAIL_RE.match(a)


def test_pseudonyms_do_not_collide_on_a_thousand_values() -> None:
    values = [f"user{i}@example.com" for i in range(1000)]
    assert len({mask_value(PiiClass.EMAIL, v, "pseudonym", KEY) for v in values}) == 1000


def test_shapes_stay_valid() -> None:
    rng = random.Random(3)
    for _ in range(200):
        card = card_number(rng)
        for strategy in ("pseudonym", "fake"):
            out = mask_value(PiiClass.PAYMENT_CARD, card, strategy, KEY)
            assert out is not None and len(out) == len(card) and luhn_valid(out) and out != card
        assert classify_value(mask_value(PiiClass.PAYMENT_CARD, card, "fake", KEY) or "") is PiiClass.PAYMENT_CARD
    for raw in ("DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606"):
        for strategy in ("pseudonym", "fake"):
            out = mask_value(PiiClass.IBAN, raw, strategy, KEY)
            assert out is not None and iban_valid(out) and out[:2] == raw[:2] and len(out) == len(raw)
    fake_email = mask_value(PiiClass.EMAIL, "jane.doe@gmail.com", "fake", KEY)
    assert fake_email is not None and EMAIL_RE.match(fake_email) and fake_email.split(".")[-2].endswith("example")
    for raw in ("(555)123-4567", "+1-202-555-0143"):
        out = mask_value(PiiClass.PHONE, raw, "fake", KEY)
        assert out is not None and re.sub(r"\d", "9", out) == re.sub(r"\d", "9", raw)
    for strategy in ("redact", "partial", "pseudonym", "fake"):
        ip = mask_value(PiiClass.IP_ADDRESS, "192.168.10.20", strategy, KEY)
        assert ip is not None
        ipaddress.ip_address(ip)
        ip6 = mask_value(PiiClass.IP_ADDRESS, "2001:db8:1234::42", strategy, KEY)
        assert ip6 is not None
        ipaddress.ip_address(ip6)
        dob = mask_value(PiiClass.DATE_OF_BIRTH, "1987-04-12", strategy, KEY)
        assert dob is not None and dob != "1987-04-12"
        date.fromisoformat(dob)
    fake_ssn = mask_value(PiiClass.NATIONAL_ID, "536-22-1234", "fake", KEY)
    assert fake_ssn is not None and classify_value(fake_ssn) is PiiClass.NATIONAL_ID


@pytest.mark.parametrize(("cls", "raw", "expected"), [
    (PiiClass.EMAIL, "alice.smith@example.com", "a***@example.com"),
    (PiiClass.PAYMENT_CARD, "4111-1111-1111-1234", "**** **** **** 1234"),
    (PiiClass.PHONE, "(555)123-4567", "(***)***-4567"),
    (PiiClass.PHONE, "+1-555-123-4567x89", "+*-***-***-4567"),
    (PiiClass.IBAN, "DE89 3704 0044 0532 0130 00", "DE** **** **** **** **30 00"),
    (PiiClass.NATIONAL_ID, "536-22-1234", "***-**-1234"),
    (PiiClass.IP_ADDRESS, "192.168.10.20", "192.168.0.0"),
    (PiiClass.DATE_OF_BIRTH, "1987-04-12", "1987-01-01"),
    (PiiClass.PERSON_NAME, "Alice Smith", "A. S."),
    (PiiClass.SECRET, "sk_live_abcdEFGH1234ijkl", "sk_live_****"),
    (PiiClass.ADDRESS, "12 Oak Lane", REDACTED),
])
def test_partial(cls: PiiClass, raw: str, expected: str) -> None:
    assert mask_value(cls, raw, "partial", KEY) == expected


def test_redact_and_null() -> None:
    assert mask_value(PiiClass.EMAIL, "a@b.co", "redact", KEY) == REDACTED
    assert mask_value(PiiClass.DATE_OF_BIRTH, "1987-04-12", "redact", KEY) == "1900-01-01"
    assert mask_value(PiiClass.IP_ADDRESS, "10.0.0.1/8", "redact", KEY) == "0.0.0.0/8"
    assert mask_value(PiiClass.EMAIL, "a@b.co", "null", KEY) is None
    with pytest.raises(ValueError, match="unknown mask strategy"):
        mask_value(PiiClass.EMAIL, "a@b.co", "shuffle", KEY)


def test_free_text_masks_each_finding() -> None:
    text = "Call (555)123-4567 or mail jane.doe@gmail.com; key sk_live_abcdEFGH1234ijklMNOP5678."
    out = mask_value(PiiClass.FREE_TEXT, text, "pseudonym", KEY)
    assert out is not None and out.startswith("Call (") and out.endswith(".")
    for raw in ("555)123-4567", "jane.doe@gmail.com", "abcdEFGH1234ijklMNOP5678"):
        assert raw not in out
    assert "@pseudo.invalid" in out
    strategies = {PiiClass.EMAIL: "partial", PiiClass.PHONE: "null", PiiClass.SECRET: "redact"}
    mixed = mask_findings(text, scan_text(text), strategies.__getitem__, KEY)
    assert mixed == "Call **** or mail j***@gmail.com; key ****."
    assert mask_value(PiiClass.FREE_TEXT, "nothing to see", "redact", KEY) == "nothing to see"
