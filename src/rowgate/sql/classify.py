"""One parsed statement in, its kind, command tag, flags and touched objects out.

Anything this module does not recognise is PROCEDURAL with UNKNOWN_EFFECT: a statement
type added by a newer grammar must be refused by default, not passed as harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pglast import ast
from pglast.enums import (
    AlterTableType,
    DiscardMode,
    ObjectType,
    RoleStmtType,
    TransactionStmtKind,
    VariableSetKind,
)

from rowgate.sql import facts
from rowgate.sql.facts import Kind
from rowgate.sql.names import LIST_QUOTE_SETTINGS, quote_ident
from rowgate.sql.trivial import parse_bool
from rowgate.sql.walker import Scope, Source, Walker


@dataclass
class Outcome:
    kind: Kind
    command: str
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    columns: dict[str, set[str]] = field(default_factory=dict)
    prepare_name: str | None = None
    execute_name: str | None = None
    deallocate_name: str | None = None
    setting: tuple[str, str | None] | None = None
    language: str | None = None


Handler = Callable[[Any, Walker], Outcome]  # each handler takes its own node type

# DROP of these removes stored rows (or an index over them): the DROP_TABLE guardrail
_TABLE_LIKE = {ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW,
               ObjectType.OBJECT_SEQUENCE, ObjectType.OBJECT_INDEX, ObjectType.OBJECT_FOREIGN_TABLE}

_OBJECT_WORDS = {
    ObjectType.OBJECT_MATVIEW: "MATERIALIZED VIEW", ObjectType.OBJECT_FOREIGN_TABLE: "FOREIGN TABLE",
    ObjectType.OBJECT_FDW: "FOREIGN DATA WRAPPER", ObjectType.OBJECT_FOREIGN_SERVER: "SERVER",
    ObjectType.OBJECT_STATISTIC_EXT: "STATISTICS", ObjectType.OBJECT_TSCONFIGURATION: "TEXT SEARCH CONFIGURATION",
    ObjectType.OBJECT_TSDICTIONARY: "TEXT SEARCH DICTIONARY", ObjectType.OBJECT_TSPARSER: "TEXT SEARCH PARSER",
    ObjectType.OBJECT_TSTEMPLATE: "TEXT SEARCH TEMPLATE", ObjectType.OBJECT_ACCESS_METHOD: "ACCESS METHOD",
    ObjectType.OBJECT_EVENT_TRIGGER: "EVENT TRIGGER", ObjectType.OBJECT_OPCLASS: "OPERATOR CLASS",
    ObjectType.OBJECT_OPFAMILY: "OPERATOR FAMILY", ObjectType.OBJECT_USER_MAPPING: "USER MAPPING",
    ObjectType.OBJECT_LARGEOBJECT: "LARGE OBJECT", ObjectType.OBJECT_TABCONSTRAINT: "TABLE",
    ObjectType.OBJECT_DOMCONSTRAINT: "DOMAIN", ObjectType.OBJECT_COLUMN: "TABLE", ObjectType.OBJECT_ATTRIBUTE: "TYPE",
}


def _words(objtype: ObjectType | None) -> str:
    if objtype is None:
        return "OBJECT"
    return _OBJECT_WORDS.get(objtype) or objtype.name.removeprefix("OBJECT_").replace("_", " ")


def classify(node: ast.Node, search_path: tuple[str, ...], extra_safe: frozenset[str]) -> Outcome:
    walker = Walker(search_path, extra_safe)
    handler = _HANDLERS.get(type(node))
    if handler is not None:
        outcome = handler(node, walker)
    elif type(node) in _GENERIC:
        kind, command, flags, writes = _GENERIC[type(node)]
        walker.bare_relation_writes = writes
        walker.expr(node, None, None)
        outcome = Outcome(kind, command, flags=set(flags))
    else:
        outcome = Outcome(Kind.PROCEDURAL, type(node).__name__.removesuffix("Stmt").upper(),
                          flags={facts.UNKNOWN_EFFECT})
    return _finish(outcome, walker)


# DDL that installs code which later runs where rowgate cannot see it: a trigger, rule,
# operator, cast or aggregate calls a function that no statement text ever names again
_INSTALLS_CODE = (
    "CREATE FUNCTION", "CREATE PROCEDURE", "ALTER FUNCTION", "ALTER PROCEDURE", "ALTER ROUTINE",
    "CREATE TRIGGER", "CREATE EVENT TRIGGER", "ALTER EVENT TRIGGER", "CREATE RULE", "CREATE CAST",
    "CREATE TRANSFORM", "CREATE LANGUAGE", "CREATE OPERATOR", "ALTER OPERATOR", "CREATE AGGREGATE",
    "CREATE ACCESS METHOD", "CREATE CONVERSION", "CREATE EXTENSION", "ALTER EXTENSION", "LOAD",
)


def _installs_code(outcome: Outcome) -> bool:
    return outcome.command.startswith(_INSTALLS_CODE)


def _finish(outcome: Outcome, walker: Walker) -> Outcome:
    found = walker.facts
    outcome.reads |= found.reads
    outcome.writes |= found.writes
    outcome.functions |= found.functions
    outcome.flags |= found.flags
    for clause, names in found.columns.items():
        outcome.columns.setdefault(clause, set()).update(names)
    if _installs_code(outcome):
        outcome.flags.add(facts.UNKNOWN_EFFECT)
    if outcome.execute_name is None and found.execute_names:
        outcome.execute_name = found.execute_names[0]
    if outcome.kind == Kind.READ and outcome.writes:
        outcome.kind = Kind.WRITE  # a data-modifying CTE, nextval, COPY (DELETE ... RETURNING)
    if facts.UNKNOWN_EFFECT in outcome.flags and outcome.kind not in (Kind.WRITE, Kind.DDL, Kind.DCL):
        outcome.kind = Kind.PROCEDURAL
    return outcome


# queries ---------------------------------------------------------------------------------

def _select(node: ast.SelectStmt, w: Walker) -> Outcome:
    w.select(node, None)
    return Outcome(Kind.DDL, "SELECT INTO") if node.intoClause is not None else Outcome(Kind.READ, "SELECT")


def _dml(command: str) -> Handler:
    def handle(node: ast.Node, w: Walker) -> Outcome:
        w.query(node, None)
        return Outcome(Kind.WRITE, command)
    return handle


def _copy(node: ast.CopyStmt, w: Walker) -> Outcome:
    out = Outcome(Kind.WRITE if node.is_from else Kind.READ, "COPY")
    if node.is_program:
        out.flags.add(facts.COPY_PROGRAM)
    elif node.filename is not None:
        out.flags.add(facts.COPY_FILE)
    if node.relation is not None:
        table = w.resolve(node.relation)
        (out.writes if node.is_from else out.reads).add(table)
        clause = "set" if node.is_from else "select"
        names = [col.sval for col in node.attlist or ()] or ["*"]
        out.columns[clause] = {f"{table}.{name}" for name in names}
        w.expr(node.whereClause, Scope([Source(node.relation.relname or "", table)], None), "where")
    w.query(node.query, None)
    return out


def _explain(node: ast.ExplainStmt, w: Walker) -> Outcome:
    assert node.query is not None
    inner = classify(node.query, w.search_path, w.extra_safe)
    if _explain_analyze(node.options):
        # the statement really runs: everything it would do, it does
        return replace(inner, command="EXPLAIN", flags=inner.flags | {facts.EXPLAIN_ANALYZE})
    # only planned: nothing is written and no guardrail about effects applies, but the
    # planner may still evaluate (immutable-declared) functions, so their flag stays
    return Outcome(
        Kind.READ, "EXPLAIN", reads=inner.reads | inner.writes, functions=inner.functions,
        flags=inner.flags & {facts.UNKNOWN_EFFECT}, columns=inner.columns, execute_name=inner.execute_name,
    )


def _explain_analyze(options: tuple[ast.Node, ...] | None) -> bool:
    analyze = False
    for option in options or ():
        if isinstance(option, ast.DefElem) and option.defname == "analyze":
            analyze = _option_true(option.arg if isinstance(option.arg, ast.Node) else None)
    return analyze


def _option_true(arg: ast.Node | None) -> bool:
    # defGetBoolean: no argument means true; anything we cannot read as false counts as true
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.Integer):
        return arg.ival != 0
    if isinstance(arg, ast.String):
        return parse_bool(arg.sval or "") is not False
    return True


def _prepare(node: ast.PrepareStmt, w: Walker) -> Outcome:
    assert node.query is not None
    inner = classify(node.query, w.search_path, w.extra_safe)
    return replace(inner, command="PREPARE", prepare_name=node.name)


def _execute(node: ast.ExecuteStmt, w: Walker) -> Outcome:
    w.expr(node.params, None, None)
    return Outcome(Kind.PROCEDURAL, "EXECUTE", execute_name=node.name, flags={facts.UNKNOWN_EFFECT})


def _deallocate(node: ast.DeallocateStmt, w: Walker) -> Outcome:
    name = "*" if node.isall or node.name is None else node.name
    return Outcome(Kind.UTILITY, "DEALLOCATE ALL" if name == "*" else "DEALLOCATE", deallocate_name=name)


def _declare(node: ast.DeclareCursorStmt, w: Walker) -> Outcome:
    w.query(node.query, None)
    return Outcome(Kind.WRITE if w.facts.writes else Kind.UTILITY, "DECLARE CURSOR")


def _fetch(node: ast.FetchStmt, w: Walker) -> Outcome:
    return Outcome(Kind.UTILITY, "MOVE") if node.ismove else Outcome(Kind.READ, "FETCH")


def _close(node: ast.ClosePortalStmt, w: Walker) -> Outcome:
    return Outcome(Kind.UTILITY, "CLOSE CURSOR" if node.portalname else "CLOSE CURSOR ALL")


# code ------------------------------------------------------------------------------------

def _do(node: ast.DoStmt, w: Walker) -> Outcome:
    language = "plpgsql"
    for arg in node.args or ():
        if arg.defname == "language" and isinstance(arg.arg, ast.String):
            language = arg.arg.sval or language
    return Outcome(Kind.PROCEDURAL, "DO", flags={facts.UNKNOWN_EFFECT}, language=language)


def _call(node: ast.CallStmt, w: Walker) -> Outcome:
    w.expr(node.funccall, None, None)
    return Outcome(Kind.PROCEDURAL, "CALL", flags={facts.UNKNOWN_EFFECT})


def _create_function(node: ast.CreateFunctionStmt, w: Walker) -> Outcome:
    # the body is stored, not run: none of its tables or flags are this statement's
    language = "sql" if node.sql_body is not None else None
    for option in node.options or ():
        if option.defname == "language" and isinstance(option.arg, ast.String):
            language = option.arg.sval or language
    return Outcome(Kind.DDL, "CREATE PROCEDURE" if node.is_procedure else "CREATE FUNCTION", language=language)


# session and transaction -----------------------------------------------------------------

def _set(node: ast.VariableSetStmt, w: Walker) -> Outcome:
    name = (node.name or "").lower()
    if node.kind == VariableSetKind.VAR_SET_VALUE:
        value = _flatten_setting(name, node.args or ())
        out = Outcome(Kind.SESSION, "SET", setting=(name, value))
        # RESET ROLE and SET ROLE NONE return to the login role: nothing gained
        if name == "session_authorization" or (name == "role" and value.lower() != "none"):
            out.flags.add(facts.SET_ROLE)
        return out
    if node.kind in (VariableSetKind.VAR_SET_DEFAULT, VariableSetKind.VAR_RESET):
        command = "RESET" if node.kind == VariableSetKind.VAR_RESET else "SET"
        return Outcome(Kind.SESSION, command, setting=(name, None))
    if node.kind == VariableSetKind.VAR_RESET_ALL:
        return Outcome(Kind.SESSION, "RESET", setting=("all", None))
    w.expr(node.args, None, None)
    return Outcome(Kind.SESSION, "SET")  # SET TRANSACTION ..., SET ... FROM CURRENT: no value change


def _flatten_setting(name: str, args: tuple[ast.Node, ...]) -> str:
    """flatten_set_variable_args(): the text PostgreSQL stores for SET name = args."""
    parts: list[str] = []
    for arg in args:
        node = arg.arg if isinstance(arg, ast.TypeCast) else arg
        value = node.val if isinstance(node, ast.A_Const) else None
        if isinstance(value, ast.String):
            text = value.sval or ""
            parts.append(quote_ident(text) if name in LIST_QUOTE_SETTINGS else text)
        elif isinstance(value, ast.Integer):
            parts.append(str(value.ival))
        elif isinstance(value, ast.Float):
            parts.append(value.fval or "")
        elif isinstance(value, ast.Boolean):
            parts.append("true" if value.boolval else "false")
    return ", ".join(parts)


_TRANSACTION_COMMANDS = {
    TransactionStmtKind.TRANS_STMT_BEGIN: "BEGIN", TransactionStmtKind.TRANS_STMT_START: "START TRANSACTION",
    TransactionStmtKind.TRANS_STMT_COMMIT: "COMMIT", TransactionStmtKind.TRANS_STMT_ROLLBACK: "ROLLBACK",
    TransactionStmtKind.TRANS_STMT_SAVEPOINT: "SAVEPOINT", TransactionStmtKind.TRANS_STMT_RELEASE: "RELEASE",
    TransactionStmtKind.TRANS_STMT_ROLLBACK_TO: "ROLLBACK",
    TransactionStmtKind.TRANS_STMT_PREPARE: "PREPARE TRANSACTION",
    TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED: "COMMIT PREPARED",
    TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED: "ROLLBACK PREPARED",
}


def _transaction(node: ast.TransactionStmt, w: Walker) -> Outcome:
    command = _TRANSACTION_COMMANDS.get(node.kind, "TRANSACTION") if node.kind is not None else "TRANSACTION"
    return Outcome(Kind.TRANSACTION, command)


def _discard(node: ast.DiscardStmt, w: Walker) -> Outcome:
    if node.target == DiscardMode.DISCARD_ALL:  # includes RESET ALL and DEALLOCATE ALL
        return Outcome(Kind.SESSION, "DISCARD ALL", setting=("all", None), deallocate_name="*")
    target = node.target.name.removeprefix("DISCARD_") if node.target is not None else ""
    return Outcome(Kind.SESSION, f"DISCARD {target}".strip())


# DDL and DCL -----------------------------------------------------------------------------

def _ddl(node: ast.Node, w: Walker, command: str, kind: Kind = Kind.DDL, *flags: str) -> Outcome:
    w.bare_relation_writes = True
    w.expr(node, None, None)
    return Outcome(kind, command, flags=set(flags))


def _drop(node: ast.DropStmt, w: Walker) -> Outcome:
    out = Outcome(Kind.DDL, "DROP " + _words(node.removeType))
    if node.removeType in _TABLE_LIKE:
        out.flags.add(facts.DROP_TABLE)
        for obj in node.objects or ():
            names = [part.sval for part in obj if isinstance(part, ast.String)]
            if names:
                rv = ast.RangeVar(schemaname=names[-2] if len(names) > 1 else None, relname=names[-1],
                                  relpersistence="p")
                out.writes.add(w.resolve(rv))
    elif node.removeType == ObjectType.OBJECT_SCHEMA:
        out.flags.add(facts.DROP_SCHEMA)
    else:
        out.flags.add(facts.DROP_OTHER)
    return out


def _alter_table(node: ast.AlterTableStmt, w: Walker) -> Outcome:
    out = _ddl(node, w, "ALTER " + _words(node.objtype))
    if any(isinstance(c, ast.AlterTableCmd) and c.subtype == AlterTableType.AT_DropColumn for c in node.cmds or ()):
        out.flags.add(facts.DROP_COLUMN)
    return out


def _create_table_as(node: ast.CreateTableAsStmt, w: Walker) -> Outcome:
    if node.into is not None and node.into.rel is not None:
        w.facts.writes.add(w.resolve(node.into.rel))
    w.query(node.query, None)
    if node.objtype == ObjectType.OBJECT_MATVIEW:
        return Outcome(Kind.DDL, "CREATE MATERIALIZED VIEW")
    return Outcome(Kind.DDL, "SELECT INTO" if node.is_select_into else "CREATE TABLE AS")


def _create_schema(node: ast.CreateSchemaStmt, w: Walker) -> Outcome:
    out = Outcome(Kind.DDL, "CREATE SCHEMA")
    # its elements create objects in the new schema and carry their own flags (a GRANT inside)
    path = ((node.schemaname,) if node.schemaname else ()) + w.search_path
    for element in node.schemaElts or ():
        inner = classify(element, path, w.extra_safe)
        out.reads |= inner.reads
        out.writes |= inner.writes
        out.functions |= inner.functions
        out.flags |= inner.flags
    return out


def _rename(node: ast.RenameStmt, w: Walker) -> Outcome:
    if node.renameType == ObjectType.OBJECT_ROLE:
        return Outcome(Kind.DCL, "ALTER ROLE", flags={facts.ROLE_CHANGE})
    sub = node.renameType in (ObjectType.OBJECT_COLUMN, ObjectType.OBJECT_TABCONSTRAINT, ObjectType.OBJECT_ATTRIBUTE)
    return _ddl(node, w, "ALTER " + _words(node.relationType if sub else node.renameType))


def _vacuum(node: ast.VacuumStmt, w: Walker) -> Outcome:
    w.bare_relation_writes = bool(node.is_vacuumcmd)
    w.expr(node.rels, None, None)
    return Outcome(Kind.UTILITY, "VACUUM" if node.is_vacuumcmd else "ANALYZE")


def _role(node: ast.CreateRoleStmt, w: Walker) -> Outcome:
    words = {RoleStmtType.ROLESTMT_USER: "USER", RoleStmtType.ROLESTMT_GROUP: "GROUP"}
    word = words.get(node.stmt_type, "ROLE") if node.stmt_type is not None else "ROLE"
    return Outcome(Kind.DCL, "CREATE " + word, flags={facts.ROLE_CHANGE})


def _grant(node: ast.GrantStmt, w: Walker) -> Outcome:
    return _ddl(node, w, "GRANT" if node.is_grant else "REVOKE", Kind.DCL, facts.PRIVILEGES)


def _grant_role(node: ast.GrantRoleStmt, w: Walker) -> Outcome:
    return Outcome(Kind.DCL, "GRANT ROLE" if node.is_grant else "REVOKE ROLE", flags={facts.PRIVILEGES})


def _named(attr: str, prefix: str) -> Handler:
    def handle(node: ast.Node, w: Walker) -> Outcome:
        return _ddl(node, w, prefix + _words(getattr(node, attr)))
    return handle


def _truncate(node: ast.TruncateStmt, w: Walker) -> Outcome:
    return _ddl(node, w, "TRUNCATE", Kind.DDL, facts.TRUNCATE)


def _create(node: ast.CreateStmt, w: Walker) -> Outcome:
    return _ddl(node, w, "CREATE TABLE")


_HANDLERS: dict[type, Handler] = {
    ast.SelectStmt: _select, ast.InsertStmt: _dml("INSERT"), ast.UpdateStmt: _dml("UPDATE"),
    ast.DeleteStmt: _dml("DELETE"), ast.MergeStmt: _dml("MERGE"), ast.CopyStmt: _copy, ast.ExplainStmt: _explain,
    ast.PrepareStmt: _prepare, ast.ExecuteStmt: _execute, ast.DeallocateStmt: _deallocate,
    ast.DeclareCursorStmt: _declare, ast.FetchStmt: _fetch, ast.ClosePortalStmt: _close, ast.DoStmt: _do,
    ast.CallStmt: _call, ast.CreateFunctionStmt: _create_function, ast.VariableSetStmt: _set,
    ast.TransactionStmt: _transaction, ast.DiscardStmt: _discard, ast.DropStmt: _drop,
    ast.AlterTableStmt: _alter_table, ast.CreateTableAsStmt: _create_table_as, ast.CreateSchemaStmt: _create_schema,
    ast.RenameStmt: _rename, ast.VacuumStmt: _vacuum, ast.CreateRoleStmt: _role, ast.GrantStmt: _grant,
    ast.GrantRoleStmt: _grant_role, ast.TruncateStmt: _truncate, ast.CreateStmt: _create,
    ast.DefineStmt: _named("kind", "CREATE "), ast.AlterOwnerStmt: _named("objectType", "ALTER "),
    ast.AlterObjectSchemaStmt: _named("objectType", "ALTER "), ast.AlterFunctionStmt: _named("objtype", "ALTER "),
}

_D, _U, _S, _C = Kind.DDL, Kind.UTILITY, Kind.SESSION, Kind.DCL

# (kind, command, flags, whether a relation named in it is changed): walked generically
_GENERIC: dict[type, tuple[Kind, str, tuple[str, ...], bool]] = {
    ast.VariableShowStmt: (Kind.READ, "SHOW", (), False),
    ast.ListenStmt: (_S, "LISTEN", (), False), ast.UnlistenStmt: (_S, "UNLISTEN", (), False),
    ast.ConstraintsSetStmt: (_S, "SET CONSTRAINTS", (), False),
    ast.NotifyStmt: (_U, "NOTIFY", (), False), ast.CheckPointStmt: (_U, "CHECKPOINT", (), False),
    ast.LockStmt: (_U, "LOCK TABLE", (), False), ast.ClusterStmt: (_U, "CLUSTER", (), True),
    ast.LoadStmt: (_U, "LOAD", (facts.UNKNOWN_EFFECT,), False),
    ast.AlterSystemStmt: (_D, "ALTER SYSTEM", (facts.ALTER_SYSTEM,), False),
    ast.DropdbStmt: (_D, "DROP DATABASE", (facts.DROP_DATABASE,), False),
    ast.DropTableSpaceStmt: (_D, "DROP TABLESPACE", (facts.DROP_OTHER,), False),
    ast.DropSubscriptionStmt: (_D, "DROP SUBSCRIPTION", (facts.DROP_OTHER,), False),
    ast.DropUserMappingStmt: (_D, "DROP USER MAPPING", (facts.DROP_OTHER,), False),
    ast.DropRoleStmt: (_C, "DROP ROLE", (facts.ROLE_CHANGE, facts.DROP_OTHER), False),
    ast.AlterRoleStmt: (_C, "ALTER ROLE", (facts.ROLE_CHANGE,), False),
    ast.AlterRoleSetStmt: (_C, "ALTER ROLE", (facts.ROLE_CHANGE,), False),
    ast.DropOwnedStmt: (_C, "DROP OWNED", (facts.DROP_OWNED,), False),
    ast.ReassignOwnedStmt: (_C, "REASSIGN OWNED", (facts.DROP_OWNED,), False),
    ast.AlterDefaultPrivilegesStmt: (_C, "ALTER DEFAULT PRIVILEGES", (facts.PRIVILEGES,), False),
    ast.CreateForeignTableStmt: (_D, "CREATE FOREIGN TABLE", (), True),
    ast.ViewStmt: (_D, "CREATE VIEW", (), True), ast.IndexStmt: (_D, "CREATE INDEX", (), True),
    ast.CreateTrigStmt: (_D, "CREATE TRIGGER", (), True), ast.RuleStmt: (_D, "CREATE RULE", (), True),
    ast.CreateSeqStmt: (_D, "CREATE SEQUENCE", (), True), ast.AlterSeqStmt: (_D, "ALTER SEQUENCE", (), True),
    ast.CreatePolicyStmt: (_D, "CREATE POLICY", (), True), ast.AlterPolicyStmt: (_D, "ALTER POLICY", (), True),
    ast.CreateStatsStmt: (_D, "CREATE STATISTICS", (), True), ast.AlterStatsStmt: (_D, "ALTER STATISTICS", (), True),
    ast.RefreshMatViewStmt: (_D, "REFRESH MATERIALIZED VIEW", (), True), ast.ReindexStmt: (_D, "REINDEX", (), True),
    ast.CommentStmt: (_D, "COMMENT", (), True), ast.SecLabelStmt: (_D, "SECURITY LABEL", (), True),
    ast.CreatedbStmt: (_D, "CREATE DATABASE", (), False), ast.AlterDatabaseStmt: (_D, "ALTER DATABASE", (), False),
    # saved per-database settings reach later sessions before rowgate sees them (search_path,
    # standard_conforming_strings): as server-wide as ALTER SYSTEM for this database
    ast.AlterDatabaseSetStmt: (_D, "ALTER DATABASE", (facts.ALTER_SYSTEM,), False),
    ast.AlterDatabaseRefreshCollStmt: (_D, "ALTER DATABASE", (), False),
    ast.CreateDomainStmt: (_D, "CREATE DOMAIN", (), True), ast.AlterDomainStmt: (_D, "ALTER DOMAIN", (), True),
    ast.CompositeTypeStmt: (_D, "CREATE TYPE", (), True), ast.CreateEnumStmt: (_D, "CREATE TYPE", (), True),
    ast.CreateRangeStmt: (_D, "CREATE TYPE", (), True), ast.AlterEnumStmt: (_D, "ALTER TYPE", (), True),
    ast.AlterTypeStmt: (_D, "ALTER TYPE", (), True),
    ast.CreateExtensionStmt: (_D, "CREATE EXTENSION", (), True),
    ast.AlterExtensionStmt: (_D, "ALTER EXTENSION", (), True),
    ast.AlterExtensionContentsStmt: (_D, "ALTER EXTENSION", (), True),
    ast.CreateFdwStmt: (_D, "CREATE FOREIGN DATA WRAPPER", (), True),
    ast.AlterFdwStmt: (_D, "ALTER FOREIGN DATA WRAPPER", (), True),
    ast.CreateForeignServerStmt: (_D, "CREATE SERVER", (), True),
    ast.AlterForeignServerStmt: (_D, "ALTER SERVER", (), True),
    ast.CreateUserMappingStmt: (_D, "CREATE USER MAPPING", (), True),
    ast.AlterUserMappingStmt: (_D, "ALTER USER MAPPING", (), True),
    ast.ImportForeignSchemaStmt: (_D, "IMPORT FOREIGN SCHEMA", (), True),
    ast.CreateEventTrigStmt: (_D, "CREATE EVENT TRIGGER", (), True),
    ast.AlterEventTrigStmt: (_D, "ALTER EVENT TRIGGER", (), True),
    ast.CreateTableSpaceStmt: (_D, "CREATE TABLESPACE", (), False),
    ast.AlterTableSpaceOptionsStmt: (_D, "ALTER TABLESPACE", (), False),
    ast.AlterTableMoveAllStmt: (_D, "ALTER TABLE", (), True),
    ast.CreatePublicationStmt: (_D, "CREATE PUBLICATION", (), True),
    ast.AlterPublicationStmt: (_D, "ALTER PUBLICATION", (), True),
    ast.CreateSubscriptionStmt: (_D, "CREATE SUBSCRIPTION", (), True),
    ast.AlterSubscriptionStmt: (_D, "ALTER SUBSCRIPTION", (), True),
    ast.CreateCastStmt: (_D, "CREATE CAST", (), True), ast.CreateOpClassStmt: (_D, "CREATE OPERATOR CLASS", (), True),
    ast.CreateOpFamilyStmt: (_D, "CREATE OPERATOR FAMILY", (), True),
    ast.AlterOpFamilyStmt: (_D, "ALTER OPERATOR FAMILY", (), True),
    ast.CreateConversionStmt: (_D, "CREATE CONVERSION", (), True),
    ast.CreateTransformStmt: (_D, "CREATE TRANSFORM", (), True),
    ast.CreateAmStmt: (_D, "CREATE ACCESS METHOD", (), True), ast.CreatePLangStmt: (_D, "CREATE LANGUAGE", (), True),
    ast.AlterObjectDependsStmt: (_D, "ALTER FUNCTION", (), True),
    ast.AlterOperatorStmt: (_D, "ALTER OPERATOR", (), True), ast.AlterCollationStmt: (_D, "ALTER COLLATION", (), True),
    ast.AlterTSConfigurationStmt: (_D, "ALTER TEXT SEARCH CONFIGURATION", (), True),
    ast.AlterTSDictionaryStmt: (_D, "ALTER TEXT SEARCH DICTIONARY", (), True),
}
