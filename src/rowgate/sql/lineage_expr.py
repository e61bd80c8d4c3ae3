"""Column lineage of expressions: which source columns a value is computed from.

Every operator, function, CASE, cast or constructor passes on the sources of all its
operands, conditions included (``CASE WHEN email LIKE 'a%' THEN 1 END`` tells about
email). Aggregates make the value an aggregation. A function rowgate does not know to be
a plain computation (``functions.is_known_safe``) makes the value opaque, and its arguments'
sources are recorded under the "function_arg" use: it may send them anywhere.

Nesting deeper than ``MAX_DEPTH`` is not followed recursively: the subtree's column
references are collected with a loop instead and the value is opaque, so a filter hidden
under a thousand parentheses still shows up in ``uses``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pglast import ast
from pglast.enums import SubLinkType

from rowgate.sql.functions import AGGREGATES, BUILTIN_OPERATORS, base_name, is_known_safe
from rowgate.sql.lineage_scope import (
    AGGREGATION,
    IDENTITY,
    NOTHING,
    OPAQUE,
    STAR,
    TRANSFORMATION,
    Flow,
    Level,
    Rel,
    find_column,
    find_rel,
    merge,
    star_columns,
)
from rowgate.sql.names import builtins_shadowable

MAX_DEPTH = 96

_NO_SOURCES = (ast.A_Const, ast.ParamRef, ast.SQLValueFunction, ast.SetToDefault, ast.MergeSupportFunc,
               ast.String, ast.Integer, ast.Float, ast.Boolean, ast.BitString, ast.TypeName)


def _slots(cls: type) -> tuple[str, ...]:
    return tuple(getattr(cls, "__slots__", ()))


def string_fields(fields: tuple[Any, ...] | None) -> tuple[str, ...] | None:
    """The names of a ColumnRef's fields, or None when it ends in ``*``."""
    names: list[str] = []
    for f in fields or ():
        if not isinstance(f, ast.String):
            return None
        names.append(f.sval or "")
    return tuple(names)


