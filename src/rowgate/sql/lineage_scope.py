"""The name scopes column lineage resolves references in, and the value it tracks per column.

A ``Flow`` is what one value is computed from: source columns (``schema.table.column``), the
strongest operation on the path (identity < transformation < aggregation) and whether some
part of it is unknown (opaque: the value must be content-scanned). A ``Rel`` is one FROM
item (table, view, CTE, subquery, function, join) with its columns in order; a column named
``*`` stands for an unknown number of columns (an unknown table's ``*``). A ``Level`` is one
query level's FROM items, chained to the enclosing levels for correlated references.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import MinMaxOp, SubLinkType

IDENTITY, TRANSFORMATION, AGGREGATION = 0, 1, 2
TRANSFORMS = ("identity", "transformation", "aggregation")
STAR = "*"


@dataclass(frozen=True, slots=True)
class Flow:
    sources: frozenset[str] = frozenset()
    kind: int = TRANSFORMATION
    opaque: bool = False


NOTHING = Flow()  # a literal or parameter: computed from no column
OPAQUE = Flow(opaque=True)


def merge(flows: Iterable[Flow], kind: int = TRANSFORMATION) -> Flow:
    """One value computed from all of ``flows``; ``kind`` is the least it counts as."""
    sources: set[str] = set()
    opaque = False
    for f in flows:
        sources |= f.sources
        kind = max(kind, f.kind)
        opaque = opaque or f.opaque
    return Flow(frozenset(sources), kind, opaque)


def base_column(table: str, column: str) -> Flow:
    return Flow(frozenset({f"{table}.{column}"}), IDENTITY)


Columns = list[tuple[str, Flow]]


@dataclass(slots=True)
class Rel:
    name: str  # how references qualify it ("" when they cannot)
    columns: Columns
    table: str | None = None  # schema.table of a base relation or view
    complete: bool = True  # False: it has columns not listed (unknown table, record function)
    fallback: Flow | None = None  # what an unlisted column is computed from (None with a table: table.column)
    sides: tuple[Rel, ...] = ()  # a join's inputs
    sides_visible: bool = True  # an aliased join hides its inputs' names

    def column(self, name: str) -> Flow | None:
        for column, flow in self.columns:
            if column == name and column != STAR:
                return flow
        return None

    def unlisted(self, name: str) -> Flow | None:
        """A column this relation may have although its list does not show it."""
        if self.complete:
            return None
        if self.sides:
            guesses = [g for side in self.sides if (g := side.unlisted(name)) is not None]
            return merge(guesses, IDENTITY if len(guesses) == 1 else TRANSFORMATION) if guesses else OPAQUE
        if self.fallback is not None:
            return self.fallback
        if self.table is not None:
            return base_column(self.table, name)
        return OPAQUE

    def whole_row(self) -> Flow:
        flows = [f for _, f in self.columns]
        if not self.complete:
            flows.append(self.fallback or OPAQUE)
        return merge(flows)

    def find(self, name: str, table: str | None) -> Rel | None:
        if self.name == name and (table is None or self.table == table):
            return self
        if self.sides_visible:
            for side in self.sides:
                hit = side.find(name, table)
                if hit is not None:
                    return hit
        return None


def renamed(rel: Rel, name: str, alias: ast.Alias | None) -> Rel:
    """``rel`` under an alias, whose column names replace the first columns' names."""
    columns = list(rel.columns)
    names = [c.sval or "" for c in (alias.colnames or ()) if isinstance(c, ast.String)] if alias else []
    # past what we know of the relation, which of its columns a name is, is unknown: it may
    # be any column a ``*`` stands for (``(c).*``), or any column of the relation
    stars = [f for n, f in rel.columns if n == STAR]
    unknown = merge([*(stars or [rel.whole_row()]), OPAQUE])
    for position, new in enumerate(names):
        if position < len(columns) and columns[position][0] != STAR:
            columns[position] = (new, columns[position][1])
        else:
            columns.insert(position, (new, unknown))
    return Rel(name, columns, rel.table, rel.complete, rel.fallback, rel.sides, rel.sides_visible)


@dataclass(slots=True)
class Level:
    rels: list[Rel] = field(default_factory=list)
    parent: Level | None = None


def find_column(level: Level | None, name: str) -> Flow | None:
    """An unqualified column, innermost level first. A relation of unknown columns may hold
    it too: its guess joins the candidates, and the search goes on outwards until a level
    whose listed columns have it."""
    guesses: list[Flow] = []
    while level is not None:
        found = [f for rel in level.rels if (f := rel.column(name)) is not None]
        if found:
            guesses.extend(found)
            break
        guesses.extend(g for rel in level.rels if (g := rel.unlisted(name)) is not None)
        level = level.parent
    if not guesses:
        return None
    return guesses[0] if len(guesses) == 1 else merge(guesses)


