"""Heuristics for the classes without a checksum: person names, postal addresses, dates of birth.

These cannot be recognised reliably inside free text ("Jordan" is a country and a first name;
"12 Oak Lane" could be a product description), so they are only used on whole column values,
and names and dates of birth only when the column's name already suggests them. Free text is
scanned for the structured classes only (see detectors.scan_text)."""

from __future__ import annotations

import importlib
import re
from datetime import date
from functools import cache

_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame", "mx"})
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "md", "phd", "dds", "dvm", "esq"})
_NAME_TOKEN = re.compile(r"^[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'\u2019\-]*\.?$")
_EURO_STREET = re.compile(
    r"(?:\b[A-ZÄÖÜ][\wäöüß\-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|laan|straat|gracht|plein)\s+\d+"
    r"|^\d+\s*,?\s*(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai)\b"
    r"|^(?:calle|avenida|plaza|paseo|via|viale|piazza|corso)\s+\S+.*\d)",
    re.IGNORECASE,
)
_POSTCODE = re.compile(
    r"^(?:\d{5}(?:-\d{4})?"  # US ZIP, DE/FR/ES/IT
    r"|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}"  # UK
    r"|\d{4} ?[A-Z]{2}"  # NL
    r"|[A-Z]\d[A-Z] ?\d[A-Z]\d)$"  # CA
)
_DATE_FORMATS = (
    re.compile(r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?:[ T]00:00(?::00)?)?$"),
    re.compile(r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})$"),
    re.compile(r"^(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})$"),
)


@cache
def _names() -> tuple[frozenset[str], frozenset[str]]:
    first: set[str] = set()
    last: set[str] = set()
    for locale in _LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in ("first_names", "first_names_male", "first_names_female"):
            first.update(n.lower() for n in getattr(provider, attr, ()))
        last.update(n.lower() for n in getattr(provider, "last_names", ()))
    return frozenset(first), frozenset(last)


@cache
def _street_suffix() -> re.Pattern[str]:
    provider = importlib.import_module("faker.providers.address.en_US").Provider
    suffixes = set(provider.street_suffixes) | {"St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Pl", "Sq", "Pkwy",
                                                "Hwy", "Cir", "Trl", "Ter", "Way"}
    alternation = "|".join(sorted((re.escape(s) for s in suffixes), key=len, reverse=True))
    return re.compile(rf"^\d{{1,6}}[A-Za-z]?\s+(?:[A-Za-z0-9'.\-]+\s+){{0,5}}(?:{alternation})\b\.?", re.IGNORECASE)


def _tokens(value: str) -> list[str]:
    words = value.replace(",", " ").split()
    return [w for w in words if w.lower().rstrip(".") not in _TITLES | _SUFFIXES]


def person_name_shape(value: str) -> bool:
    """One to four capitalised words (titles and suffixes aside): "Ann", "Mary-Jo O'Neil", "Dr. Li Wei"."""
    tokens = _tokens(value)
    return 1 <= len(tokens) <= 4 and len(value) <= 80 and all(_NAME_TOKEN.match(t) for t in tokens)


def known_person_name(value: str) -> bool:
    """Shaped like a name and starting with a known first name or ending with a known last name, so
    that "Classic Oak Mug" in products.name is not taken for a person."""
    if not person_name_shape(value):
        return False
    first, last = _names()
    tokens = [t.rstrip(".").lower() for t in _tokens(value)]
    return tokens[0] in first or (len(tokens) > 1 and tokens[-1] in last)


def full_person_name(value: str) -> bool:
    """Two to four name-shaped words from a known first name to a known last name ("Angela
    Johnson", "Dr. Mary-Jo O'Neil"): strong enough to classify a column whatever its name."""
    if not person_name_shape(value):
        return False
    first, last = _names()
    tokens = [t.rstrip(".").lower() for t in _tokens(value)]
    return len(tokens) >= 2 and tokens[0] in first and tokens[-1] in last


def street_address(value: str) -> bool:
    """A street line: "4821 Oak Ridge Lane Apt. 3", "Hauptstraße 12", "12 rue de la Paix"."""
    v = value.strip()
    return bool(_street_suffix().match(v) or _EURO_STREET.search(v))


def address_part(value: str) -> bool:
    """With an address-like column name: a street line, a postcode, or a place name."""
    v = value.strip()
    if street_address(v) or _POSTCODE.match(v.upper()):
        return True
    words = v.replace(",", " ").split()
    return 1 <= len(words) <= 8 and any(c.isalpha() for c in v) and len(v) <= 200


def birth_date(value: str, today: date | None = None) -> bool:
    """A calendar date a living person could have been born on."""
    v = value.strip()
    for fmt in _DATE_FORMATS:
        m = fmt.match(v)
        if m:
            try:
                d = date(int(m["y"]), int(m["m"]), int(m["d"]))
            except ValueError:
                return False
            return date(1900, 1, 1) <= d <= (today or date.today())
    return False
