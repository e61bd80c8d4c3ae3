"""The inference defence: statements a masked identity may not run, sans-IO.

Masking the values a result carries is not enough when the statement itself can answer
questions about them: ``WHERE email LIKE 'a%'`` tells whether an email starts with an
'a', ``ORDER BY ssn`` ranks them, and CREATE TABLE AS, SELECT INTO, INSERT ... SELECT,
COPY to a file, notifications, settings and functions that run query text carry them
out of the results where masking happens. Such statements are refused for identities
whose results are masked.

Grouping and equality joins on a column the identity sees as a deterministic pseudonym
reveal nothing the pseudonyms do not (equal values stay equal), so those are allowed
when they are plain column references; any other use of a masked column in WHERE, JOIN,
GROUP BY, HAVING, ORDER BY, window or DISTINCT ON clauses, or as the argument of a
function rowgate cannot follow, is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType
from pglast.parser import ParseError

from rowgate.masking.plan import ClassificationView, Strategies, sensitive_sources
from rowgate.policy.engine import Decision
from rowgate.sql import facts
from rowgate.sql.facts import Kind, Statement
from rowgate.sql.lineage import Lineage
from rowgate.sql.lineage_query import grouping_items

RULE = "masking:inference"

_CLAUSES = {
    "where": "filtering on it", "join": "joining on it", "group_by": "grouping by it", "having": "filtering on it",
    "order_by": "ordering by it", "window": "partitioning or ordering a window by it",
    "distinct_on": "DISTINCT ON it", "function_arg": "passing it to a function rowgate cannot follow",
}
# clauses a pseudonymised column may appear in as a plain column reference
_PSEUDONYM_OK = frozenset({"join", "group_by"})

# functions that run query text or move data outside the statement's results (pg_notify,
# set_config and the like are refused when a masked value flows into them: "function_arg")
LAUNDERING_FUNCTIONS = frozenset({
    "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "table_to_xml",
    "table_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema", "schema_to_xml",
    "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xml_and_xmlschema", "dblink", "dblink_exec",
    "dblink_open", "dblink_fetch", "dblink_send_query", "dblink_get_result", "lo_import", "lo_export",
    "lo_from_bytea", "lo_put", "ts_stat", "pg_read_file", "pg_read_binary_file",
    "pg_stat_get_activity", "pg_stat_statements", "pg_mcv_list_items",
})
# relations holding copies of other tables' values: the planner's statistics (most common
# values, histogram bounds: real emails and names) and the text of statements other
# sessions ran (their constants) -- none of it passes through masking's lineage
DATA_COPY_RELATIONS = frozenset({
    "pg_statistic", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic_ext_data",
    "pg_stat_activity", "pg_stat_statements",
})


def refuse(reason: str, hint: str | None = None) -> Decision:
    return Decision("deny", RULE, reason, hint=hint)


def _children(node: object) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        for name in getattr(type(node), "__slots__", ()):
            yield from _children(getattr(node, name, None))
        yield node
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _children(item)


def _plain_expr(node: object) -> bool:
    return isinstance(node, ast.ColumnRef)


def _plain_quals(node: object) -> bool:
    if node is None:
        return True
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        return all(_plain_quals(a) for a in node.args or ())
    return (isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_OP
            and [n.sval for n in node.name or ()] == ["="] and _plain_expr(node.lexpr) and _plain_expr(node.rexpr))


def plain_grouping(text: str) -> bool:
    """Whether every GROUP BY item and JOIN condition of ``text`` is a plain column
    reference (or equality of two), so grouping and joining see only equal/unequal."""
    try:
        tree = parse_sql(text)
    except ParseError:
        return False
    for node in _children(tree):
        if isinstance(node, ast.SelectStmt):
            targets = [t.val for t in node.targetList or ()]
            for item in grouping_items(node.groupClause or ()):
                if isinstance(item, ast.A_Const) and isinstance(item.val, ast.Integer):
                    k = (item.val.ival or 0) - 1
                    if not (0 <= k < len(targets) and _plain_expr(targets[k])):
                        return False
                elif not _plain_expr(item):
                    return False
        elif isinstance(node, ast.JoinExpr) and not _plain_quals(node.quals):
            return False
    return True


def copy_out_format(text: str) -> tuple[str, str, str] | None:
    """(format, delimiter, quote) of a COPY ... TO STDOUT statement; None for anything else."""
    try:
        tree = parse_sql(text)
    except ParseError:
        return None
    if len(tree) != 1 or not isinstance(stmt := tree[0].stmt, ast.CopyStmt) or stmt.is_from or stmt.filename:
        return None
    options: dict[str, str] = {}
    for opt in stmt.options or ():
        arg = opt.arg
        value = arg.sval if isinstance(arg, ast.String) else "" if arg is None else str(arg)
        options[str(opt.defname)] = value or ""
    fmt = options.get("format", "text").lower()
    if "csv" in options:  # the old spelling: WITH CSV
        fmt = "csv"
    if "binary" in options:
        fmt = "binary"
    return fmt, options.get("delimiter", "," if fmt == "csv" else "\t"), options.get("quote", '"')


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1].strip('"').lower()


def _reads_sensitive_table(stmt: Statement, sensitive: Mapping[str, object]) -> bool:
    tables = {t.lower() for t in stmt.tables_read}
    return any(col.rsplit(".", 1)[0].lower() in tables for col in sensitive)


def check_statement(
    stmt: Statement,
    lineage: Lineage | None,
    classification: ClassificationView,
    sensitive: Mapping[str, object],
    profile: Strategies,
) -> Decision | None:
    """The refusal for one statement of a masked identity, or None."""
    if stmt.kind == Kind.PROCEDURAL:
        return refuse(f"{stmt.command} runs code whose results rowgate cannot mask for you")
    copies = {_last(t) for t in stmt.tables} & DATA_COPY_RELATIONS
    if copies:
        return refuse(f"{sorted(copies)[0]} holds copies of table values that rowgate cannot mask for you")
    called = {_last(f) for f in stmt.functions}
    if called & LAUNDERING_FUNCTIONS:
        fn = sorted(called & LAUNDERING_FUNCTIONS)[0]
        return refuse(f"{fn}() moves data past the masking of your results")
    to_file = facts.COPY_FILE in stmt.flags or facts.COPY_PROGRAM in stmt.flags
    if to_file and (lineage is None or _reads_sensitive_table(stmt, sensitive)):
        return refuse("COPY to a file or program would bypass the masking of your results")
    fmt = copy_out_format(stmt.text) if stmt.command.upper() == "COPY" else None
    if fmt is not None and (fmt[0] == "binary" or fmt[1:] not in (("\t", '"'), (",", '"'))):
        return refuse("COPY with binary format or custom delimiters cannot be masked for you",
                      hint="use COPY ... TO STDOUT in text or csv format with the default delimiter")
    if lineage is None:
        if stmt.kind == Kind.DDL:
            return _ddl(stmt, sensitive)
        if facts.UNKNOWN_EFFECT in stmt.flags and _reads_sensitive_table(stmt, sensitive):
            return refuse(f"{stmt.command} reads masked data in a way rowgate cannot follow")
        return None
    found = sensitive_sources(lineage, classification)
    masked = {src: cls for src, cls in found.items() if cls is not None}
    if not masked:
        return _ddl(stmt, sensitive) if stmt.kind == Kind.DDL else None
    if facts.UNKNOWN_EFFECT in stmt.flags:
        return refuse(f"{stmt.command} calls code rowgate cannot follow on masked data")
    for target, sources in lineage.writes.items():
        hit = sorted(s for s in sources if s in masked)
        if hit and target != "stdout":
            return refuse(f"column {hit[0]} is masked for you; writing it into {target} would reveal it",
                          hint="read the data with SELECT instead; its results are masked")
    plain: bool | None = None
    for clause, why in _CLAUSES.items():
        hit = sorted(s for s in lineage.uses.get(clause, ()) if s in masked)
        if not hit:
            continue
        if clause in _PSEUDONYM_OK and all(profile.strategy(masked[s], s) == "pseudonym" for s in hit):
            if plain is None:
                plain = plain_grouping(stmt.text)
            if plain:
                continue
        return refuse(f"column {hit[0]} is masked for you; {why} would reveal it",
                      hint="results are masked; filter, group or order on columns that are not")
    return _ddl(stmt, sensitive) if stmt.kind == Kind.DDL else None


def _ddl(stmt: Statement, sensitive: Mapping[str, object]) -> Decision | None:
    """CREATE VIEW, CREATE MATERIALIZED VIEW, CREATE TABLE AS ... over tables with masked columns."""
    if _reads_sensitive_table(stmt, sensitive):
        return refuse(f"{stmt.command} would copy masked data out of reach of masking",
                      hint="read the data with SELECT instead; its results are masked")
    return None


def check_statements(
    stmts: Sequence[Statement],
    lineages: Sequence[Lineage | None],
    classification: ClassificationView,
    sensitive: Mapping[str, object],
    profile: Strategies,
) -> Decision | None:
    for i, (stmt, lineage) in enumerate(zip(stmts, lineages, strict=True)):
        decision = check_statement(stmt, lineage, classification, sensitive, profile)
        if decision is not None:
            if len(stmts) > 1:
                decision = Decision(decision.action, decision.rule, decision.reason, hint=decision.hint,
                                    statement_index=i)
            return decision
    return None
