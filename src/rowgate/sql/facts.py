"""What statement analysis knows about one statement: the contract between the
analyzer (``rowgate.sql.analyzer``), the policy engine and the audit log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Kind(StrEnum):
    READ = "read"  # SELECT, SHOW, EXPLAIN (without ANALYZE), FETCH, TABLE, VALUES
    WRITE = "write"  # INSERT, UPDATE, DELETE, MERGE, COPY FROM, TRUNCATE? (no: DDL), SELECT INTO? (no: DDL)
    DDL = "ddl"  # CREATE, ALTER, DROP, TRUNCATE, COMMENT, CREATE TABLE AS, SELECT INTO, REINDEX, ...
    DCL = "dcl"  # GRANT, REVOKE, CREATE/ALTER/DROP ROLE, ALTER DEFAULT PRIVILEGES, REASSIGN/DROP OWNED
    TRANSACTION = "transaction"  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION, ...
    SESSION = "session"  # SET, RESET, SET ROLE, SET SESSION AUTHORIZATION, DISCARD, LISTEN, UNLISTEN
    UTILITY = "utility"  # VACUUM, ANALYZE, CHECKPOINT, LOCK, NOTIFY, CLOSE, DEALLOCATE, DECLARE, ...
    PROCEDURAL = "procedural"  # code whose effect the text does not show: DO, CALL, EXECUTE of unseen PREPARE
    UNPARSEABLE = "unparseable"


# Flags: facts the guardrails match on. A statement may carry several.
DROP_TABLE = "drop_table"  # DROP TABLE / VIEW / MATERIALIZED VIEW / SEQUENCE / INDEX / FOREIGN TABLE
DROP_SCHEMA = "drop_schema"
DROP_DATABASE = "drop_database"
DROP_OTHER = "drop_other"  # DROP FUNCTION, TYPE, EXTENSION, ... (any other DROP)
TRUNCATE = "truncate"
DELETE_WITHOUT_WHERE = "delete_without_where"  # no WHERE, or a WHERE that is trivially true
UPDATE_WITHOUT_WHERE = "update_without_where"
DROP_COLUMN = "drop_column"  # ALTER TABLE ... DROP COLUMN
DROP_OWNED = "drop_owned"  # DROP OWNED / REASSIGN OWNED
PRIVILEGES = "privileges"  # GRANT / REVOKE / ALTER DEFAULT PRIVILEGES
ROLE_CHANGE = "role_change"  # CREATE / ALTER / DROP ROLE or USER or GROUP
COPY_PROGRAM = "copy_program"  # COPY ... TO/FROM PROGRAM
COPY_FILE = "copy_file"  # COPY ... TO/FROM a server file (not STDIN/STDOUT)
SET_ROLE = "set_role"  # SET ROLE, SET SESSION AUTHORIZATION, set_config('role'|'session_authorization', ...)
ALTER_SYSTEM = "alter_system"
UNKNOWN_EFFECT = "unknown_effect"  # DO, CALL, dblink*, functions not known to be safe, unseen EXECUTE
DATA_MODIFYING_CTE = "data_modifying_cte"
EXPLAIN_ANALYZE = "explain_analyze"  # the explained statement really runs; its own flags are merged in
UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Statement:
    """One statement of a message. Table names are schema-qualified and lower-case as
    PostgreSQL resolves them (quoted identifiers keep their case); columns are
    ``schema.table.column``."""

    text: str
    kind: Kind
    command: str  # PostgreSQL's command tag style: "SELECT", "DROP TABLE", "ALTER TABLE", "DO", ...
    tables_read: frozenset[str] = frozenset()
    tables_written: frozenset[str] = frozenset()
    # clause -> columns: "select", "where", "join", "group_by", "order_by", "having", "returning", "set"
    columns: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    functions: frozenset[str] = frozenset()  # schema-qualified where written, else bare lower-case names
    flags: frozenset[str] = frozenset()
    fingerprint: str = ""  # equal for statements that differ only in literals
    prepare_name: str | None = None  # PREPARE name AS ... : the body's facts are this statement's facts
    execute_name: str | None = None  # EXECUTE name
    deallocate_name: str | None = None  # DEALLOCATE name ("*" for ALL)
    # SET / RESET of a parameter: (lower-case name, value as PostgreSQL would store it, None for RESET)
    setting: tuple[str, str | None] | None = None
    error: str | None = None  # for UNPARSEABLE: the parser's message
    language: str | None = None  # DO, CREATE FUNCTION / PROCEDURE: the body's language ("plpgsql", "sql", ...)

    @property
    def tables(self) -> frozenset[str]:
        return self.tables_read | self.tables_written
