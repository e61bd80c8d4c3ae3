"""Column lineage of queries: SELECT (with its FROM items, CTEs, set operations and VALUES)
and views; the data-modifying statements are in ``lineage_dml``.

Relation names resolve against the catalog: a schema-qualified name is taken as written; an
unqualified one is the first schema of the search_path whose catalog knows it ("$user" is
skipped: the role is not known here), else ``names.resolve_relation``'s choice. A CTE name
in scope shadows a table (never a schema-qualified one, never a DML target). Views are
followed through their definitions up to ``MAX_VIEW_DEPTH``; the filters inside a view are
the view owner's, not the querying user's, so they are not recorded as uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from pglast import ast, parser
from pglast.enums import SetOperation

from rowgate.sql import lineage_dml
from rowgate.sql.functions import is_known_safe
from rowgate.sql.lineage_expr import MAX_DEPTH, Expressions, string_fields
from rowgate.sql.lineage_scope import (
    IDENTITY,
    NOTHING,
    OPAQUE,
    STAR,
    TRANSFORMATION,
    Columns,
    Flow,
    Level,
    Rel,
    alias_name,
    base_column,
    figure_name,
    find_column,
    find_rel,
    merge,
    rel_star,
    renamed,
    result_of,
    star_columns,
)
from rowgate.sql.names import resolve_relation

MAX_VIEW_DEPTH = 8
# fixpoint rounds for a recursive CTE: sources only grow, and they settle in a round or two
RECURSION_ROUNDS = 4


class CatalogView(Protocol):
    def columns(self, table: str) -> Sequence[str] | None: ...
    def view_sql(self, table: str) -> str | None: ...


# set-returning functions whose columns are known: everything else that is not a plain
# one-column function is opaque
_MULTI_COLUMN = {
    "json_each": ("key", "value"), "jsonb_each": ("key", "value"), "json_each_text": ("key", "value"),
    "jsonb_each_text": ("key", "value"), "pg_options_to_table": ("option_name", "option_value"),
}
_DEFINED_COLUMNS = frozenset({"json_to_record", "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset"})
_POPULATE = frozenset({"json_populate_record", "jsonb_populate_record", "json_populate_recordset",
                       "jsonb_populate_recordset", "jsonb_populate_record_valid"})
# known-safe functions returning rows of their own shape, whose columns are not listed here
_RECORD_PREFIXES = ("pg_", "ts_", "txid_", "information_schema.")


class Tracer(Expressions):
    def __init__(self, catalog: CatalogView, search_path: tuple[str, ...], views: dict[str, Rel],
                 view_depth: int = 0) -> None:
        super().__init__(search_path)
        self.catalog = catalog
        self.writes: dict[str, set[str]] = {}
        self.views = views  # per-call memo of traced views
        self.view_depth = view_depth
        self._ctes: list[dict[str, Rel]] = []

    def write(self, target: str, flows: Sequence[Flow]) -> None:
        self.writes.setdefault(target, set()).update(*(f.sources for f in flows))

    # relations ---------------------------------------------------------------------------

    def resolve(self, rv: ast.RangeVar) -> str:
        name = rv.relname or ""
        if rv.schemaname:
            return f"{rv.schemaname}.{name}"
        if rv.relpersistence == "t":
            return f"pg_temp.{name}"
        path = self.search_path if "pg_catalog" in self.search_path else ("pg_catalog", *self.search_path)
        for schema in path:
            if schema == "$user":
                continue
            candidate = f"{schema}.{name}"
            if self.catalog.columns(candidate) is not None or self.catalog.view_sql(candidate) is not None:
                return candidate
        return resolve_relation(None, name, self.search_path)

    def new_table(self, rv: ast.RangeVar) -> str:
        schema = rv.schemaname or ("pg_temp" if rv.relpersistence == "t" else None)
        return resolve_relation(schema, rv.relname or "", self.search_path)

    def cte(self, rv: ast.RangeVar) -> Rel | None:
        if rv.schemaname or rv.catalogname:
            return None
        for frame in reversed(self._ctes):
            if rv.relname in frame:
                return frame[rv.relname or ""]
        return None

    def relation(self, rv: ast.RangeVar) -> Rel:
        name = rv.relname or ""
        cte = self.cte(rv)
        if cte is not None:
            return cte
        table = self.resolve(rv)
        view = self.catalog.view_sql(table)
        if view is not None:
            return self.view(table, name, view)
        columns = self.catalog.columns(table)
        if columns is None:
            return Rel(name, [(STAR, OPAQUE)], table, complete=False)
        return Rel(name, [(c, base_column(table, c)) for c in columns], table)

    def view(self, table: str, name: str, sql: str) -> Rel:
        traced = self.views.get(table)
        if traced is None:
            traced = self._trace_view(table, sql)
            self.views[table] = traced
        return Rel(name, traced.columns, table, traced.complete, traced.fallback)

    def _trace_view(self, table: str, sql: str) -> Rel:
        names = self.catalog.columns(table)
        body: Rel | None = None
        if self.view_depth < MAX_VIEW_DEPTH:
            try:
                raw = parser.parse_sql(sql)
                stmt = raw[0].stmt if raw and len(raw) == 1 else None
                if isinstance(stmt, ast.SelectStmt):
                    inner = Tracer(self.catalog, self.search_path, self.views, self.view_depth + 1)
                    body = inner.query(stmt, None)
            except Exception:  # a definition we cannot follow is opaque, never trusted
                body = None
        if body is None:
            if names is None:
                return Rel("", [(STAR, OPAQUE)], table, complete=False, fallback=OPAQUE)
            return Rel("", [(c, OPAQUE) for c in names], table)
        if names is not None and len(names) == len(body.columns):
            # the catalog's names win: a column renamed with ALTER VIEW keeps its expression
            return Rel("", [(n, f) for n, (_, f) in zip(names, body.columns, strict=True)], table, body.complete,
                       body.fallback)
        return Rel("", body.columns, table, body.complete, body.fallback or (None if body.complete else OPAQUE))

    # queries -------------------------------------------------------------------------------

    def query(self, node: ast.Node | None, parent: Level | None) -> Rel:
        if self.depth >= MAX_DEPTH:
            # too deep to follow: which clause reads what is unknown, so every column it
            # mentions counts as filtered on
            found = self.use_expr("where", node, parent)
            return Rel("", [(STAR, found)], complete=False, fallback=found)
        self.depth += 1
        try:
            if isinstance(node, ast.SelectStmt):
                return self.select(node, parent)
            if isinstance(node, ast.InsertStmt):
                return lineage_dml.insert(self, node, parent)
            if isinstance(node, ast.UpdateStmt):
                return lineage_dml.update(self, node, parent)
            if isinstance(node, ast.DeleteStmt):
                return lineage_dml.delete(self, node, parent)
            if isinstance(node, ast.MergeStmt):
                return lineage_dml.merge_stmt(self, node, parent)
            return Rel("", [(STAR, OPAQUE)], complete=False, fallback=OPAQUE)
        finally:
            self.depth -= 1

    @contextmanager
    def with_clause(self, wc: ast.WithClause | None, parent: Level | None) -> Iterator[None]:
        if wc is None:
            yield
            return
        frame: dict[str, Rel] = {}
        self._ctes.append(frame)
        try:
            ctes = [c for c in wc.ctes or () if isinstance(c, ast.CommonTableExpr)]
            if wc.recursive:  # any CTE may name any other: unknown until traced
                for cte in ctes:
                    frame[cte.ctename or ""] = Rel(cte.ctename or "", [(STAR, OPAQUE)], complete=False,
                                                   fallback=OPAQUE)
            for cte in ctes:
                # without RECURSIVE the body sees only the CTEs before it (and the real table
                # of its own name)
                name = cte.ctename or ""
                body = cte.ctequery
                if (wc.recursive and isinstance(body, ast.SelectStmt) and body.op == SetOperation.SETOP_UNION
                        and body.withClause is None):
                    rel = self._recursive(name, cte, body, parent, frame)
                else:
                    rel = self.query(body, parent)
                frame[name] = renamed(rel, name, _alias_of(cte))
            yield
        finally:
            self._ctes.pop()

    def _recursive(self, name: str, cte: ast.CommonTableExpr, body: ast.SelectStmt, parent: Level | None,
                   frame: dict[str, Rel]) -> Rel:
        current = self.query(body.larg, parent)
        for _ in range(RECURSION_ROUNDS):
            frame[name] = renamed(current, name, _alias_of(cte))
            step = self.query(body.rarg, parent)
            joined = _union([current, step])
            if joined.columns == current.columns and joined.complete == current.complete:
                break
            current = joined
        else:
            current = Rel("", [(n, merge([f, OPAQUE])) for n, f in current.columns], complete=current.complete)
        return current

    def select(self, stmt: ast.SelectStmt, parent: Level | None) -> Rel:
        with self.with_clause(stmt.withClause, parent):
            if stmt.op != SetOperation.SETOP_NONE:
                result = self._set_operation(stmt, parent)
            elif stmt.valuesLists:
                result = self._values(stmt.valuesLists, parent)
            else:
                result = self._simple(stmt, parent)
            if stmt.intoClause is not None and stmt.intoClause.rel is not None:
                self.write(self.new_table(stmt.intoClause.rel), [f for _, f in result.columns])
            return result

    def _simple(self, stmt: ast.SelectStmt, parent: Level | None) -> Rel:
        level = Level([], parent)
        for item in stmt.fromClause or ():
            level.rels.append(self.from_item(item, level))
        outputs = self.target_list(stmt.targetList, level)
        self.use_expr("where", stmt.whereClause, level)
        for window in stmt.windowClause or ():
            if isinstance(window, ast.WindowDef):
                self.window(window, level)
        for group in grouping_items(stmt.groupClause or ()):
            self.use("group_by", self._by(group, level, outputs, inputs_first=True))
        self.use_expr("having", stmt.havingClause, level)
        distinct = stmt.distinctClause or ()
        if distinct and all(d is None for d in distinct):
            self.use("distinct", merge(f for _, f in outputs))
        for expr in distinct:
            if expr is not None:
                self.use("distinct_on", self._by(expr, level, outputs, inputs_first=False))
        for sort in stmt.sortClause or ():
            node = sort.node if isinstance(sort, ast.SortBy) else sort
            self.use("order_by", self._by(node, level, outputs, inputs_first=False))
        # LIMIT/OFFSET decide which rows come back, like a filter does
        self.use_expr("where", (stmt.limitCount, stmt.limitOffset), level)
        return result_of(outputs)

    def _by(self, node: object, level: Level, outputs: Columns, *, inputs_first: bool) -> Flow:
        """GROUP BY / ORDER BY / DISTINCT ON item: a position or a bare output name means that
        output (ORDER BY prefers outputs, GROUP BY input columns), anything else is evaluated."""
        if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
            position = (node.val.ival or 0) - 1
            return outputs[position][1] if 0 <= position < len(outputs) else NOTHING
        names = string_fields(node.fields) if isinstance(node, ast.ColumnRef) else None
        if names is not None and len(names) == 1:
            matches = [f for n, f in outputs if n == names[0]]
            if matches and not (inputs_first and find_column(level, names[0]) is not None):
                return merge(matches, IDENTITY)
        return self.flow(node, level)

    def _set_operation(self, stmt: ast.SelectStmt, parent: Level | None) -> Rel:
        # generated SQL chains hundreds of UNION ALL arms left-deep: walk them with a stack
        branches: list[Rel] = []
        pending: list[ast.Node | None] = [stmt]
        while pending:
            node = pending.pop()
            if (isinstance(node, ast.SelectStmt) and node.op != SetOperation.SETOP_NONE
                    and (node is stmt or node.withClause is None)):
                pending.extend((node.rarg, node.larg))
            else:
                branches.append(self.query(node, parent))
        result = _union(branches)
        level = Level([Rel("", result.columns)], parent)
        for sort in stmt.sortClause or ():
            node = sort.node if isinstance(sort, ast.SortBy) else sort
            self.use("order_by", self._by(node, level, result.columns, inputs_first=False))
        self.use_expr("where", (stmt.limitCount, stmt.limitOffset), level)
        return result

    def _values(self, rows: Sequence[object], level: Level | None) -> Rel:
        columns: list[list[Flow]] = []
        for row in rows:
            for i, value in enumerate(row if isinstance(row, list | tuple) else ()):
                if i == len(columns):
                    columns.append([])
                columns[i].append(self.flow(value, level))
        return Rel("", [(f"column{i + 1}", merge(flows, IDENTITY)) for i, flows in enumerate(columns)])

    def target_list(self, targets: Sequence[object] | None, level: Level) -> Columns:
        outputs: Columns = []
        for target in targets or ():
            if not isinstance(target, ast.ResTarget):
                continue
            value = target.val
            if isinstance(value, ast.ColumnRef) and string_fields(value.fields) is None:
                quals = tuple(f.sval or "" for f in (value.fields or ())[:-1] if isinstance(f, ast.String))
                rel = find_rel(level, quals) if quals else None
                if quals and rel is None:
                    outputs.append((STAR, OPAQUE))
                else:
                    outputs.extend(rel_star(rel) if rel is not None else star_columns(level))
                continue
            if isinstance(value, ast.A_Indirection) and isinstance((value.indirection or (None,))[-1], ast.A_Star):
                outputs.extend(self._composite_star(value, level))
                continue
            outputs.append((target.name or figure_name(value), self.flow(value, level)))
        return outputs

    def _composite_star(self, node: ast.A_Indirection, level: Level) -> Columns:
        """(c).* : the columns of FROM item c, or of a composite value of unknown shape."""
        if isinstance(node.arg, ast.ColumnRef) and len(node.indirection or ()) == 1:
            names = string_fields(node.arg.fields)
            if names is not None and (len(names) > 1 or find_column(level, names[0]) is None):
                rel = find_rel(level, names)
                if rel is not None:
                    return rel_star(rel)
        value = self.flow(node.arg, level)
        return [(STAR, Flow(value.sources, TRANSFORMATION, True))]

    # FROM ----------------------------------------------------------------------------------

    def from_item(self, item: object, level: Level) -> Rel:
        if isinstance(item, ast.RangeVar):
            return renamed(self.relation(item), alias_name(item.alias) or item.relname or "", item.alias)
        if isinstance(item, ast.RangeSubselect):
            # only LATERAL sees the FROM items before it
            body = self.query(item.subquery, level if item.lateral else level.parent)
            return renamed(body, alias_name(item.alias), item.alias)
        if isinstance(item, ast.JoinExpr):
            return self._join(item, level)
        if isinstance(item, ast.RangeFunction):
            return self._function_rel(item, level)
        if isinstance(item, ast.RangeTableSample):
            rel = self.from_item(item.relation, level)
            self.use_expr("where", (item.args, item.repeatable), level)
            return rel
        if isinstance(item, ast.RangeTableFunc):  # XMLTABLE: every column is cut out of the document
            doc = self.flow((item.docexpr, item.rowexpr, item.namespaces), level)
            columns = [(c.colname or "", merge([doc, self.flow(c.colexpr, level)]) if not c.for_ordinality else NOTHING)
                       for c in item.columns or () if isinstance(c, ast.RangeTableFuncCol)]
            return renamed(Rel("", columns), alias_name(item.alias), item.alias)
        # JSON_TABLE and anything newer: whatever it reads, in columns we do not know
        alias = getattr(item, "alias", None)
        found = self.flat(item, level)
        return Rel(alias_name(alias if isinstance(alias, ast.Alias) else None), [(STAR, found)], complete=False,
                   fallback=found)

    def _join(self, item: ast.JoinExpr, level: Level) -> Rel:
        left = self.from_item(item.larg, level)
        level.rels.append(left)  # a LATERAL right side may name the left one
        try:
            right = self.from_item(item.rarg, level)
        finally:
            level.rels.pop()
        names = [u.sval or "" for u in item.usingClause or () if isinstance(u, ast.String)]
        if item.isNatural:
            right_names = {n for n, _ in right.columns}
            names = [n for n, _ in left.columns if n != STAR and n in right_names]
        merged: Columns = []
        for name in names:
            flows = [f for side in (left, right) if (f := side.column(name) or side.unlisted(name)) is not None]
            flow = merge(flows, IDENTITY)
            self.use("join", flow)
            merged.append((name, flow))
        rest = [(n, f) for side in (left, right) for n, f in side.columns if n not in names or n == STAR]
        complete = left.complete and right.complete
        joined = Rel("", merged + rest, None, complete, sides=(left, right))
        if item.join_using_alias is not None:
            using = Rel(alias_name(item.join_using_alias), merged)
            joined.sides = (left, right, using)
        if item.isNatural and not complete:  # which columns merged is unknown
            joined.columns = [(n, merge([f, OPAQUE])) for n, f in joined.columns]
        check = Level([*level.rels, joined], level.parent)
        self.use_expr("join", item.quals, check)
        if item.alias is not None:
            hidden = renamed(joined, alias_name(item.alias), item.alias)
            hidden.sides_visible = False
            return hidden
        return joined

    def _function_rel(self, item: ast.RangeFunction, level: Level) -> Rel:
        alias = item.alias
        columns: Columns = []
        complete = True
        opaque_flows: list[Flow] = []
        entries = list(item.functions or ())
        for entry in entries:
            func = entry[0] if isinstance(entry, list | tuple) else entry
            coldefs = entry[1] if isinstance(entry, list | tuple) and len(entry) > 1 else None
            defined = [c.colname or "" for c in (coldefs or item.coldeflist or ()) if isinstance(c, ast.ColumnDef)]
            cols, known = self._function_columns(func, level, defined, alias if len(entries) == 1 else None)
            columns.extend(cols)
            complete = complete and known
            if not known:
                opaque_flows.append(merge([f for _, f in cols] + [OPAQUE]))
        if item.ordinality:
            columns.append(("ordinality", NOTHING))
        fallback = merge(opaque_flows) if opaque_flows else None
        if not complete:
            columns.append((STAR, fallback or OPAQUE))
        rel = Rel(alias_name(alias), columns, complete=complete, fallback=fallback)
        return renamed(rel, rel.name, alias)

    def _function_columns(self, func: object, level: Level, defined: list[str],
                          alias: ast.Alias | None) -> tuple[Columns, bool]:
        """One function of a FROM item: its columns, and whether they are all of them."""
        value = self.flow(func, level)
        if not isinstance(func, ast.FuncCall):
            return [(figure_name(func), value)], True
        name = ".".join(s.sval or "" for s in func.funcname or () if isinstance(s, ast.String))
        base = name.removeprefix("pg_catalog.")
        derived = Flow(value.sources, TRANSFORMATION, value.opaque)
        if base in _MULTI_COLUMN:
            return [(c, derived) for c in _MULTI_COLUMN[base]], True
        if base in _DEFINED_COLUMNS and defined:
            return [(c, derived) for c in defined], True
        if base in _POPULATE:
            names = self._record_type_columns(func.args[0] if func.args else None)
            if names is not None:
                return [(c, derived) for c in names], True
        elif base == "unnest" and len(func.args or ()) > 1:
            return [("unnest", self.flow(arg, level)) for arg in func.args or ()], True
        elif (not base.startswith(_RECORD_PREFIXES) and base not in _DEFINED_COLUMNS
                and is_known_safe(name, shadowable=self.shadowable) and not defined):
            # a one-column function is named after its alias, if any
            own = alias_name(alias) if alias is not None and not alias.colnames else base.rsplit(".", 1)[-1]
            return [(own, derived)], True
        # a column definition list names every column; the values are still the function's
        opaque = Flow(value.sources, TRANSFORMATION, True)
        return [(c, opaque) for c in defined], bool(defined)

    def _record_type_columns(self, arg: object) -> Sequence[str] | None:
        """json_populate_record(null::customers, ...): the columns of that row type."""
        if not isinstance(arg, ast.TypeCast) or arg.typeName is None:
            return None
        parts = [n.sval or "" for n in arg.typeName.names or () if isinstance(n, ast.String)]
        if not parts or len(parts) > 2:
            return None
        rv = ast.RangeVar(schemaname=parts[0] if len(parts) == 2 else None, relname=parts[-1], relpersistence="p")
        return self.catalog.columns(self.resolve(rv))

def _alias_of(cte: ast.CommonTableExpr) -> ast.Alias | None:
    return ast.Alias(aliasname=cte.ctename, colnames=cte.aliascolnames) if cte.aliascolnames else None


def _union(branches: Sequence[Rel]) -> Rel:
    """Set operation: output i is computed from column i of every branch. All branches have
    the same width, so one branch whose columns are all known fixes it."""
    if not branches:
        return Rel("", [])
    shape = next((b for b in branches if b.complete), branches[0])
    columns: Columns = []
    for i, (name, _) in enumerate(shape.columns):
        flows = [_column_at(b, i) for b in branches]
        first = branches[0].columns
        if i < len(first) and STAR not in (n for n, _ in first[: i + 1]):
            name = first[i][0]
        columns.append((name, merge(flows, IDENTITY)))
    return result_of(columns)


def _column_at(rel: Rel, i: int) -> Flow:
    """Column i of a relation; past an unknown number of columns, any of the rest."""
    for position, (name, flow) in enumerate(rel.columns):
        if name == STAR:
            return merge([f for _, f in rel.columns[position:]] + [OPAQUE])
        if position == i:
            return flow
    return OPAQUE


def grouping_items(items: Sequence[object]) -> Iterator[object]:
    """The items a GROUP BY groups on, through GROUPING SETS, ROLLUP, CUBE and the row
    ``GROUP BY (1, 2)``, where PostgreSQL reads an integer as an output column's position too."""
    for item in items:
        if isinstance(item, ast.GroupingSet):
            yield from grouping_items(item.content or ())
        elif isinstance(item, ast.RowExpr):
            yield from grouping_items(item.args or ())
        elif isinstance(item, tuple | list):
            yield from grouping_items(item)
        else:
            yield item
