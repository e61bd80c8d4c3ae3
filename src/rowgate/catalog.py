"""Reading an upstream database's catalog: relations, columns, types, view definitions,
comments and a sample of values, for classification and lineage.

Everything is read in one read-only REPEATABLE READ transaction, so the schema fingerprint
stored as ``Catalog.version`` describes exactly the schema that was read; comparing it with
:func:`schema_fingerprint` later is the cheap check for "did the schema change?"."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("rowgate.catalog")

RELKINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}
# Types whose text is worth scanning for PII; the rest (numbers, booleans, timestamps, bytea, ...)
# are only classified by name and type.
_SCANNED_TYPES = frozenset({"text", "varchar", "bpchar", "citext", "json", "jsonb", "xml", "name"})
_MAX_SAMPLE_CHARS = 2000

_USER_RELATIONS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
    AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"""

_COLUMNS = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltuples, obj_description(c.oid, 'pg_class'),
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
       a.attnum, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod),
       coalesce(et.typname, t.typname), et.oid IS NOT NULL, col_description(c.oid, a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
WHERE {_USER_RELATIONS}
ORDER BY n.nspname, c.relname, a.attnum"""

# Names, types and comments of every user column, and the text of every view: any DDL that
# matters for classification or lineage changes this hash.
_FINGERPRINT = f"""
SELECT md5(coalesce(string_agg(
           c.oid || ':' || n.nspname || '.' || c.relname || ':' || c.relkind::text
           || ':' || a.attnum || ':' || a.attname
           || ':' || a.atttypid || ':' || coalesce(col_description(c.oid, a.attnum), '')
           || ':' || CASE WHEN a.attnum = 1 AND c.relkind IN ('v', 'm') THEN md5(pg_get_viewdef(c.oid)) ELSE '' END,
           ',' ORDER BY c.oid, a.attnum), ''))
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE {_USER_RELATIONS}"""


@dataclass(frozen=True, slots=True)
class CatalogColumn:
    name: str
    attnum: int
    type_oid: int
    type_name: str  # as format_type prints it: "character varying(80)", "text[]"
    base_type: str  # typname of the type, or of the element type for arrays: "varchar"
    is_array: bool
    comment: str | None

    @property
    def scanned(self) -> bool:
        return self.base_type in _SCANNED_TYPES


@dataclass(frozen=True)
class CatalogTable:
    oid: int
    schema: str
    name: str
    kind: str  # a value of RELKINDS
    columns: tuple[CatalogColumn, ...]
    view_sql: str | None
    comment: str | None
    row_estimate: float
    samples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # column -> non-null sample values

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


class Catalog:
    """The relations of one database by "schema.table" and by OID. Implements
    rowgate.sql.lineage.CatalogView."""

    def __init__(self, tables: Sequence[CatalogTable], version: str) -> None:
        self.tables: dict[str, CatalogTable] = {t.qualified: t for t in tables}
        self.by_oid: dict[int, CatalogTable] = {t.oid: t for t in tables}
        self.version = version

    def table(self, name: str) -> CatalogTable | None:
        return self.tables.get(name)

    def columns(self, table: str) -> Sequence[str] | None:
        t = self.tables.get(table)
        return None if t is None else tuple(c.name for c in t.columns)

    def view_sql(self, table: str) -> str | None:
        t = self.tables.get(table)
        return None if t is None else t.view_sql


def schema_fingerprint(conn: psycopg.Connection[Any]) -> str:
    """A hash of every user relation's columns, types, comments and view text (a few ms)."""
    row = conn.execute(_FINGERPRINT).fetchone()
    return str(row[0]) if row else ""


def _sample(conn: psycopg.Connection[Any], table: CatalogTable, rows: int) -> dict[str, tuple[str, ...]]:
    cols = [c for c in table.columns if c.scanned]
    if not cols or rows <= 0:
        return {}
    exprs = [sql.SQL("left({}::text, {})").format(sql.Identifier(c.name), sql.Literal(_MAX_SAMPLE_CHARS)) for c in cols]
    source = sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))
    if table.kind == "table" and table.row_estimate > rows * 20:
        # SYSTEM sampling reads a few random pages instead of always the first rows
        pct = min(100.0, 100.0 * rows * 5 / table.row_estimate)
        source = sql.SQL("{} TABLESAMPLE SYSTEM ({})").format(source, sql.Literal(pct))
    query = sql.SQL("SELECT {} FROM {} LIMIT {}").format(sql.SQL(", ").join(exprs), source, sql.Literal(rows))
    conn.execute("SAVEPOINT rowgate_sample")
    try:
        fetched = conn.execute(query).fetchall()
    except psycopg.Error as e:
        # an unreadable relation (permissions, a broken view, a foreign server down) keeps its
        # name- and type-based classification
        conn.execute("ROLLBACK TO SAVEPOINT rowgate_sample")
        log.info("catalog: cannot sample %s: %s", table.qualified, str(e).strip())
        return {}
    conn.execute("RELEASE SAVEPOINT rowgate_sample")
    return {c.name: tuple(r[i] for r in fetched if r[i] is not None) for i, c in enumerate(cols)}


def read_catalog(conninfo: str, sample_rows: int = 200, *, timeout_ms: int = 5000) -> Catalog:
    """Connect, read every user relation and up to `sample_rows` values of each text column."""
    with psycopg.connect(conninfo, autocommit=True, options=f"-c statement_timeout={timeout_ms}") as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            version = schema_fingerprint(conn)
            tables = _tables(conn.execute(_COLUMNS).fetchall())
            out = []
            for t in tables:
                samples = _sample(conn, t, sample_rows)
                out.append(CatalogTable(t.oid, t.schema, t.name, t.kind, t.columns, t.view_sql, t.comment,
                                        t.row_estimate, samples))
        finally:
            conn.execute("ROLLBACK")
    return Catalog(out, version)


def _tables(rows: Sequence[tuple[Any, ...]]) -> list[CatalogTable]:
    tables: list[CatalogTable] = []
    columns: list[CatalogColumn] = []
    current: tuple[Any, ...] | None = None
    for row in [*rows, None]:
        if current is not None and (row is None or row[0] != current[0]):
            oid, schema, name, relkind, reltuples, comment, viewdef = current[:7]
            tables.append(CatalogTable(int(oid), schema, name, RELKINDS[relkind], tuple(columns),
                                       viewdef.strip() if viewdef else None, comment, float(reltuples)))
            columns = []
        if row is None:
            break
        current = row
        attnum, attname, typoid, typname, base, is_array, comment = row[7:]
        columns.append(CatalogColumn(attname, int(attnum), int(typoid), typname, base, bool(is_array), comment))
    return tables
