"""What a column's name (and its table's name) suggests about its content.

Names are evidence, not proof: most hints only enable weaker content checks or classify a
column nobody has sampled yet. A bare ``name`` is ambiguous (``products.name``), so it only
suggests a person in a person-like table or when the values are known first/last names."""

from __future__ import annotations

import re

from rowgate.masking.classes import PiiClass

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")

_PERSON_TABLES = frozenset({
    "customer", "user", "employee", "person", "people", "contact", "member", "patient", "staff", "client",
    "student", "author", "owner", "applicant", "candidate", "recipient", "guest", "driver", "passenger",
    "subscriber", "account", "profile", "lead", "buyer", "seller", "tenant", "worker", "teacher", "doctor",
})
# Words that turn a sensitive-sounding name into metadata about it: card_type, token_expires_at.
_META = frozenset({
    "type", "kind", "count", "expires", "expiry", "exp", "at", "length", "len", "used", "hint", "last4", "prefix",
    "id", "brand", "network", "issuer", "fee", "status", "verified", "valid", "month", "year", "format", "country",
    "changed", "updated", "created", "policy", "version", "enabled", "required", "reset", "strength",
})
_EXACT: dict[PiiClass, frozenset[str]] = {
    PiiClass.EMAIL: frozenset({"email", "mail", "emailaddress", "emailaddr"}),
    PiiClass.PHONE: frozenset({"phone", "tel", "telephone", "mobile", "cell", "cellphone", "fax", "msisdn",
                               "phonenumber", "phoneno", "mobilephone"}),
    PiiClass.NATIONAL_ID: frozenset({"ssn", "sin", "nino", "nin", "bsn", "nir", "tin", "cpf", "aadhaar", "passport",
                                     "nationalid", "personnummer", "steuerid", "taxid", "idnr", "dni", "nie"}),
    PiiClass.DATE_OF_BIRTH: frozenset({"dob", "birthday", "birthdate", "born", "dateofbirth", "birth"}),
    PiiClass.PAYMENT_CARD: frozenset({"pan", "cc", "ccnum", "ccnumber", "cardnumber", "cardno", "creditcard",
                                      "card", "debitcard"}),
    PiiClass.IBAN: frozenset({"iban", "bban"}),
    PiiClass.IP_ADDRESS: frozenset({"ip", "ipv4", "ipv6", "ipaddr", "ipaddress", "remoteaddr", "clientaddr"}),
    PiiClass.SECRET: frozenset({"password", "passwd", "pwd", "secret", "apikey", "token", "credential",
                                "credentials", "passphrase", "privatekey", "secretkey", "accesskey", "clientsecret",
                                "passwordhash", "authtoken", "accesstoken", "refreshtoken", "sessiontoken", "pin"}),
    PiiClass.JWT: frozenset({"jwt", "idtoken", "bearertoken"}),
    PiiClass.PERSON_NAME: frozenset({"firstname", "lastname", "fullname", "givenname", "familyname", "surname",
                                     "middlename", "maidenname", "cardholder", "holdername", "accountholder",
                                     "customername", "contactname", "legalname", "forename", "cardholdername",
                                     "personname", "employeename", "patientname", "recipientname"}),
    PiiClass.ADDRESS: frozenset({"address", "addr", "street", "streetaddress", "city", "town", "zip", "zipcode",
                                 "postcode", "postalcode", "postal", "addressline", "addressline1", "addressline2",
                                 "shippingaddress", "billingaddress", "homeaddress", "mailingaddress"}),
}
# Substrings of the joined name that are decisive on their own (most specific first).
_CONTAINS: tuple[tuple[str, PiiClass], ...] = (
    ("ipaddress", PiiClass.IP_ADDRESS), ("macaddress", PiiClass.IP_ADDRESS), ("email", PiiClass.EMAIL),
    ("phone", PiiClass.PHONE), ("socialsecurity", PiiClass.NATIONAL_ID), ("nationalid", PiiClass.NATIONAL_ID),
    ("passport", PiiClass.NATIONAL_ID), ("taxid", PiiClass.NATIONAL_ID), ("birth", PiiClass.DATE_OF_BIRTH),
    ("cardnumber", PiiClass.PAYMENT_CARD), ("creditcard", PiiClass.PAYMENT_CARD), ("iban", PiiClass.IBAN),
    ("password", PiiClass.SECRET), ("apikey", PiiClass.SECRET), ("secret", PiiClass.SECRET),
    ("privatekey", PiiClass.SECRET), ("accesskey", PiiClass.SECRET), ("cardholder", PiiClass.PERSON_NAME),
    ("firstname", PiiClass.PERSON_NAME), ("lastname", PiiClass.PERSON_NAME), ("fullname", PiiClass.PERSON_NAME),
    ("surname", PiiClass.PERSON_NAME), ("address", PiiClass.ADDRESS), ("street", PiiClass.ADDRESS),
    ("postcode", PiiClass.ADDRESS), ("postalcode", PiiClass.ADDRESS), ("zipcode", PiiClass.ADDRESS),
)


def tokens(name: str) -> list[str]:
    return [t for t in _SPLIT.split(_CAMEL.sub("_", name).lower()) if t]


def name_hint(column: str) -> PiiClass | None:
    """The class a column name clearly suggests ("customer_email", "ccNumber", "e_mail"), if any."""
    words = tokens(column)
    if not words:
        return None
    joined = "".join(words)
    for cls, exact in _EXACT.items():
        if joined in exact:
            return cls
    if words[-1] in _META or (len(words) > 1 and _META & set(words[1:])):
        return None
    for part, cls in _CONTAINS:
        if part in joined:
            return cls
    for cls, exact in _EXACT.items():
        if any(w in exact for w in words if len(w) > 3 or w in _SHORT_WORDS):
            return cls
    return None


# Short words that are hints even inside a longer name ("user_ssn", "home_tel"); other short
# tokens only count when they are the whole name ("ip", "cc", "pan", "pin").
_SHORT_WORDS = frozenset({"ssn", "dob", "tel", "sin", "bsn", "nir", "zip", "cpf", "jwt", "pwd", "ip"})


def ambiguous_name(column: str) -> bool:
    """A bare ``name``/``display_name``-like column: a person only if table and content agree."""
    return tokens(column) in (["name"], ["display", "name"], ["names"])


def person_table(table: str) -> bool:
    words = tokens(table)
    return any(w.rstrip("s") in _PERSON_TABLES or w in _PERSON_TABLES for w in words)
