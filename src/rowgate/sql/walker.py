"""Collects what a statement touches: tables read and written, columns per clause,
functions called, and the flags that follow from the shape of its queries.

Column convention: ``schema.table.column`` when the column can be attributed to one base
table: it is qualified by an alias or table name in scope, or it is unqualified and its
query level has exactly one FROM item. Otherwise the table part is ``?``: ``?.column``
(several FROM items, or an item that is a subquery, CTE or function, whose own columns are
recorded by the walk of its body). ``*`` is a column name too: ``SELECT *`` records
``schema.table.*`` for every FROM item, and a bare table name used as a value
(``SELECT c FROM customers c``, a whole-row reference) also records ``schema.table.*``.
Each query level records its own clauses: the select list of a subquery in WHERE lands in
"select". UPDATE SET / INSERT column lists / MERGE actions record their target columns
under "set"; the columns their value expressions read land in "select", because the values
are computed from them just as a select list is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import CmdType, MergeMatchKind, SetOperation

from rowgate.sql import facts
from rowgate.sql.functions import (
    BUILTIN_OPERATORS,
    SEQUENCE_WRITERS,
    SET_CONFIG,
    SET_CONFIG_TRACKED,
    base_name,
    is_known_safe,
)
from rowgate.sql.names import builtins_shadowable, resolve_relation, split_qualified_name
from rowgate.sql.trivial import const, is_trivially_true


@dataclass
class Source:
    name: str  # what column references qualify it with: the alias, else the relation name
    table: str | None  # schema.table for a base relation; None for a subquery, CTE or function


@dataclass
class Scope:
    sources: list[Source]
    parent: Scope | None


@dataclass
class Facts:
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    columns: dict[str, set[str]] = field(default_factory=dict)
    execute_names: list[str] = field(default_factory=list)


def _name(node: object) -> str:
    """The identifier a String or (INSERT column list) ResTarget node holds."""
    if isinstance(node, ast.String):
        return node.sval or ""
    if isinstance(node, ast.ResTarget):
        return node.name or ""
    return ""


def _alias(alias: ast.Alias | None) -> str:
    return (alias.aliasname or "") if alias is not None else ""


def _slots(cls: type) -> tuple[str, ...]:
    # pglast declares every node's attributes in __slots__ (a mapping from name to type info)
    return tuple(getattr(cls, "__slots__", ()))


class Walker:
    def __init__(self, search_path: tuple[str, ...], extra_safe: frozenset[str]) -> None:
        self.search_path = search_path
        self.extra_safe = extra_safe
        self.shadowable = builtins_shadowable(search_path)
        self.facts = Facts()
        self._ctes: list[set[str]] = []
        # how a relation met outside a FROM clause counts: in DDL it is the object changed
        self.bare_relation_writes = False

    # relations -------------------------------------------------------------------------

    def resolve(self, rv: ast.RangeVar) -> str:
        schema = rv.schemaname
        if not schema and rv.relpersistence == "t":
            schema = "pg_temp"
        return resolve_relation(schema, rv.relname or "", self.search_path)

    def _is_cte(self, rv: ast.RangeVar) -> bool:
        return not rv.schemaname and not rv.catalogname and any(rv.relname in frame for frame in self._ctes)

    def write_target(self, rv: ast.RangeVar | None) -> Source:
        # a DML target is never a CTE, even when a CTE of that name is in scope
        if rv is None:
            return Source("", None)
        table = self.resolve(rv)
        self.facts.writes.add(table)
        return Source(_alias(rv.alias) or rv.relname or "", table)

    # queries ---------------------------------------------------------------------------

    def query(self, node: ast.Node | None, outer: Scope | None) -> None:
        if isinstance(node, ast.SelectStmt):
            self.select(node, outer)
        elif isinstance(node, ast.InsertStmt):
            self.insert(node, outer)
        elif isinstance(node, ast.UpdateStmt):
            self.update(node, outer)
        elif isinstance(node, ast.DeleteStmt):
            self.delete(node, outer)
        elif isinstance(node, ast.MergeStmt):
            self.merge(node, outer)
        else:
            self.expr(node, outer, None)

    @contextmanager
    def with_clause(self, wc: ast.WithClause | None, outer: Scope | None) -> Iterator[None]:
        if wc is None:
            yield
            return
        frame: set[str] = set()
        self._ctes.append(frame)
        try:
            ctes = wc.ctes or ()
            if wc.recursive:
                frame.update(cte.ctename or "" for cte in ctes)
            for cte in ctes:
                # without RECURSIVE a CTE body sees only the CTEs before it: in
                # "WITH customers AS (SELECT * FROM customers)" the body reads the real table
                if not isinstance(cte.ctequery, ast.SelectStmt):
                    self.facts.flags.add(facts.DATA_MODIFYING_CTE)
                self.query(cte.ctequery, outer)
                frame.add(cte.ctename or "")
            yield
        finally:
            self._ctes.pop()

    def select(self, stmt: ast.SelectStmt, outer: Scope | None) -> None:
        with self.with_clause(stmt.withClause, outer):
            if stmt.op != SetOperation.SETOP_NONE:
                self._set_operation(stmt, outer)
                return
            scope = Scope([], outer)
            if stmt.intoClause is not None and stmt.intoClause.rel is not None:
                self.facts.writes.add(self.resolve(stmt.intoClause.rel))
            for item in stmt.fromClause or ():
                self.from_item(item, scope)
            self.expr(stmt.valuesLists, scope, "select")
            self.expr(stmt.targetList, scope, "select")
            self.expr([d for d in stmt.distinctClause or () if d is not None], scope, "select")
            self.expr(stmt.whereClause, scope, "where")
            self.expr(stmt.groupClause, scope, "group_by")
            self.expr(stmt.havingClause, scope, "having")
            for window in stmt.windowClause or ():
                self.expr(window.partitionClause, scope, "group_by")
                self.expr(window.orderClause, scope, "order_by")
            outputs = {t.name for t in stmt.targetList or () if isinstance(t, ast.ResTarget) and t.name}
            for sort in stmt.sortClause or ():
                ref = sort.node
                # ORDER BY an output alias: its columns were recorded in the select list
                fields = ref.fields or () if isinstance(ref, ast.ColumnRef) else ()
                if len(fields) == 1 and _name(fields[0]) in outputs:
                    continue
                self.expr(sort, scope, "order_by")
            self.expr((stmt.limitCount, stmt.limitOffset), scope, "select")

    def _set_operation(self, stmt: ast.SelectStmt, outer: Scope | None) -> None:
        # generated SQL chains hundreds of UNION ALL arms into a left-deep tree: walk the
        # chain with a stack rather than one Python frame per arm
        result = Scope([Source("", None)], outer)  # ORDER BY of a UNION names output columns
        pending: list[ast.Node | None] = [stmt]
        while pending:
            node = pending.pop()
            if (isinstance(node, ast.SelectStmt) and node.op != SetOperation.SETOP_NONE
                    and (node is stmt or node.withClause is None)):
                self.expr(node.sortClause, result, "order_by")
                self.expr((node.limitCount, node.limitOffset), result, "select")
                pending.extend((node.rarg, node.larg))
            else:
                self.query(node, outer)

    def from_item(self, item: ast.Node | None, scope: Scope) -> None:
        if item is None:
            return
        if isinstance(item, ast.RangeVar):
            name = _alias(item.alias) or item.relname or ""
            if self._is_cte(item):
                scope.sources.append(Source(name, None))
                return
            table = self.resolve(item)
            self.facts.reads.add(table)
            scope.sources.append(Source(name, table))
        elif isinstance(item, ast.RangeSubselect):
            self.query(item.subquery, scope)
            scope.sources.append(Source(_alias(item.alias), None))
        elif isinstance(item, ast.JoinExpr):
            start = len(scope.sources)
            self.from_item(item.larg, scope)
            middle = len(scope.sources)
            self.from_item(item.rarg, scope)
            sides = (scope.sources[start:middle], scope.sources[middle:])
            self.expr(item.quals, scope, "join")
            for using in item.usingClause or ():
                for side in sides:
                    owner = side[0].table if len(side) == 1 else None
                    self._record(owner, _name(using), "join")
            for alias in (item.alias, item.join_using_alias):
                if alias is not None:
                    scope.sources.append(Source(_alias(alias), None))
        elif isinstance(item, ast.RangeFunction):
            name = _alias(item.alias)
            for entry in item.functions or ():
                func = entry[0] if isinstance(entry, list | tuple) else entry
                self.expr(func, scope, "select")
                if not name and isinstance(func, ast.FuncCall):
                    name = _name((func.funcname or (None,))[-1])
            scope.sources.append(Source(name, None))
        elif isinstance(item, ast.RangeTableSample):
            if item.relation is not None:
                self.from_item(item.relation, scope)
            self.expr((item.args, item.repeatable), scope, "select")
        else:  # XMLTABLE, JSON_TABLE and anything newer: walk it all
            self.expr(item, scope, "select")
            alias = getattr(item, "alias", None)
            scope.sources.append(Source(_alias(alias) if isinstance(alias, ast.Alias) else "", None))

    def insert(self, stmt: ast.InsertStmt, outer: Scope | None) -> None:
        with self.with_clause(stmt.withClause, outer):
            target = self.write_target(stmt.relation)
            for col in stmt.cols or ():
                self._record(target.table, _name(col), "set")
            self.query(stmt.selectStmt, outer)
            scope = Scope([target], outer)
            conflict = stmt.onConflictClause
            if conflict is not None:
                excluded = Scope([target, Source("excluded", target.table)], outer)
                self.expr(conflict.infer, excluded, None)
                self.set_list(conflict.targetList, excluded, target.table)
                self.expr(conflict.whereClause, excluded, "where")
            self.returning(stmt.returningClause, scope)

    def update(self, stmt: ast.UpdateStmt, outer: Scope | None) -> None:
        with self.with_clause(stmt.withClause, outer):
            target = self.write_target(stmt.relation)
            scope = Scope([target], outer)
            for item in stmt.fromClause or ():
                self.from_item(item, scope)
            self.set_list(stmt.targetList, scope, target.table)
            self.expr(stmt.whereClause, scope, "where")
            if self.trivially_true(stmt.whereClause, scope):
                self.facts.flags.add(facts.UPDATE_WITHOUT_WHERE)
            self.returning(stmt.returningClause, scope)

    def delete(self, stmt: ast.DeleteStmt, outer: Scope | None) -> None:
        with self.with_clause(stmt.withClause, outer):
            target = self.write_target(stmt.relation)
            scope = Scope([target], outer)
            for item in stmt.usingClause or ():
                self.from_item(item, scope)
            self.expr(stmt.whereClause, scope, "where")
            if self.trivially_true(stmt.whereClause, scope):
                self.facts.flags.add(facts.DELETE_WITHOUT_WHERE)
            self.returning(stmt.returningClause, scope)

    def merge(self, stmt: ast.MergeStmt, outer: Scope | None) -> None:
        with self.with_clause(stmt.withClause, outer):
            target = self.write_target(stmt.relation)
            scope = Scope([target], outer)
            self.from_item(stmt.sourceRelation, scope)
            self.expr(stmt.joinCondition, scope, "join")
            join_all = self.trivially_true(stmt.joinCondition, scope)
            for when in stmt.mergeWhenClauses or ():
                self.expr(when.condition, scope, "where")
                if when.commandType == CmdType.CMD_UPDATE:
                    self.set_list(when.targetList, scope, target.table)
                elif when.commandType == CmdType.CMD_INSERT:
                    for col in when.targetList or ():
                        self._record(target.table, _name(col), "set")
                    self.expr(when.values, scope, "select")
                # every target row is hit: matched rows under an always-true join, or
                # "NOT MATCHED BY SOURCE" without a condition (all rows the source lacks)
                by_source = when.matchKind == MergeMatchKind.MERGE_WHEN_NOT_MATCHED_BY_SOURCE
                matched = when.matchKind == MergeMatchKind.MERGE_WHEN_MATCHED
                if (by_source or (matched and join_all)) and self.trivially_true(when.condition, scope):
                    if when.commandType == CmdType.CMD_DELETE:
                        self.facts.flags.add(facts.DELETE_WITHOUT_WHERE)
                    elif when.commandType == CmdType.CMD_UPDATE:
                        self.facts.flags.add(facts.UPDATE_WITHOUT_WHERE)
            self.returning(stmt.returningClause, scope)

    def set_list(self, targets: tuple[ast.Node, ...] | None, scope: Scope, table: str | None) -> None:
        for target in targets or ():
            if not isinstance(target, ast.ResTarget):
                continue
            self._record(table, target.name or "", "set")
            self.expr(target.indirection, scope, "select")
            value = target.val
            if isinstance(value, ast.MultiAssignRef):
                if value.colno == 1:  # "SET (a, b) = (SELECT ...)": one source for all columns
                    self.expr(value.source, scope, "select")
            else:
                self.expr(value, scope, "select")

    def returning(self, clause: ast.ReturningClause | None, scope: Scope) -> None:
        if clause is not None:
            self.expr(clause.exprs, scope, "returning")

    def trivially_true(self, where: ast.Node | None, scope: Scope) -> bool:
        return is_trivially_true(where, lambda a, b: self._same(a, b, scope))

    def _same(self, a: object, b: object, scope: Scope) -> bool:
        if isinstance(a, ast.ColumnRef) and isinstance(b, ast.ColumnRef):
            ka, kb = self._column_names(a, scope)[0], self._column_names(b, scope)[0]
            if not ka.startswith("?.") and not kb.startswith("?."):
                return ka == kb
        return bool(a == b)  # pglast compares trees ignoring source locations

    # expressions -----------------------------------------------------------------------

    def expr(self, node: object, scope: Scope | None, clause: str | None) -> None:
        if node is None:
            return
        if isinstance(node, list | tuple):
            for item in node:
                self.expr(item, scope, clause)
            return
        if not isinstance(node, ast.Node):
            return
        if isinstance(node, ast.ColumnRef):
            if clause is not None and scope is not None:
                for name in self._column_names(node, scope):
                    self.facts.columns.setdefault(clause, set()).add(name)
        elif isinstance(node, ast.FuncCall):
            self.func_call(node, scope, clause)
        elif isinstance(node, ast.A_Expr):
            # "a || b || c ..." nests to the left: follow that spine in a loop, not by recursion
            right: list[object] = []
            current: object = node
            while isinstance(current, ast.A_Expr):
                self.operator(current.name)
                right.append(current.rexpr)
                current = current.lexpr
            self.expr(current, scope, clause)
            for operand in reversed(right):
                self.expr(operand, scope, clause)
        elif isinstance(node, ast.SubLink):
            self.expr(node.testexpr, scope, clause)
            self.query(node.subselect, scope)
        elif isinstance(node, ast.SelectStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
            self.query(node, scope)
        elif isinstance(node, ast.ExecuteStmt):
            self.facts.execute_names.append(node.name or "")
            self.facts.flags.add(facts.UNKNOWN_EFFECT)
            self.expr(node.params, scope, clause)
        elif isinstance(node, ast.TableLikeClause) and node.relation is not None:
            self.facts.reads.add(self.resolve(node.relation))
        elif isinstance(node, ast.RangeVar):
            (self.facts.writes if self.bare_relation_writes else self.facts.reads).add(self.resolve(node))
        else:
            for attr in _slots(type(node)):
                self.expr(getattr(node, attr), scope, clause)

    def operator(self, name: object) -> None:
        """An operator runs a function too: one outside PostgreSQL's own set, or named in
        another schema, may be anybody's code."""
        parts = [n.sval or "" for n in name if isinstance(n, ast.String)] if isinstance(name, tuple | list) else []
        if not parts:
            return
        if (len(parts) > 1 and parts[0].lower() != "pg_catalog") or parts[-1] not in BUILTIN_OPERATORS:
            self.facts.flags.add(facts.UNKNOWN_EFFECT)

    def _record(self, table: str | None, column: str, clause: str) -> None:
        self.facts.columns.setdefault(clause, set()).add(f"{table or '?'}.{column}")

    def _lookup(self, quals: tuple[str, ...], scope: Scope | None) -> Source | None:
        wanted = ".".join(quals[-2:]) if len(quals) >= 2 else None
        level = scope
        while level is not None:
            for source in level.sources:
                if wanted is not None and source.table == wanted:
                    return source
                if source.name == quals[-1] and (wanted is None or source.table is None):
                    return source
            level = level.parent
        return None

    def _column_names(self, node: ast.ColumnRef, scope: Scope) -> list[str]:
        """The recorded names of a column reference, most specific first."""
        fields = node.fields or (ast.A_Star(),)
        quals = tuple(_name(f) for f in fields[:-1])
        last = fields[-1]
        column = _name(last) if isinstance(last, ast.String) else "*"
        if quals:
            source = self._lookup(quals, scope)
            if source is not None:
                return [f"{source.table or '?'}.{column}"]
            table = ".".join(quals[-2:]) if len(quals) >= 2 else None
            return [f"{table or '?'}.{column}"]
        level: Scope | None = scope
        while level is not None and not level.sources:
            level = level.parent
        sources = level.sources if level is not None else []
        if column == "*":
            return [f"{s.table or '?'}.*" for s in sources] or ["?.*"]
        names = [f"{sources[0].table or '?'}.{column}" if len(sources) == 1 else f"?.{column}"]
        whole_row = self._lookup((column,), scope)
        if whole_row is not None:  # may be the whole row of that FROM item, as a composite value
            names.append(f"{whole_row.table or '?'}.*")
        return names

    def func_call(self, node: ast.FuncCall, scope: Scope | None, clause: str | None) -> None:
        name = ".".join(_name(s) for s in node.funcname or ())
        self.facts.functions.add(name)
        base = base_name(name)
        if base in SEQUENCE_WRITERS:
            sequence = self._sequence_argument(node.args)
            if sequence is None or (self.shadowable and "." not in name):
                self.facts.flags.add(facts.UNKNOWN_EFFECT)
            if sequence is not None:
                self.facts.writes.add(sequence)
        elif base == SET_CONFIG and (name != base or not self.shadowable):
            # set_config('x', ...) with a literal name is SET x (asyncpg turns jit off this way;
            # RLS applications set 'app.user_id'), except for the settings rowgate must track
            setting = const(node.args[0]) if node.args else None
            key = setting.strip().lower() if isinstance(setting, str) else None
            if key is None or key in SET_CONFIG_TRACKED:
                self.facts.flags.add(facts.UNKNOWN_EFFECT)
            if key is None or key in ("role", "session_authorization"):
                self.facts.flags.add(facts.SET_ROLE)
        elif not is_known_safe(name, extra=self.extra_safe, shadowable=self.shadowable):
            self.facts.flags.add(facts.UNKNOWN_EFFECT)
        self.expr((node.args, node.agg_order, node.agg_filter, node.over), scope, clause)

    def _sequence_argument(self, args: tuple[ast.Node, ...] | None) -> str | None:
        if not args:
            return None
        arg: ast.Node | None = args[0]
        while isinstance(arg, ast.TypeCast):
            arg = arg.arg
        if not (isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.String)):
            return None
        parsed = split_qualified_name(arg.val.sval or "")
        if parsed is None:
            return None
        return resolve_relation(parsed[0], parsed[1], self.search_path)
