"""Content detectors: true positives and the lookalikes that must not be flagged."""

from __future__ import annotations

import random

import pytest

from rowgate.demo.data import card_number, ssn
from rowgate.masking.classes import CustomDetector, PiiClass
from rowgate.masking.detectors import classify_value, scan_text, suspicious
from rowgate.masking.names import ambiguous_name, name_hint, person_table
from rowgate.masking.people import known_person_name

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpI\n" \
      "-----END RSA PRIVATE KEY-----"


def found(text: str) -> list[tuple[PiiClass, str]]:
    return [(f.cls, text[f.start:f.end]) for f in scan_text(text)]


@pytest.mark.parametrize(("text", "cls", "span"), [
    ("write to jane.doe+shop@mail.example.co.uk today", PiiClass.EMAIL, "jane.doe+shop@mail.example.co.uk"),
    ("call (555)123-4567 after 5", PiiClass.PHONE, "(555)123-4567"),
    ("call +1-202-555-0143x123", PiiClass.PHONE, "+1-202-555-0143x123"),
    ("Tel: +44 20 7946 0958", PiiClass.PHONE, "+44 20 7946 0958"),
    ("paid with 4111 1111 1111 1111.", PiiClass.PAYMENT_CARD, "4111 1111 1111 1111"),
    ("amex 3782-822463-10005", PiiClass.PAYMENT_CARD, "3782-822463-10005"),
    ("ssn 536-22-1234 on file", PiiClass.NATIONAL_ID, "536-22-1234"),
    ("NINO AB 12 34 56 C", PiiClass.NATIONAL_ID, "AB 12 34 56 C"),
    ("DNI 54362315K", PiiClass.NATIONAL_ID, "54362315K"),
    ("CF RCCMNL83S18D969H.", PiiClass.NATIONAL_ID, "RCCMNL83S18D969H"),
    ("refund to DE89 3704 0044 0532 0130 00 PLEASE", PiiClass.IBAN, "DE89 3704 0044 0532 0130 00"),
    ("iban GB82WEST12345698765432", PiiClass.IBAN, "GB82WEST12345698765432"),
    ("from 203.0.113.7 at noon", PiiClass.IP_ADDRESS, "203.0.113.7"),
    ("from 2001:db8::ff00:42:8329", PiiClass.IP_ADDRESS, "2001:db8::ff00:42:8329"),
    ("key AKIAIOSFODNN7EXAMPLE ok", PiiClass.SECRET, "AKIAIOSFODNN7EXAMPLE"),
    ("secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", PiiClass.SECRET, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 pushed", PiiClass.SECRET,
     "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
    ("slack xoxb-123456789012-abcdefABCDEF", PiiClass.SECRET, "xoxb-123456789012-abcdefABCDEF"),
    ("stripe sk_test_4eC39HqLyjWDarjtT1zdp7dc", PiiClass.SECRET, "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    ("google AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", PiiClass.SECRET, "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("config api_key=abc123xyz789 end", PiiClass.SECRET, "abc123xyz789"),
    ('{"password": "hunter22"}', PiiClass.SECRET, "hunter22"),
    ("hash $2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", PiiClass.SECRET,
     "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"),
    ("Authorization: Bearer " + JWT, PiiClass.JWT, JWT),
    ("key:\n" + PEM, PiiClass.SECRET, PEM),
])
def test_true_positives(text: str, cls: PiiClass, span: str) -> None:
    assert (cls, span) in found(text)


@pytest.mark.parametrize("text", [
    "delivered", "Classic Oak Mug", "Prefers delivery after 5pm.", "2024-06-30", "2024-06-30 12:30:00+02",
    "order 4111111111111112",  # 16 digits, Luhn-invalid: an order number, not a card
    "order #123456789", "invoice 2024-000123", "tracking 1Z999AA10123456784",
    "12.05.2024", "05/12/2024 10:30", "version 1.2.3", "pi is 3.14159265",
    "id 550e8400-e29b-41d4-a716-446655440000",  # UUIDs are not secrets
    "550E8400E29B41D4A716446655440000",
    "customer_lifetime_value_2024_q3_estimate", "ThisIsAVeryLongClassNameWithoutDigits",
    "https://example.com/api/v1/Users/12345/Orders/67890", "time 12:30:45",
    "SKU-AB12-CD34-EF56-GH78", "ssn 000-12-3456",  # area 000 is never issued
    "price 1234 5678",
])
def test_true_negatives(text: str) -> None:
    assert found(text) == []


def test_demo_values_are_found_and_classified() -> None:
    rng = random.Random(7)
    for _ in range(200):
        card = card_number(rng)
        assert classify_value(card) is PiiClass.PAYMENT_CARD
        assert found(f"card {card} used") == [(PiiClass.PAYMENT_CARD, card)]
        number = ssn(rng)
        assert classify_value(number) is PiiClass.NATIONAL_ID


def test_order_numbers_are_mostly_not_cards() -> None:
    """A random 16-digit number passes Luhn one time in ten; with an IIN check fewer still."""
    rng = random.Random(1)
    hits = sum(classify_value(str(rng.randrange(10**15, 10**16))) is not None for _ in range(1000))
    assert hits < 80


@pytest.mark.parametrize(("value", "hints", "cls"), [
    ("a@b.co", (), PiiClass.EMAIL),
    ("(555)123-4567", (), PiiClass.PHONE),
    ("5551234567", (), None),  # bare digits: a phone only with a name hint
    ("5551234567", (PiiClass.PHONE,), PiiClass.PHONE),
    ("1987-04-12", (PiiClass.PHONE,), None),  # a date is not a phone even in a "phone" column
    ("1987-04-12", (), None),
    ("1987-04-12", (PiiClass.DATE_OF_BIRTH,), PiiClass.DATE_OF_BIRTH),
    ("2199-04-12", (PiiClass.DATE_OF_BIRTH,), None),
    ("John Smith", (), None),
    ("John Smith", (PiiClass.PERSON_NAME,), PiiClass.PERSON_NAME),
    ("4821 Oak Ridge Lane Apt. 3", (), PiiClass.ADDRESS),
    ("Hauptstraße 12", (), PiiClass.ADDRESS),
    ("Springfield", (PiiClass.ADDRESS,), PiiClass.ADDRESS),
    ("10.1.2.3", (), PiiClass.IP_ADDRESS),
    ("111222333", (), None),  # a valid BSN, but undelimited digits need a national-id hint
    ("111222333", (PiiClass.NATIONAL_ID,), PiiClass.NATIONAL_ID),
    ("hunter2", (PiiClass.SECRET,), PiiClass.SECRET),
    ("hunter2", (), None),
    (JWT, (), PiiClass.JWT),
    ("550e8400-e29b-41d4-a716-446655440000", (), None),
])
def test_classify_value(value: str, hints: tuple[PiiClass, ...], cls: PiiClass | None) -> None:
    assert classify_value(value, frozenset(hints)) is cls


def test_product_names_are_not_person_names() -> None:
    assert not known_person_name("Classic Oak Mug")
    assert not known_person_name("Wireless Leather Backpack")
    assert known_person_name("Maria Garcia")
    assert known_person_name("Dr. Anna Schmidt")


@pytest.mark.parametrize(("column", "cls"), [
    ("email", PiiClass.EMAIL), ("e_mail", PiiClass.EMAIL), ("customerEmail", PiiClass.EMAIL),
    ("mobile", PiiClass.PHONE), ("tel", PiiClass.PHONE), ("ssn", PiiClass.NATIONAL_ID),
    ("national_id", PiiClass.NATIONAL_ID), ("nino", PiiClass.NATIONAL_ID), ("dob", PiiClass.DATE_OF_BIRTH),
    ("birth_date", PiiClass.DATE_OF_BIRTH), ("cc_number", PiiClass.PAYMENT_CARD), ("pan", PiiClass.PAYMENT_CARD),
    ("card_holder", PiiClass.PERSON_NAME), ("iban", PiiClass.IBAN), ("ip_addr", PiiClass.IP_ADDRESS),
    ("api_key", PiiClass.SECRET), ("passwd", PiiClass.SECRET), ("first_name", PiiClass.PERSON_NAME),
    ("postcode", PiiClass.ADDRESS), ("street", PiiClass.ADDRESS), ("ip_address", PiiClass.IP_ADDRESS),
    ("email_verified", None), ("card_type", None), ("token_type", None), ("password_changed_at", None),
    ("name", None), ("contact", None), ("status", None), ("user_id", None),
])
def test_name_hints(column: str, cls: PiiClass | None) -> None:
    assert name_hint(column) is cls


def test_bare_name_is_ambiguous() -> None:
    assert ambiguous_name("name") and not ambiguous_name("product_name")
    assert person_table("customers") and person_table("app_users") and not person_table("products")


def test_custom_detector_with_validator() -> None:
    emp = CustomDetector("employee", PiiClass.NATIONAL_ID, r"EMP-(\d{8})", "luhn")
    assert [(f.cls, f.start) for f in scan_text("badge EMP-79927398", [emp])] == [(PiiClass.NATIONAL_ID, 6)]
    assert scan_text("badge EMP-79927391", [emp]) == []  # fails Luhn


def test_prefilter_rejects_ordinary_values() -> None:
    """The backstop runs on every text value: ordinary values must stop at the cheap pre-filter."""
    for value in ("delivered", "Classic Oak Mug", "Leave parcels with the neighbour at number 12."):
        assert not suspicious(value)
        assert scan_text(value) == []