class Expressions:
    def __init__(self, search_path: tuple[str, ...]) -> None:
        self.search_path = search_path
        self.shadowable = builtins_shadowable(search_path)
        self.uses: dict[str, set[str]] = {}
        self.depth = 0
        self._handlers: dict[type, Callable[[Any, Level | None], Flow]] = {
            ast.ColumnRef: self._column_ref, ast.FuncCall: self._func_call, ast.A_Expr: self._a_expr,
            ast.A_Indirection: self._indirection, ast.SubLink: self._sublink, ast.SelectStmt: self._subquery,
            ast.InsertStmt: self._subquery, ast.UpdateStmt: self._subquery, ast.DeleteStmt: self._subquery,
            ast.MergeStmt: self._subquery,
        }

    # implemented by the query tracer
    def query(self, node: ast.Node | None, parent: Level | None) -> Rel:
        raise NotImplementedError

    def use(self, clause: str, flow: Flow) -> None:
        if flow.sources:
            self.uses.setdefault(clause, set()).update(flow.sources)

    def use_expr(self, clause: str, node: object, level: Level | None) -> Flow:
        flow = self.flow(node, level)
        self.use(clause, flow)
        return flow

    # evaluation ------------------------------------------------------------------------

    def flow(self, node: object, level: Level | None) -> Flow:
        if node is None or isinstance(node, _NO_SOURCES):
            return NOTHING
        if isinstance(node, list | tuple):
            return merge(self.flow(item, level) for item in node)
        if not isinstance(node, ast.Node):
            return NOTHING
        if self.depth >= MAX_DEPTH:
            return self.flat(node, level)
        self.depth += 1
        try:
            handler = self._handlers.get(type(node))
            if handler is not None:
                return handler(node, level)
            return merge(self.flow(getattr(node, attr), level) for attr in _slots(type(node)))
        finally:
            self.depth -= 1

    def flat(self, node: object, level: Level | None) -> Flow:
        """Too deep to follow: every column reference in the subtree, resolved where it
        stands or else against every table the subtree names; opaque."""
        refs: list[ast.ColumnRef] = []
        tables: list[Rel] = []
        stack: list[object] = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, list | tuple):
                stack.extend(item)
            elif isinstance(item, ast.ColumnRef):
                refs.append(item)
            elif isinstance(item, ast.RangeVar):
                tables.append(self.relation(item))
            elif isinstance(item, ast.Node):
                stack.extend(getattr(item, attr) for attr in _slots(type(item)))
        flows = [OPAQUE]
        for ref in refs:
            names = string_fields(ref.fields)
            column = names[-1] if names else STAR
            found = find_column(level, column) if names and len(names) == 1 else None
            if found is not None:
                flows.append(found)
                continue
            for rel in tables:
                hit = rel.column(column) if column != STAR else None
                flows.append(hit if hit is not None else rel.whole_row() if column == STAR else NOTHING)
            rel_here = find_rel(level, names[:-1]) if names and len(names) > 1 else None
            if rel_here is not None:
                flows.append(rel_here.column(column) or rel_here.whole_row())
        return merge(flows)

    # implemented by the query tracer: a RangeVar as a Rel (for ``flat``)
    def relation(self, rv: ast.RangeVar) -> Rel:
        raise NotImplementedError

    # column references -------------------------------------------------------------------

    def _column_ref(self, node: ast.ColumnRef, level: Level | None) -> Flow:
        names = string_fields(node.fields)
        if names is None:  # t.* (or *) used as a value: the whole row
            quals = tuple(f.sval or "" for f in (node.fields or ())[:-1] if isinstance(f, ast.String))
            if not quals:
                return merge(f for _, f in star_columns(level)) if level is not None else OPAQUE
            rel = find_rel(level, quals)
            return rel.whole_row() if rel is not None else OPAQUE
        return self.reference(names, level)

    def reference(self, names: tuple[str, ...], level: Level | None) -> Flow:
        """PostgreSQL's order: a column; a relation's column (``A.B``, ``A.B.C``,
        ``D.A.B.C``) with any further names selecting fields; a column with fields; a
        relation's whole row."""
        if len(names) == 1:
            found = find_column(level, names[0])
            rel = find_rel(level, names)
            if found is not None:
                # a relation of unknown columns may or may not have one of that name
                return merge([found, rel.whole_row()]) if rel is not None and not rel.complete else found
            if rel is not None:
                return rel.whole_row()
            return self.unresolved(names[0], level)
        for k in range(min(3, len(names) - 1), 0, -1):
            rel = find_rel(level, names[:k])
            if rel is None:
                continue
            column = rel.column(names[k])
            if column is None:
                column = rel.unlisted(names[k]) or self.stale(rel, names[k])
            return column if k + 1 == len(names) else _field(column)
        found = find_column(level, names[0])
        if found is not None:
            return _field(found)
        return self.unresolved(names[-1], level)

    def stale(self, rel: Rel, column: str) -> Flow:
        """A column the catalog does not list for a known table (added since it was read)."""
        if rel.table is not None:
            return Flow(frozenset({f"{rel.table}.{column}"}), IDENTITY, opaque=True)
        return OPAQUE

    def unresolved(self, column: str, level: Level | None) -> Flow:
        """A name nothing in scope has: a stale catalog (or a system column). Guess the
        innermost level's tables, and let the content scanner decide."""
        while level is not None and not level.rels:
            level = level.parent
        flows = [self.stale(rel, column) for rel in level.rels] if level is not None else []
        return merge(flows, IDENTITY) if flows else OPAQUE

    def _indirection(self, node: ast.A_Indirection, level: Level | None) -> Flow:
        steps = list(node.indirection or ())
        arg = node.arg
        base: Flow | None = None
        if isinstance(arg, ast.ColumnRef) and steps and isinstance(steps[0], ast.String):
            names = string_fields(arg.fields)
            # (c).email where c is a FROM item rather than a column: that column, as is
            if names is not None and (len(names) > 1 or find_column(level, names[0]) is None):
                rel = find_rel(level, names)
                if rel is not None:
                    field_name = steps.pop(0).sval or ""
                    base = rel.column(field_name) or rel.unlisted(field_name) or self.stale(rel, field_name)
        if base is None:
            base = self.flow(arg, level)
        if not steps:
            return base
        subscripts = [self.flow(step, level) for step in steps if isinstance(step, ast.A_Indices)]
        return merge([base, *subscripts])

    # operators and functions ------------------------------------------------------------

    def _a_expr(self, node: ast.A_Expr, level: Level | None) -> Flow:
        # "a || b || c ..." nests to the left: follow that spine in a loop
        flows: list[Flow] = []
        opaque = False
        current: object = node
        while isinstance(current, ast.A_Expr):
            opaque = opaque or not _builtin_operator(current.name)
            flows.append(self.flow(current.rexpr, level))
            current = current.lexpr
        flows.append(self.flow(current, level))
        result = merge(flows)
        if opaque:
            self.use("function_arg", result)
            return Flow(result.sources, result.kind, True)
        return result

    def _func_call(self, node: ast.FuncCall, level: Level | None) -> Flow:
        name = ".".join(s.sval or "" for s in node.funcname or () if isinstance(s, ast.String))
        base = base_name(name)
        args = [self.flow(node.args, level)]
        if node.agg_within_group:  # percentile_cont(0.5) WITHIN GROUP (ORDER BY salary): salary is the input
            args.append(self.flow(node.agg_order, level))
        elif node.agg_order:
            self.use_expr("order_by", node.agg_order, level)
        if node.agg_filter is not None:
            self.use_expr("where", node.agg_filter, level)
        if node.over is not None:
            self.window(node.over, level)
        aggregate = base in AGGREGATES or bool(node.agg_star or node.agg_distinct or node.agg_filter)
        aggregate = aggregate or (bool(node.agg_order) and not node.agg_within_group)
        result = merge(args, AGGREGATION if aggregate else TRANSFORMATION)
        if not is_known_safe(name, shadowable=self.shadowable):
            self.use("function_arg", result)
            return Flow(result.sources, result.kind, True)
        return result

    def window(self, window: ast.WindowDef, level: Level | None) -> None:
        self.use_expr("window", (window.partitionClause, window.orderClause), level)

    # subqueries ----------------------------------------------------------------------------

    def _sublink(self, node: ast.SubLink, level: Level | None) -> Flow:
        test = self.flow(node.testexpr, level)
        result = self.query(node.subselect, level)
        if node.subLinkType == SubLinkType.EXISTS_SUBLINK:
            return NOTHING  # its filters were recorded as uses by the subquery itself
        outputs = [f for _, f in result.columns] + ([] if result.complete else [result.fallback or OPAQUE])
        if node.subLinkType == SubLinkType.EXPR_SUBLINK and node.testexpr is None and len(outputs) == 1:
            return outputs[0]  # (SELECT email ...) is the column itself
        return merge([test, *outputs])

    def _subquery(self, node: ast.Node, level: Level | None) -> Flow:
        result = self.query(node, level)
        return merge([f for _, f in result.columns])


def _field(flow: Flow) -> Flow:
    """A field of a composite column: computed from the column."""
    return Flow(flow.sources, max(flow.kind, TRANSFORMATION), flow.opaque)


def _builtin_operator(name: object) -> bool:
    parts = [n.sval or "" for n in name if isinstance(n, ast.String)] if isinstance(name, tuple | list) else []
    if not parts:
        return True
    return (len(parts) == 1 or parts[0].lower() == "pg_catalog") and parts[-1] in BUILTIN_OPERATORS
