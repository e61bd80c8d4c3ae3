"""Classifying every column of a database, with evidence.

Precedence: a config pin (``masking.columns``) > a column comment (``pii:email``, ``pii:none``,
``sensitive``, ``not sensitive``) > lineage (view columns computed from sensitive columns) >
content (the sampled values) > name. A column whose name suggests a class keeps that class
even when its sample is empty or unconvincing: masking a column too much is the safe mistake.

Types decide what is looked at: text, varchar, char, citext, json, jsonb, xml and arrays of them
are content-scanned; numbers may be classified as cards, national ids or phones by name; dates
and timestamps only as dates of birth by name; inet/cidr are IP addresses by type; booleans and
everything else are never sensitive."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from rowgate.catalog import Catalog, CatalogColumn, CatalogTable
from rowgate.masking import names, people
from rowgate.masking.classes import ColumnClass, CustomDetector, PiiClass
from rowgate.masking.config import MaskingConfig
from rowgate.masking.detectors import classify_value, scan_text

log = logging.getLogger("rowgate.masking")

_NUMERIC = frozenset({"int2", "int4", "int8", "numeric", "float8", "float4", "money"})
_DATES = frozenset({"date", "timestamp", "timestamptz"})
_NETWORK = frozenset({"inet", "cidr"})
_BY_NUMBER = frozenset({PiiClass.PAYMENT_CARD, PiiClass.NATIONAL_ID, PiiClass.PHONE})
_COMMENT = re.compile(r"\bpii\s*[:=]\s*([a-z_]+)|\b(not[\s_-]+sensitive|sensitive)\b", re.IGNORECASE)
_DESCRIPTION = {
    PiiClass.EMAIL: "email addresses", PiiClass.PHONE: "phone numbers", PiiClass.PERSON_NAME: "person names",
    PiiClass.ADDRESS: "postal addresses", PiiClass.DATE_OF_BIRTH: "dates of birth",
    PiiClass.NATIONAL_ID: "national ids with a valid checksum", PiiClass.PAYMENT_CARD: "Luhn-valid card numbers",
    PiiClass.IBAN: "valid IBANs", PiiClass.IP_ADDRESS: "IP addresses", PiiClass.SECRET: "secrets or credentials",
    PiiClass.JWT: "JWTs", PiiClass.FREE_TEXT: "text containing PII or secrets",
}
_NAME_KNOWN_IN_PERSON_TABLE = 0.5
_NAME_KNOWN_ELSEWHERE = 0.8


class Classification:
    """The classification of one upstream database."""

    def __init__(self, columns: Mapping[str, ColumnClass], attrs: Mapping[tuple[int, int], str], version: str) -> None:
        self._columns = dict(columns)
        self._attrs = dict(attrs)
        self.version = version  # the catalog version it was made from

    def column(self, qualified: str) -> ColumnClass | None:
        """"schema.table.column" -> its class (cls None: not sensitive); None if unknown."""
        return self._columns.get(qualified)

    def by_attr(self, table_oid: int, attnum: int) -> ColumnClass | None:
        name = self._attrs.get((table_oid, attnum))
        return None if name is None else self._columns.get(name)

    def sensitive(self) -> Mapping[str, ColumnClass]:
        return MappingProxyType({k: c for k, c in self._columns.items() if c.cls is not None})

    def all(self) -> Mapping[str, ColumnClass]:
        return MappingProxyType(self._columns)


def _allowed(cls: PiiClass, column: CatalogColumn) -> bool:
    if column.scanned:
        return True
    if column.is_array:
        return False
    if column.base_type in _NUMERIC:
        return cls in _BY_NUMBER
    if column.base_type in _DATES:
        return cls is PiiClass.DATE_OF_BIRTH
    if column.base_type in _NETWORK:
        return cls is PiiClass.IP_ADDRESS
    return column.base_type == "bytea" and cls is PiiClass.SECRET


def _from_comment(comment: str | None) -> tuple[PiiClass | None, bool] | None:
    """(class, sensitive) a column comment declares, or None if it declares nothing."""
    if not comment:
        return None
    m = _COMMENT.search(comment)
    if m is None:
        return None
    if m.group(1):
        value = m.group(1).lower()
        if value in ("none", "no", "false"):
            return None, False
        try:
            return PiiClass(value), True
        except ValueError:
            return None, True
    return None, not m.group(2).lower().startswith("not")


def _content(samples: Sequence[str], hint: PiiClass | None, extra: Sequence[CustomDetector]
             ) -> tuple[Counter[PiiClass], int, Counter[PiiClass]]:
    """Per whole-value class, how many samples are of it; how many have findings inside other text;
    of which classes those findings are."""
    hints = frozenset({hint}) if hint else frozenset()
    whole: Counter[PiiClass] = Counter()
    inside: Counter[PiiClass] = Counter()
    embedded = 0
    for v in samples:
        cls = classify_value(v, hints)
        if cls is not None:
            whole[cls] += 1
        findings = scan_text(v, extra)
        stripped = v.strip()
        # a finding that is the whole value is a (possibly chance) whole-value match, counted above:
        # one Luhn-valid order number among hundreds does not make a column free text
        if findings and not (len(findings) == 1 and v[findings[0].start:findings[0].end] == stripped):
            embedded += 1
            inside.update({f.cls for f in findings})
    return whole, embedded, inside


def classify_column(table: CatalogTable, column: CatalogColumn, cfg: MaskingConfig) -> ColumnClass:
    qualified = f"{table.qualified}.{column.name}"
    pinned = cfg.column_setting(qualified)
    if pinned is not None:
        pattern, setting = pinned
        return ColumnClass(qualified, setting.cls if setting.sensitive else None, 1.0,
                           (f"config: masking.columns[{pattern!r}]",), "config")
    detected = _detect(table, column, cfg)
    declared = _from_comment(column.comment)
    if declared is None:
        return detected
    cls, sensitive = declared
    evidence = (f"comment: {column.comment!r}",)
    if not sensitive:
        return ColumnClass(qualified, None, 0.95, evidence, "comment")
    # "sensitive" without a class: the detected class if any, else fully redacted like a secret
    chosen = cls or detected.cls or PiiClass.SECRET
    return ColumnClass(qualified, chosen, 0.95, evidence + detected.evidence, "comment")


def _detect(table: CatalogTable, column: CatalogColumn, cfg: MaskingConfig) -> ColumnClass:
    qualified = f"{table.qualified}.{column.name}"
    if column.base_type in _NETWORK and not column.is_array:
        return ColumnClass(qualified, PiiClass.IP_ADDRESS, 0.95, (f"type: {column.type_name}",), "content")
    hint = names.name_hint(column.name)
    if hint is not None and not _allowed(hint, column):
        hint = None
    samples = table.samples.get(column.name, ()) if column.scanned else ()
    n = len(samples)
    evidence: list[str] = []
    named = hint is not None or names.ambiguous_name(column.name)
    if hint is None and names.ambiguous_name(column.name) and samples:
        known = sum(people.known_person_name(v) for v in samples) / n
        needed = _NAME_KNOWN_IN_PERSON_TABLE if names.person_table(table.name) else _NAME_KNOWN_ELSEWHERE
        if known >= needed:
            hint = PiiClass.PERSON_NAME
            evidence.append(f"content: {round(known * n)}/{n} sampled values are known first or last names")
    elif hint is None and samples:
        # a column named innocuously (``who``, ``contact_person``) full of "First Last" values
        full = sum(people.full_person_name(v) for v in samples) / n
        if full >= cfg.threshold:
            hint = PiiClass.PERSON_NAME
            evidence.append(f"content: {round(full * n)}/{n} sampled values are a known first and last name")
    if hint is not None and named:
        evidence.append(f"name: {column.name!r} suggests {_DESCRIPTION[hint]}")
    if hint is PiiClass.DATE_OF_BIRTH and column.base_type in _DATES:
        return ColumnClass(qualified, hint, 0.9, (*evidence, f"type: {column.type_name}"), "name")
    whole, embedded, inside = _content(samples, hint, cfg.custom_detectors)
    if whole:
        best, k = whole.most_common(1)[0]
        if k / n >= cfg.threshold or (best is hint and k / n >= cfg.threshold / 2):
            confidence = min(0.99, 0.6 + 0.35 * k / n + (0.05 if best is hint else 0))
            return ColumnClass(qualified, best, round(confidence, 2),
                               (f"content: {k}/{n} sampled values are {_DESCRIPTION[best]}", *evidence), "content")
    if hint is not None:
        if n:
            k = whole.get(hint, 0)
            evidence.append(f"content: {k}/{n} sampled values look like {_DESCRIPTION[hint]}")
        confidence = 0.7 if n == 0 else 0.6
        return ColumnClass(qualified, hint, confidence, tuple(evidence), "name")
    if embedded:
        kinds = ", ".join(sorted(c.value for c in inside))
        return ColumnClass(qualified, PiiClass.FREE_TEXT, round(min(0.95, 0.6 + embedded / n), 2),
                           (f"content: {embedded}/{n} sampled values contain {kinds}",), "content")
    mixed = sum(whole.values())
    if n and mixed / n >= cfg.threshold / 2:
        kinds = ", ".join(f"{k} {c.value}" for c, k in whole.most_common())
        return ColumnClass(qualified, PiiClass.FREE_TEXT, round(0.6 + 0.3 * mixed / n, 2),
                           (f"content: {mixed}/{n} sampled values are sensitive of mixed classes ({kinds})",),
                           "content")
    why = f"no sensitive name; {n} sampled values without findings" if column.scanned else \
        f"no sensitive name; type {column.type_name} is not scanned"
    return ColumnClass(qualified, None, 0.8 if n or not column.scanned else 0.5, (why,), "none")


def _view_lineage(catalog: Catalog, table: CatalogTable, found: Mapping[str, ColumnClass]
                  ) -> dict[str, ColumnClass]:
    """Classes of a view's columns from the sensitive columns they are computed from."""
    try:
        from rowgate.sql.lineage import statement_lineage
    except ImportError:  # lineage is optional here: views are then classified by their own sample
        return {}
    if table.view_sql is None:
        return {}
    try:
        result = statement_lineage(table.view_sql, catalog, search_path=(table.schema, "public"))
    except Exception as e:  # a view lineage cannot trace keeps its content classification
        log.info("masking: no lineage for view %s: %s", table.qualified, e)
        return {}
    lineage = result[0] if result else None
    if lineage is None:
        return {}
    out: dict[str, ColumnClass] = {}
    for column, output in zip(table.columns, lineage.outputs, strict=False):
        sources = sorted(s for s in output.sources if (c := found.get(s)) is not None and c.cls is not None)
        if sources:
            src = found[sources[0]]
            qualified = f"{table.qualified}.{column.name}"
            out[qualified] = ColumnClass(qualified, src.cls, src.confidence,
                                         (f"lineage: computed from {', '.join(sources)}",), "lineage")
    return out


def classify_catalog(catalog: Catalog, cfg: MaskingConfig) -> Classification:
    columns: dict[str, ColumnClass] = {}
    attrs: dict[tuple[int, int], str] = {}
    for table in catalog.tables.values():
        for column in table.columns:
            qualified = f"{table.qualified}.{column.name}"
            columns[qualified] = classify_column(table, column, cfg)
            attrs[(table.oid, column.attnum)] = qualified
    for table in catalog.tables.values():
        if table.view_sql is None:
            continue
        for qualified, traced in _view_lineage(catalog, table, columns).items():
            own = columns[qualified]
            # what the operator declared stands; a specific class beats "free text" from lineage
            declared = own.source in ("config", "comment")
            if not declared and not (own.cls is not None and traced.cls is PiiClass.FREE_TEXT):
                columns[qualified] = traced
    return Classification(columns, attrs, catalog.version)
