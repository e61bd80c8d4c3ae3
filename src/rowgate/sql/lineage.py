"""Column lineage: for every statement of a message, where each output column's values come
from (``schema.table.column`` sources, through aliases, expressions, subqueries, CTEs, set
operations, joins, functions in FROM and views), which source columns each clause uses
(the inference defence: a masked column in WHERE, JOIN, GROUP BY, ORDER BY ...), and which
source columns flow into which written target (INSERT ... SELECT, UPDATE SET, CREATE TABLE
AS, SELECT INTO, COPY TO a file, a program or the client).

Pure: the catalog (``CatalogView``) is the only input besides the text. What cannot be
followed is *opaque* rather than guessed away: functions not known to only compute
(``functions.is_known_safe``), record-returning functions without known columns, the ``*``
or whole row of a table the catalog does not know, view definitions that do not parse or
nest deeper than ``MAX_VIEW_DEPTH``, expressions nested deeper than ``MAX_DEPTH``. An output
named ``*`` that is opaque stands for an unknown number of columns: a consumer whose result
has a different column count than ``outputs`` must treat every column as opaque.

Statements: SELECT/VALUES/TABLE, INSERT/UPDATE/DELETE/MERGE (outputs: RETURNING), COPY
(outputs only for COPY TO STDOUT), CREATE TABLE AS / SELECT INTO (no outputs; writes),
EXPLAIN (one opaque "QUERY PLAN" output; uses of the explained statement; its writes only
with ANALYZE), SHOW (no sources; opaque for ``SHOW ALL`` and custom settings, which may hold
anything set_config put there), PREPARE and DECLARE CURSOR (the lineage of their query).
FETCH, EXECUTE and CALL are None: their results depend on what the text does not show.
Everything else has no outputs, uses or writes. A ``SET search_path`` earlier in the same
message applies to the statements after it, exactly as in the analyzer.

Results are cached per (text, search_path, catalog): a catalog exposing ``version: int``
invalidates its entries by bumping it; one without is keyed by identity only. Statements
that differ only in literals (applications that inline them) share an entry by their shape
(``analyzer.literal_free_shape``: one plain read, no function calls, no reg* casts; integers
stay in the shape where they may be a column's position, as in ``DISTINCT ON (1)``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pglast import ast, parser

from rowgate.sql.analyzer import CACHE_MAX_TEXT, Shape, analyze, literal_free_shape
from rowgate.sql.classify import _explain_analyze
from rowgate.sql.facts import Kind
from rowgate.sql.lineage_expr import MAX_DEPTH
from rowgate.sql.lineage_query import MAX_VIEW_DEPTH, CatalogView, Tracer
from rowgate.sql.lineage_scope import STAR, TRANSFORMS, Columns, Flow, Rel, rel_star
from rowgate.sql.names import parse_search_path

__all__ = [
    "MAX_DEPTH", "MAX_VIEW_DEPTH", "CatalogView", "Lineage", "OutputColumn", "cache_clear", "statement_lineage",
]

CACHE_SIZE = 2048


@dataclass(frozen=True)
class OutputColumn:
    name: str
    sources: frozenset[str]  # "schema.table.column" the value is computed from
    transform: str  # "identity" | "transformation" | "aggregation" (OpenLineage subtypes)
    opaque: bool  # lineage unknown (record-returning function, unknown table, ...): content-scan it


@dataclass(frozen=True)
class Lineage:
    outputs: tuple[OutputColumn, ...]
    # clause ("where", "join", "group_by", "order_by", "having", "window", "distinct",
    # "distinct_on", "function_arg") -> source columns
    uses: Mapping[str, frozenset[str]]
    writes: Mapping[str, frozenset[str]]  # target table, "file:<path>", "program" or "stdout" -> sources


def statement_lineage(
    sql: str, catalog: CatalogView, search_path: tuple[str, ...] = ("public",)
) -> list[Lineage | None]:
    """One entry per statement of ``sql`` (None where lineage cannot be computed)."""
    if len(sql) > CACHE_MAX_TEXT:
        return list(_compute(sql, catalog, search_path))
    version = getattr(catalog, "version", None)
    keys: list[_Key] = [(sql, search_path, id(catalog), version if isinstance(version, int) else None, False)]
    if (hit := _get(keys[0], catalog)) is not None:
        return hit
    shape = literal_free_shape(sql, search_path)
    if shape is not None:
        keys.append((shape, *keys[0][1:4], True))
        if (hit := _get(keys[1], catalog)) is not None:
            return hit
    result = _compute(sql, catalog, search_path)
    with _lock:
        for key in keys:
            # the entry holds the catalog, so its id cannot be reused by another while cached
            _cache[key] = (catalog, result)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return list(result)


def _get(key: _Key, catalog: CatalogView) -> list[Lineage | None] | None:
    with _lock:
        hit = _cache.get(key)
        if hit is None or hit[0] is not catalog:
            return None
        _cache.move_to_end(key)
        return list(hit[1])


# (text or shape, search_path, catalog id, catalog version, whether the first is a shape)
_Key = tuple[str | Shape, tuple[str, ...], int, int | None, bool]
_cache: OrderedDict[_Key, tuple[CatalogView, tuple[Lineage | None, ...]]]
_cache = OrderedDict()
_lock = threading.Lock()


def cache_clear() -> None:
    with _lock:
        _cache.clear()


def _compute(sql: str, catalog: CatalogView, search_path: tuple[str, ...]) -> tuple[Lineage | None, ...]:
    facts = analyze(sql, search_path)
    if any(s.kind is Kind.UNPARSEABLE for s in facts):
        return tuple(None for _ in facts)
    try:
        nodes = [raw.stmt for raw in parser.parse_sql(sql) or () if raw.stmt is not None]
    except Exception:  # the analyzer parsed it; anything else is no lineage, never a guess
        return tuple(None for _ in facts)
    if len(nodes) != len(facts):
        return tuple(None for _ in facts)
    results: list[Lineage | None] = []
    path = search_path
    for node, fact in zip(nodes, facts, strict=True):
        try:
            results.append(_statement(node, Tracer(catalog, path, {})))
        except RecursionError:
            results.append(None)
        if fact.setting is not None and fact.setting[0] in ("search_path", "all"):
            value = fact.setting[1]
            path = parse_search_path(value) if value is not None else search_path
    return tuple(results)


def _statement(node: ast.Node, t: Tracer) -> Lineage | None:
    outputs: Columns = []
    if isinstance(node, ast.SelectStmt):
        rel = t.query(node, None)
        outputs = [] if node.intoClause is not None else rel.columns
    elif isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
        outputs = t.query(node, None).columns
    elif isinstance(node, ast.CopyStmt):
        outputs = _copy(node, t)
    elif isinstance(node, ast.CreateTableAsStmt):
        if not isinstance(node.query, ast.SelectStmt) or node.into is None or node.into.rel is None:
            return None  # CREATE TABLE ... AS EXECUTE: the prepared statement is not in the text
        rel = t.query(node.query, None)
        t.write(t.new_table(node.into.rel), [f for _, f in rel.columns])
    elif isinstance(node, ast.ExplainStmt):
        return _explain(node, t)
    elif isinstance(node, ast.VariableShowStmt):
        name = (node.name or "").lower()
        if name == "all":
            outputs = [(n, Flow(opaque=True)) for n in ("name", "setting", "description")]
        else:
            outputs = [(name, Flow(opaque="." in name))]
    elif isinstance(node, ast.PrepareStmt | ast.DeclareCursorStmt):
        return _statement(node.query, t) if isinstance(node.query, ast.Node) else None
    elif isinstance(node, ast.FetchStmt | ast.ExecuteStmt | ast.CallStmt):
        return None
    return _lineage(outputs, t)


def _copy(node: ast.CopyStmt, t: Tracer) -> Columns:
    if node.relation is not None:
        rel: Rel = t.relation(node.relation)
        table = rel.table or t.resolve(node.relation)
        if node.is_from:
            t.write(table, [])
            return []
        names = [a.sval or "" for a in node.attlist or () if isinstance(a, ast.String)]
        columns = [(n, rel.column(n) or rel.unlisted(n) or t.stale(rel, n)) for n in names] or rel_star(rel)
    else:
        columns = t.query(node.query, None).columns
    target = "program" if node.is_program else f"file:{node.filename}" if node.filename is not None else "stdout"
    t.write(target, [f for _, f in columns])
    return columns if target == "stdout" else []


def _explain(node: ast.ExplainStmt, t: Tracer) -> Lineage:
    inner = _statement(node.query, t) if isinstance(node.query, ast.Node) else None
    plan = (OutputColumn("QUERY PLAN", frozenset(), TRANSFORMS[1], True),)
    if inner is None:
        return Lineage(plan, MappingProxyType({}), MappingProxyType({}))
    writes = inner.writes if _explain_analyze(node.options) else MappingProxyType({})
    return Lineage(plan, inner.uses, writes)


def _lineage(outputs: Sequence[tuple[str, Flow]], t: Tracer) -> Lineage:
    return Lineage(
        outputs=tuple(
            OutputColumn(name, flow.sources, TRANSFORMS[flow.kind], flow.opaque or name == STAR)
            for name, flow in outputs
        ),
        uses=MappingProxyType({k: frozenset(v) for k, v in sorted(t.uses.items()) if v}),
        writes=MappingProxyType({k: frozenset(v) for k, v in sorted(t.writes.items())}),
    )
