"""Checksum validators for structured identifiers (cards, IBANs, national ids).

A checksum is what separates a card number from an order number and an SSN from a part
number: detectors only report a digit run once its validator agrees. The same validators
are offered by name to custom detectors in the config (``validator: luhn``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.de import idnr as _de_idnr
from stdnum.es import dni as _es_dni
from stdnum.fr import nir as _fr_nir
from stdnum.it import codicefiscale as _it_cf
from stdnum.nl import bsn as _nl_bsn
from stdnum.us import ssn as _us_ssn

_SEPARATORS = re.compile(r"[\s\-.]")
# UK National Insurance number: two prefix letters (some never issued), six digits, suffix A-D.
_NINO = re.compile(r"^(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]$")
# Issuer identification number ranges of the major card networks, with the lengths they issue.
_CARD_IIN = re.compile(
    r"^(?:4\d{12}(?:\d{3}|\d{6})?"  # Visa 13, 16, 19
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard 16
    r"|3[47]\d{13}"  # American Express 15
    r"|(?:6011|65\d{2}|64[4-9]\d)\d{12,15}"  # Discover 16-19
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB 16-19
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners Club 14-19
    r"|62\d{14,17}"  # UnionPay 16-19
    r"|(?:5018|5020|5038|5893|6304|6759|676[1-3])\d{8,15})$"  # Maestro 12-19
)


def compact(value: str) -> str:
    return _SEPARATORS.sub("", value)


def luhn(value: str) -> bool:
    digits = compact(value)
    return digits.isdigit() and len(digits) >= 2 and _luhn.is_valid(digits)


def payment_card(value: str) -> bool:
    """A 13-19 digit number of a known card network that passes the Luhn check."""
    digits = compact(value)
    return 13 <= len(digits) <= 19 and digits.isascii() and bool(_CARD_IIN.match(digits)) and luhn(digits)


def iban(value: str) -> bool:
    return bool(_iban.is_valid(value))


def ssn(value: str) -> bool:
    """A US Social Security number that could have been issued (area, group and serial rules)."""
    return bool(_us_ssn.is_valid(value))


def nino(value: str) -> bool:
    return bool(_NINO.match(compact(value).upper()))


def _stdnum(module: ModuleType) -> Callable[[str], bool]:
    check = module.is_valid

    def valid(value: str) -> bool:
        return bool(check(value))

    return valid


# Name -> validator, for custom detectors and for the national-id content check.
VALIDATORS: dict[str, Callable[[str], bool]] = {
    "luhn": luhn,
    "payment_card": payment_card,
    "iban": iban,
    "ssn": ssn,
    "nino": nino,
    "de_idnr": _stdnum(_de_idnr),
    "fr_nir": _stdnum(_fr_nir),
    "nl_bsn": _stdnum(_nl_bsn),
    "es_dni": _stdnum(_es_dni),
    "it_codicefiscale": _stdnum(_it_cf),
}

# National ids whose format is distinctive enough to be recognised without a column-name hint
# (letters in fixed places, separators), tried in order. Plain digit ids (BSN, Steuer-ID) are only
# checked when the column's name says national id: too many ordinary numbers pass their checksums.
_DISTINCTIVE_IDS: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (
    (re.compile(r"^\d{3}-\d{2}-\d{4}$"), ssn),
    (re.compile(r"^[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]$"), nino),
    (re.compile(r"^\d{8}-?[A-Z]$"), VALIDATORS["es_dni"]),
    (re.compile(r"^[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]$"), VALIDATORS["it_codicefiscale"]),
    (re.compile(r"^[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3} ?\d{2}$"), VALIDATORS["fr_nir"]),
)
_HINTED_IDS = ("ssn", "de_idnr", "nl_bsn", "fr_nir", "es_dni", "it_codicefiscale", "nino")


def national_id(value: str, *, hinted: bool = False) -> bool:
    """A national identification number with a valid checksum. With ``hinted`` (the column is
    named like a national id), undelimited digit ids are accepted too."""
    v = value.strip().upper()
    if not 8 <= len(v) <= 24:
        return False
    if any(p.match(v) and check(v) for p, check in _DISTINCTIVE_IDS):
        return True
    if hinted:
        return any(VALIDATORS[name](v) for name in _HINTED_IDS)
    return False
