"""Column lineage of INSERT, UPDATE, DELETE and MERGE: what their RETURNING lists return
(the target's columns, each also computed from whatever the statement wrote into it) and
which source columns flow into the target table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pglast import ast
from pglast.enums import CmdType

from rowgate.sql.lineage_scope import (
    IDENTITY,
    NOTHING,
    OPAQUE,
    STAR,
    Flow,
    Level,
    Rel,
    alias_name,
    base_column,
    merge,
    result_of,
)

if TYPE_CHECKING:
    from rowgate.sql.lineage_query import Tracer


def target_rel(t: Tracer, rv: ast.RangeVar | None) -> Rel:
    if rv is None:
        return Rel("", [(STAR, OPAQUE)], complete=False, fallback=OPAQUE)
    table = t.resolve(rv)
    columns = t.catalog.columns(table)
    name = alias_name(rv.alias) or rv.relname or ""
    if columns is None:
        return Rel(name, [(STAR, OPAQUE)], table, complete=False)
    return Rel(name, [(c, base_column(table, c)) for c in columns], table)


def returning(t: Tracer, clause: ast.ReturningClause | None, level: Level, target: Rel) -> Rel:
    if clause is None:
        return Rel("", [])
    names = {"old": "old", "new": "new"}
    for option in clause.options or ():
        if isinstance(option, ast.ReturningOption) and option.option is not None:
            names["old" if option.option.name.endswith("OLD") else "new"] = option.value or ""
    # old./new. only qualify: unqualified names keep meaning the target's columns
    qualifiers = Rel("", [], sides=tuple(Rel(n, target.columns, target.table, target.complete, target.fallback)
                                         for n in names.values()))
    return result_of(t.target_list(clause.exprs, Level([*level.rels, qualifiers], level.parent)))


def insert(t: Tracer, stmt: ast.InsertStmt, parent: Level | None) -> Rel:
    with t.with_clause(stmt.withClause, parent):
        target = target_rel(t, stmt.relation)
        names = [c.name or "" for c in stmt.cols or () if isinstance(c, ast.ResTarget)]
        if not names:
            names = [n for n, _ in target.columns if n != STAR]
        values = t.query(stmt.selectStmt, parent) if stmt.selectStmt is not None else Rel("", [])
        incoming = {n: f for n, (_, f) in zip(names, values.columns, strict=False)}
        t.write(target.table or "?", [f for _, f in values.columns])
        excluded = Rel("excluded", [(n, incoming.get(n, NOTHING)) for n, _ in target.columns], target.table)
        conflict = stmt.onConflictClause
        assigned: dict[str, Flow] = {}
        if conflict is not None:
            scope = Level([target, excluded], parent)
            assigned = set_list(t, conflict.targetList, scope, target)
            t.use_expr("where", conflict.whereClause, scope)
        stored = {n: merge([incoming[n]] if n in incoming else [], IDENTITY) for n in names}
        for name, flow in assigned.items():
            stored[name] = merge([stored[name], flow], IDENTITY) if name in stored else flow
        written = _with_values(target, stored)
        return returning(t, stmt.returningClause, Level([written], parent), written)


def update(t: Tracer, stmt: ast.UpdateStmt, parent: Level | None) -> Rel:
    with t.with_clause(stmt.withClause, parent):
        target = target_rel(t, stmt.relation)
        level = Level([target], parent)
        for item in stmt.fromClause or ():
            level.rels.append(t.from_item(item, level))
        assigned = set_list(t, stmt.targetList, level, target)
        t.use_expr("where", stmt.whereClause, level)
        level.rels[0] = _with_values(target, assigned)
        return returning(t, stmt.returningClause, level, level.rels[0])


def delete(t: Tracer, stmt: ast.DeleteStmt, parent: Level | None) -> Rel:
    with t.with_clause(stmt.withClause, parent):
        target = target_rel(t, stmt.relation)
        level = Level([target], parent)
        for item in stmt.usingClause or ():
            level.rels.append(t.from_item(item, level))
        t.use_expr("where", stmt.whereClause, level)
        return returning(t, stmt.returningClause, level, target)


def merge_stmt(t: Tracer, stmt: ast.MergeStmt, parent: Level | None) -> Rel:
    with t.with_clause(stmt.withClause, parent):
        target = target_rel(t, stmt.relation)
        level = Level([target], parent)
        level.rels.append(t.from_item(stmt.sourceRelation, level))
        t.use_expr("join", stmt.joinCondition, level)
        assigned: dict[str, Flow] = {}
        for when in stmt.mergeWhenClauses or ():
            if not isinstance(when, ast.MergeWhenClause):
                continue
            t.use_expr("where", when.condition, level)
            if when.commandType == CmdType.CMD_UPDATE:
                assigned.update(set_list(t, when.targetList, level, target))
            elif when.commandType == CmdType.CMD_INSERT:
                names = [c.name or "" for c in when.targetList or () if isinstance(c, ast.ResTarget)]
                names = names or [n for n, _ in target.columns if n != STAR]
                flows = [t.flow(v, level) for v in when.values or ()]
                t.write(target.table or "?", flows)
                for name, flow in zip(names, flows, strict=False):
                    assigned[name] = merge([assigned[name], flow], IDENTITY) if name in assigned else flow
        t.write(target.table or "?", [])
        level.rels[0] = _with_values(target, assigned)
        return returning(t, stmt.returningClause, level, level.rels[0])


def set_list(t: Tracer, targets: Sequence[object] | None, level: Level, target: Rel) -> dict[str, Flow]:
    """UPDATE SET / ON CONFLICT DO UPDATE SET / MERGE UPDATE SET: column -> new value."""
    assigned: dict[str, Flow] = {}
    for item in targets or ():
        if not isinstance(item, ast.ResTarget):
            continue
        value = item.val
        if isinstance(value, ast.MultiAssignRef):  # SET (a, b) = (SELECT x, y ...) / = (x, y)
            source = value.source
            position = (value.colno or 1) - 1
            if isinstance(source, ast.RowExpr) and position < len(source.args or ()):
                flow = t.flow((source.args or ())[position], level)
            elif isinstance(source, ast.SubLink):
                body = t.query(source.subselect, level)
                flow = body.columns[position][1] if position < len(body.columns) else OPAQUE
            else:
                flow = t.flow(source, level)
        else:
            flow = t.flow(value, level)
        if item.indirection:  # SET a[1] = ..., SET comp.field = ...
            flow = merge([flow, t.flow(item.indirection, level)])
        assigned[item.name or ""] = flow
    t.write(target.table or "?", list(assigned.values()))
    return assigned


def _with_values(target: Rel, values: dict[str, Flow]) -> Rel:
    """The target table as RETURNING sees it: each column also carries what was written to it."""
    columns = [(n, merge([f, values[n]], IDENTITY) if n in values else f) for n, f in target.columns]
    return Rel(target.name, columns, target.table, target.complete, target.fallback)