def find_rel(level: Level | None, quals: tuple[str, ...]) -> Rel | None:
    """The FROM item a qualifier names: ``alias``, ``table``, ``schema.table``, ``db.schema.table``."""
    table = ".".join(quals[-2:]) if len(quals) >= 2 else None
    while level is not None:
        for rel in level.rels:
            hit = rel.find(quals[-1], table)
            if hit is not None:
                return hit
        level = level.parent
    return None


def star_columns(level: Level) -> Columns:
    return [column for rel in level.rels for column in rel.columns] + [
        (STAR, rel.fallback or OPAQUE) for rel in level.rels if not rel.complete and not _lists_star(rel)
    ]


def _lists_star(rel: Rel) -> bool:
    return any(column == STAR for column, _ in rel.columns)


def rel_star(rel: Rel) -> Columns:
    columns = list(rel.columns)
    if not rel.complete and not _lists_star(rel):
        columns.append((STAR, rel.unlisted(STAR) or OPAQUE))
    return columns


def alias_name(alias: ast.Alias | None) -> str:
    return (alias.aliasname or "") if alias is not None else ""


def result_of(outputs: Columns) -> Rel:
    unknown = [f for n, f in outputs if n == STAR]
    return Rel("", outputs, complete=not unknown, fallback=merge(unknown) if unknown else None)


# output names: PostgreSQL's FigureColname -------------------------------------------------

_SVF_NAMES = {"CURRENT_TIMESTAMP_N": "current_timestamp", "CURRENT_TIME_N": "current_time",
              "LOCALTIME_N": "localtime", "LOCALTIMESTAMP_N": "localtimestamp"}


def figure_name(node: object) -> str:
    name = _figure(node, 0)
    return name or "?column?"


def _figure(node: object, depth: int) -> str | None:
    if depth > 50:
        return None
    if isinstance(node, ast.ColumnRef):
        last = (node.fields or (None,))[-1]
        return last.sval if isinstance(last, ast.String) else None
    if isinstance(node, ast.A_Indirection):
        for item in reversed(node.indirection or ()):
            if isinstance(item, ast.String):
                return item.sval
        return _figure(node.arg, depth + 1)
    if isinstance(node, ast.FuncCall):
        last = (node.funcname or (None,))[-1]
        return last.sval if isinstance(last, ast.String) else None
    if isinstance(node, ast.TypeCast):
        inner = _figure(node.arg, depth + 1)
        if inner is None and node.typeName is not None:
            names = node.typeName.names or ()
            last = names[-1] if names else None
            return last.sval if isinstance(last, ast.String) else None
        return inner
    if isinstance(node, ast.CollateClause):
        return _figure(node.arg, depth + 1)
    if isinstance(node, ast.CaseExpr):
        return _figure(node.defresult, depth + 1) or "case"
    if isinstance(node, ast.SubLink):
        kind = node.subLinkType
        if kind == SubLinkType.EXISTS_SUBLINK:
            return "exists"
        if kind == SubLinkType.ARRAY_SUBLINK:
            return "array"
        if kind in (SubLinkType.EXPR_SUBLINK, SubLinkType.MULTIEXPR_SUBLINK):
            sub = node.subselect
            targets = sub.targetList if isinstance(sub, ast.SelectStmt) else None
            first = targets[0] if targets else None
            if isinstance(first, ast.ResTarget):
                return first.name or _figure(first.val, depth + 1)
        return None
    if isinstance(node, ast.A_Expr):
        return "nullif" if node.kind is not None and node.kind.name == "AEXPR_NULLIF" else None
    if isinstance(node, ast.SQLValueFunction) and node.op is not None:
        op = node.op.name.removeprefix("SVFOP_")
        return _SVF_NAMES.get(op, op.lower())
    if isinstance(node, ast.MinMaxExpr):
        return "greatest" if node.op == MinMaxOp.IS_GREATEST else "least"
    return _FIXED_NAMES.get(type(node))


_FIXED_NAMES: dict[type, str] = {
    ast.A_ArrayExpr: "array", ast.RowExpr: "row", ast.CoalesceExpr: "coalesce", ast.GroupingFunc: "grouping",
    ast.MergeSupportFunc: "merge_action", ast.XmlSerialize: "xmlserialize",
}
