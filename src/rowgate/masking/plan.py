"""Which output columns of a result a masked identity gets masked, and how, sans-IO.

Per column, from the best knowledge available: the statement's lineage (every source
column the value is computed from), else the RowDescription's table OID and attribute
number, else nothing, in which case the values are content-scanned. A value computed
from sensitive sources is masked with the profile's strategy for its class; a
computed value (upper(email), string_agg(ssn, ','), CASE WHEN email LIKE ...) is
redacted: ``partial`` would keep a piece of whatever was computed, and a deterministic
pseudonym of a computed value answers questions about it (equal outputs, equal
inputs); values mixing classes get the strictest strategy the classes agree on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from rowgate.masking.classes import ColumnClass, PiiClass
from rowgate.masking.rewrite import Treatment
from rowgate.pgwire.backend import FieldDescription
from rowgate.sql.lineage import Lineage, OutputColumn
from rowgate.sql.lineage_scope import STAR


class ClassificationView(Protocol):
    def column(self, qualified: str) -> ColumnClass | None: ...

    def by_attr(self, table_oid: int, attnum: int) -> ColumnClass | None: ...


class Strategies(Protocol):
    def strategy(self, cls: PiiClass, column: str | None = None) -> str: ...


class Unknown(Exception):
    """A source column the classification has not seen yet (new column or relation)."""


def source_classes(sources: Iterable[str], classification: ClassificationView) -> dict[str, PiiClass]:
    """The sensitive ones of ``sources`` with their classes; raises Unknown for a source
    never classified."""
    out: dict[str, PiiClass] = {}
    for src in sources:
        cc = classification.column(src)
        if cc is None:
            raise Unknown(src)
        if cc.cls is not None:
            out[src] = cc.cls
    return out


def _for_classes(found: dict[str, PiiClass], transform: str, profile: Strategies) -> Treatment:
    classes = sorted(set(found.values()))
    if classes == [PiiClass.FREE_TEXT] and transform == "identity":
        return "scan"
    strategies = {profile.strategy(cls, col) for col, cls in found.items()}
    cls = next((c for c in classes if c != PiiClass.FREE_TEXT), classes[0])
    if transform != "identity":
        # a deterministic mask of a computed value is an oracle (CASE WHEN email LIKE 'a%'
        # THEN 'y' END, max(email)), and partial keeps a piece of it: redact
        return (cls, "null" if strategies == {"null"} else "redact")
    if len(classes) == 1 and len(strategies) == 1:
        return (cls, strategies.pop())
    # several classes or strategies in one value (a whole row): a pseudonym only if all agree
    return (cls, "pseudonym" if strategies == {"pseudonym"} else "redact")


def _from_lineage(out: OutputColumn, classification: ClassificationView, profile: Strategies) -> Treatment:
    try:
        found = source_classes(out.sources, classification)
    except Unknown:
        return "scan"
    if found:
        return _for_classes(found, out.transform, profile)
    return "scan" if out.opaque else None


def _from_attr(col: FieldDescription, classification: ClassificationView, profile: Strategies) -> Treatment:
    if col.table_oid == 0 or col.column <= 0:
        return "scan"
    cc = classification.by_attr(col.table_oid, col.column)
    if cc is None:
        return "scan"
    return None if cc.cls is None else _for_classes({cc.column: cc.cls}, "identity", profile)


def _stricter(a: Treatment, b: Treatment) -> Treatment:
    """Lineage and the RowDescription disagree: the one that masks wins."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    if a == "scan":
        return b
    if b == "scan":
        return a
    return (a[0], "pseudonym" if a[1] == b[1] == "pseudonym" else "redact")


def _aligned(outputs: Sequence[OutputColumn], n: int) -> Sequence[OutputColumn]:
    """The lineage outputs matched to a result of ``n`` columns. An output named ``*``
    (``(c).*``, ``(jsonb_populate_record(...)).*``, an unknown table's ``*``) stands for
    any number of columns: the columns before the first and after the last such output
    keep their own lineage, every column in between may hold any of the values between.
    A count that still does not fit means the lineage does not describe this result:
    every column may hold any value the statement reads."""
    if len(outputs) == n:
        return outputs
    stars = [i for i, o in enumerate(outputs) if o.name == STAR]
    first, last = (stars[0], stars[-1] + 1) if stars else (0, len(outputs))
    if not stars or first + len(outputs) - last > n:
        first, last = 0, len(outputs)
    middle = outputs[first:last]
    sources: frozenset[str] = frozenset().union(*(o.sources for o in middle))
    merged = OutputColumn(STAR, sources, "transformation", True)
    return [*outputs[:first], *([merged] * (n - first - (len(outputs) - last))), *outputs[last:]]


def plan_result(
    columns: Sequence[FieldDescription],
    lineage: Lineage | None,
    classification: ClassificationView | None,
    profile: Strategies,
) -> tuple[Treatment, ...]:
    """One treatment per column of a result (see ``rewrite.Treatment``)."""
    if classification is None:  # nothing known yet: every value is scanned
        return tuple("scan" for _ in columns)
    outputs = _aligned(lineage.outputs, len(columns)) if lineage is not None else None
    plan: list[Treatment] = []
    for i, col in enumerate(columns):
        by_attr = _from_attr(col, classification, profile) if col.table_oid else None
        if outputs is not None:
            plan.append(_stricter(_from_lineage(outputs[i], classification, profile), by_attr))
        else:
            plan.append(_from_attr(col, classification, profile))
    return tuple(plan)


def sensitive_sources(lineage: Lineage, classification: ClassificationView) -> dict[str, PiiClass | None]:
    """Every source column a statement reads, writes or filters on that is sensitive
    (class) or not classified yet (None)."""
    found: dict[str, PiiClass | None] = {}
    every: set[str] = set()
    for out in lineage.outputs:
        every |= out.sources
    for cols in (*lineage.uses.values(), *lineage.writes.values()):
        every |= cols
    for src in every:
        cc = classification.column(src)
        if cc is None:
            found[src] = None
        elif cc.cls is not None:
            found[src] = cc.cls
    return found
