"""The vocabulary of masking: what kinds of sensitive data exist and how a column or a value was classified.

Kept dependency-free so that the wire stage, the classifier and the config can all import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PiiClass(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    PERSON_NAME = "person_name"
    ADDRESS = "address"
    DATE_OF_BIRTH = "date_of_birth"
    NATIONAL_ID = "national_id"
    PAYMENT_CARD = "payment_card"
    IBAN = "iban"
    IP_ADDRESS = "ip_address"
    SECRET = "secret"
    JWT = "jwt"
    FREE_TEXT = "free_text"  # free text containing PII or secrets: masked by scanning, finding by finding


@dataclass(frozen=True, slots=True)
class ColumnClass:
    """The classification of one column. `cls` None means "looked at and not sensitive"."""

    column: str  # "schema.table.column"
    cls: PiiClass | None
    confidence: float  # 0..1
    evidence: tuple[str, ...]
    source: str  # "name" | "content" | "config" | "comment" | "lineage" | "none"

    @property
    def sensitive(self) -> bool:
        return self.cls is not None


@dataclass(frozen=True, slots=True)
class Finding:
    """A sensitive span inside a text value: value[start:end] is of class `cls`."""

    cls: PiiClass
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class CustomDetector:
    """A user-defined content detector (from config): a regex, optionally confirmed by a named validator
    (applied to the first capture group if the regex has one, else to the whole match)."""

    name: str
    cls: PiiClass
    pattern: str
    validator: str | None = None  # one of detectors.VALIDATORS: "luhn", "iban", "ssn", ...
