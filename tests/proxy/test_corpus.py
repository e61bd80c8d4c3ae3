"""The guardrail corpus, end to end: the out-of-the-box policy (no rules, every guardrail
on) in front of a real PostgreSQL, as the ordinary identity "bob".

- ``REFUSED``: statements that must be refused with SQLSTATE 42501, many of them written to
  evade a text filter (case, whitespace, comments, quoting, unicode escapes, dollar quoting,
  several statements in one message, data-modifying CTEs, EXPLAIN ANALYZE, MERGE, PREPARE,
  DO, CALL, user-defined functions, file and role tricks, garbage). Each runs through
  psycopg's simple protocol and through the extended protocol; subsets run through psql and
  asyncpg. After every refusal a snapshot of the database (tables and their contents,
  columns, roles, privileges, settings files, large objects, server files) taken through a
  direct connection must be unchanged, and bob's session must still work as the same role.
- ``READS``, ``WRITES``, ``SESSIONS``: ordinary statements that must pass unchanged: a read
  through the proxy returns exactly what it returns directly; a write's effect is visible
  directly.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg
import pytest
from proxyutil import TOKENS, RunningProxy, UpstreamDB, start_proxy, tool
from psycopg import sql as psql_sql

SCHEMAS = ("corpus", "corpus space")
ROLE = "corpus_reader"  # a role bob must not become or change
VICTIM_DB = "corpus_victim"
TAG = uuid.uuid4().hex[:8]
COPY_FILE = f"/tmp/rowgate_corpus_{TAG}.csv"  # COPY TO a server file must not create it
PROGRAM_FILE = f"/tmp/rowgate_corpus_{TAG}.touched"  # COPY TO PROGRAM 'touch ...' must not create it

# Functions and an operator created directly: they delete corpus.victim's rows, so a call
# that gets through shows up in the snapshot.
_WIPE_BODY = "BEGIN DELETE FROM corpus.victim; RETURN 1; END"
SETUP = f"""
DROP SCHEMA IF EXISTS corpus CASCADE;
DROP SCHEMA IF EXISTS "corpus space" CASCADE;
DROP FUNCTION IF EXISTS public.corpus_wipe();
DROP ROLE IF EXISTS {ROLE};
CREATE ROLE {ROLE} NOLOGIN;
CREATE SCHEMA corpus;
CREATE SCHEMA "corpus space";
CREATE TABLE corpus.t1 (id int PRIMARY KEY, v text NOT NULL, n int);
INSERT INTO corpus.t1 SELECT g, 'v' || g, g * 7 % 50 FROM generate_series(1, 12) g;
CREATE TABLE corpus.t2 (id int PRIMARY KEY, t1_id int, amount numeric(10, 2), created date);
INSERT INTO corpus.t2 SELECT g, g % 9 + 1, g * 3.25, date '2024-01-01' + g FROM generate_series(1, 20) g;
CREATE TABLE corpus.doc (id int PRIMARY KEY, body jsonb);
INSERT INTO corpus.doc VALUES (1, '{{"name": "a", "tags": ["x", "y"], "n": 1}}'),
                              (2, '{{"name": "b", "tags": [], "n": 2}}'),
                              (3, '{{"name": "c", "tags": ["z"], "nested": {{"k": [1, 2, 3]}}}}');
CREATE TABLE corpus.w (id int PRIMARY KEY, v text, n int);
CREATE TABLE corpus.victim (id int);
INSERT INTO corpus.victim SELECT generate_series(1, 3);
CREATE TABLE corpus.owned (id int);
ALTER TABLE corpus.owned OWNER TO {ROLE};
CREATE TABLE "corpus space"."my table" (id int, v text);
INSERT INTO "corpus space"."my table" VALUES (1, 'one'), (2, 'two');
CREATE VIEW corpus.v1 AS SELECT id, v FROM corpus.t1 WHERE id % 2 = 0;
CREATE SEQUENCE corpus.s1;
CREATE INDEX t1_v_idx ON corpus.t1 (v);
CREATE FUNCTION public.corpus_wipe() RETURNS int LANGUAGE plpgsql AS $f${_WIPE_BODY}$f$;
CREATE FUNCTION corpus.corpus_wipe() RETURNS int LANGUAGE plpgsql AS $f${_WIPE_BODY}$f$;
CREATE FUNCTION corpus.lower(text) RETURNS text LANGUAGE plpgsql
    AS $f$BEGIN DELETE FROM corpus.victim; RETURN $1; END$f$;
CREATE FUNCTION corpus.op_wipe(int, int) RETURNS bool LANGUAGE plpgsql
    AS $f$BEGIN DELETE FROM corpus.victim; RETURN true; END$f$;
CREATE OPERATOR corpus.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = corpus.op_wipe);
CREATE FUNCTION corpus.trg_wipe() RETURNS trigger LANGUAGE plpgsql
    AS $f$BEGIN DELETE FROM corpus.victim; RETURN NULL; END$f$;
CREATE PROCEDURE corpus.some_proc() LANGUAGE plpgsql AS $f$BEGIN DELETE FROM corpus.victim; END$f$;
"""
RESTORE_VICTIM = "DELETE FROM corpus.victim; INSERT INTO corpus.victim SELECT generate_series(1, 3)"

_IN_SCHEMAS = "IN ('corpus', 'corpus space', 'public')"
SNAPSHOT_QUERIES = {
    "relations": f"""SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname {_IN_SCHEMAS} ORDER BY 1, 2""",
    "columns": f"""SELECT table_schema, table_name, column_name, data_type, column_default
                   FROM information_schema.columns WHERE table_schema {_IN_SCHEMAS} ORDER BY 1, 2, 3""",
    "schemas": "SELECT nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace ORDER BY 1",
    "roles": """SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
                       rolbypassrls, md5(coalesce(rolpassword, '')) FROM pg_authid ORDER BY 1""",
    "memberships": "SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members ORDER BY 1, 2",
    "role_settings": "SELECT setdatabase, setrole, setconfig::text FROM pg_db_role_setting ORDER BY 1, 2",
    "databases": "SELECT datname, datacl::text FROM pg_database ORDER BY 1",
    "functions": f"""SELECT n.nspname, p.proname, md5(p.prosrc), p.proacl::text FROM pg_proc p
                     JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname {_IN_SCHEMAS} ORDER BY 1, 2""",
    "operators": "SELECT oprname, oprcode::text FROM pg_operator WHERE oprnamespace <> 'pg_catalog'::regnamespace",
    "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
    "event_triggers": "SELECT evtname FROM pg_event_trigger ORDER BY 1",
    "rules": f"SELECT schemaname, tablename, rulename FROM pg_rules WHERE schemaname {_IN_SCHEMAS} ORDER BY 1, 2, 3",
    "default_acl": "SELECT defaclrole, defaclnamespace, defaclobjtype, defaclacl::text FROM pg_default_acl ORDER BY 1",
    "auto_conf": "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY 1",
    "large_objects": "SELECT count(*) FROM pg_largeobject_metadata",
    "sequence": "SELECT last_value, is_called FROM corpus.s1",
}


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything a refused statement could have changed, as seen directly."""
    snap: dict[str, Any] = {name: conn.execute(q).fetchall() for name, q in SNAPSHOT_QUERIES.items()}
    tables = conn.execute(
        f"""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname {_IN_SCHEMAS} AND c.relkind IN ('r', 'p') ORDER BY 1, 2"""
    ).fetchall()
    for schema, table in tables:
        query = psql_sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t"
        ).format(psql_sql.Identifier(schema, table))
        snap[f"rows {schema}.{table}"] = conn.execute(query).fetchone()
    snap["files"] = conn.execute(
        "SELECT pg_stat_file(%s, true) IS NULL, pg_stat_file(%s, true) IS NULL", [COPY_FILE, PROGRAM_FILE]
    ).fetchone()
    return snap


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(upstream: UpstreamDB) -> Iterator[psycopg.Connection[Any]]:
    """A direct superuser connection to the upstream: builds the corpus, takes snapshots."""
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {VICTIM_DB}")
        conn.execute(f"CREATE DATABASE {VICTIM_DB}")
        conn.execute(SETUP)
        yield conn
        conn.execute('DROP SCHEMA corpus CASCADE; DROP SCHEMA "corpus space" CASCADE')
        conn.execute(f"DROP FUNCTION public.corpus_wipe(); DROP OWNED BY {ROLE}; DROP ROLE {ROLE}")
        conn.execute(f"DROP DATABASE IF EXISTS {VICTIM_DB}")


@pytest.fixture(scope="module")
def gw(upstream: UpstreamDB, admin: psycopg.Connection[Any], tmp_path_factory: pytest.TempPathFactory,
       ) -> Iterator[RunningProxy]:
    """The proxy with the default policy: no rules, every guardrail on."""
    p = start_proxy(upstream, tmp_path_factory.mktemp("corpus"), policy={"rules": []})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def bob(gw: RunningProxy) -> Iterator[psycopg.Connection[Any]]:
    """bob's autocommit session, shared by the refused cases: a refusal leaves it usable."""
    with psycopg.connect(gw.dsn("bob"), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def bob_identity(bob: psycopg.Connection[Any]) -> tuple[Any, ...]:
    return session_state(bob)


def session_state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT current_user, session_user, current_setting('search_path'), current_setting('work_mem')",
        prepare=False,
    ).fetchone()
    assert row is not None
    return tuple(row)


# --- the refused corpus -----------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    sql: str
    guardrail: str  # the guardrail the refusal must name


def bad(case_id: str, sql: str, guardrail: str, *marks: Any) -> Any:
    return pytest.param(Bad(sql, guardrail), id=case_id, marks=marks)


T1 = "corpus.t1"
REFUSED = [
    # case, whitespace, comments, quoting
    bad("drop-mixed-case-spaces", f"dRoP   TaBlE   {T1}", "drop"),
    bad("drop-tabs-newlines", f"DROP\tTABLE\n\n  {T1}\r\n", "drop"),
    bad("drop-nested-block-comment", f"DROP /* a /* b */ c */ TABLE {T1}", "drop"),
    bad("drop-line-comment-between", f"DROP -- not really\nTABLE {T1}", "drop"),
    bad("drop-comment-inside-name", "DROP TABLE corpus/**/./**/t1", "drop"),
    bad("drop-quoted-identifiers", 'DROP TABLE "corpus"."t1"', "drop"),
    bad("drop-unicode-escaped", 'DROP TABLE U&"corpus".U&"\\0074\\0031"', "drop"),
    bad("drop-unicode-uescape", "DROP TABLE corpus.U&\"!0074!0031\" UESCAPE '!'", "drop"),
    bad("drop-schema-with-space", 'DROP TABLE "corpus space"."my table"', "drop"),
    bad("drop-if-exists-two-tables", "DROP TABLE IF EXISTS corpus.t1, corpus.t2 CASCADE", "drop"),
    bad("drop-view", "DROP VIEW corpus.v1", "drop"),
    bad("drop-index", "DROP INDEX corpus.t1_v_idx", "drop"),
    bad("drop-sequence", "DROP SEQUENCE corpus.s1", "drop"),
    bad("drop-function", "DROP FUNCTION corpus.corpus_wipe()", "drop"),
    bad("drop-schema-cascade", "DROP SCHEMA corpus CASCADE", "drop"),
    bad("drop-database", f"DROP DATABASE {VICTIM_DB}", "drop"),
    bad("drop-database-force", f"DROP DATABASE IF EXISTS {VICTIM_DB} WITH (FORCE)", "drop"),
    # several statements in one message: the harmful one after harmless ones
    bad("multi-select-then-drop", f"SELECT 1; DROP TABLE {T1}", "drop"),
    bad("multi-after-two-harmless", f"SELECT 1; SELECT count(*) FROM {T1}; DELETE FROM {T1}",
        "delete_without_where"),
    bad("multi-insert-truncate-insert",
        f"INSERT INTO corpus.w VALUES (900, 'x', 0); TRUNCATE {T1}; INSERT INTO corpus.w VALUES (901, 'y', 0)",
        "truncate"),
    bad("multi-in-transaction", f"BEGIN; DROP TABLE {T1}; COMMIT", "drop"),
    bad("multi-search-path-then-unqualified", "SET search_path = corpus; DROP TABLE t1", "drop"),
    bad("multi-no-spaces", f"select 1;drop table {T1};", "drop"),
    # data-modifying CTEs, EXPLAIN ANALYZE, MERGE
    bad("cte-delete", f"WITH d AS (DELETE FROM {T1} RETURNING *) SELECT * FROM d", "delete_without_where"),
    bad("cte-update-into-insert",
        f"WITH u AS (UPDATE {T1} SET v = 'x' RETURNING id) INSERT INTO corpus.w SELECT id, 'u', 0 FROM u",
        "update_without_where"),
    bad("cte-nested-delete",
        f"SELECT * FROM (WITH d AS (DELETE FROM {T1} WHERE true RETURNING id) SELECT id FROM d) s",
        "delete_without_where"),
    bad("explain-analyze-delete", f"EXPLAIN ANALYZE DELETE FROM {T1}", "delete_without_where"),
    bad("explain-analyze-update-json", f"EXPLAIN (ANALYZE, FORMAT JSON) UPDATE {T1} SET v = 'x'",
        "update_without_where"),
    bad("explain-analyze-cte-delete",
        f"EXPLAIN (ANALYZE true) WITH d AS (DELETE FROM {T1} WHERE 1 = 1 RETURNING 1) SELECT 1",
        "delete_without_where"),
    bad("merge-delete-on-true", f"MERGE INTO {T1} t USING corpus.t2 s ON true WHEN MATCHED THEN DELETE",
        "delete_without_where"),
    bad("merge-delete-not-matched-by-source",
        f"MERGE INTO {T1} t USING corpus.t2 s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE",
        "delete_without_where"),
    bad("merge-update-on-true", f"MERGE INTO {T1} t USING (SELECT 1) s ON 1 = 1 WHEN MATCHED THEN UPDATE SET v = 'm'",
        "update_without_where"),
    # PREPARE / EXECUTE
    bad("prepare-delete", f"PREPARE corpus_wipe_plan AS DELETE FROM {T1}", "delete_without_where"),
    bad("prepare-update-with-comment", f"PREPARE corpus_p2 AS /* harmless */ UPDATE {T1} SET v = 'x'",
        "update_without_where"),
    bad("execute-refused-prepare", "EXECUTE corpus_wipe_plan", "unknown_effect"),
    bad("execute-unseen", "EXECUTE corpus_unseen(1, 'x')", "unknown_effect"),
    bad("prepare-then-execute-same-message", f"PREPARE corpus_p3 AS DELETE FROM {T1}; EXECUTE corpus_p3",
        "delete_without_where"),
    # code whose effect the text does not show
    bad("do-dollar-quoted-execute", f"DO $x$ BEGIN EXECUTE 'DROP TABLE {T1}'; END $x$", "unknown_effect"),
    bad("do-plain", "DO 'BEGIN DELETE FROM corpus.victim; END'", "unknown_effect"),
    bad("do-language-plpgsql", "DO LANGUAGE plpgsql $$ BEGIN PERFORM corpus.corpus_wipe(); END $$",
        "unknown_effect"),
    bad("call-procedure", "CALL corpus.some_proc()", "unknown_effect"),
    bad("udf-select", "SELECT corpus_wipe()", "unknown_effect"),
    bad("udf-qualified", "SELECT corpus.corpus_wipe()", "unknown_effect"),
    bad("udf-from-clause", "SELECT * FROM corpus_wipe()", "unknown_effect"),
    bad("udf-in-where", f"SELECT id FROM {T1} WHERE corpus_wipe() > 0", "unknown_effect"),
    bad("udf-in-subquery", "SELECT (SELECT corpus.corpus_wipe())", "unknown_effect"),
    bad("udf-in-insert-values", "INSERT INTO corpus.w VALUES (902, corpus_wipe()::text, 0)", "unknown_effect"),
    bad("udf-in-values", "VALUES (corpus_wipe())", "unknown_effect"),
    bad("udf-quoted-name", 'SELECT "corpus"."corpus_wipe"()', "unknown_effect"),
    bad("udf-named-like-builtin", "SELECT corpus.lower('x')", "unknown_effect"),
    bad("explain-udf", "EXPLAIN SELECT corpus_wipe()", "unknown_effect"),
    bad("query-to-xml", f"SELECT query_to_xml('DELETE FROM {T1} RETURNING 1', true, false, '')", "unknown_effect"),
    bad("operator-backed-by-udf", "SELECT 1 OPERATOR(corpus.===) 1", "unknown_effect"),
    bad("create-trigger-on-udf",
        "CREATE TRIGGER corpus_trg AFTER INSERT ON corpus.w FOR EACH STATEMENT EXECUTE FUNCTION corpus.trg_wipe()",
        "unknown_effect"),
    bad("truncate-plain", f"TRUNCATE {T1}", "truncate"),
    bad("truncate-only", f"TRUNCATE ONLY {T1}", "truncate"),
    bad("truncate-table-two-cascade", f"TRUNCATE TABLE {T1}, corpus.t2 CASCADE", "truncate"),
    bad("truncate-restart-identity", 'truncate "corpus space"."my table" restart identity', "truncate"),
    # DELETE / UPDATE without an effective WHERE
    bad("delete-no-where", f"DELETE FROM {T1}", "delete_without_where"),
    bad("delete-1-eq-1", f"DELETE FROM {T1} WHERE 1=1", "delete_without_where"),
    bad("delete-true", f"DELETE FROM {T1} WHERE true", "delete_without_where"),
    bad("delete-string-eq", f"DELETE FROM {T1} WHERE 'a'='a'", "delete_without_where"),
    bad("delete-id-eq-id", f"DELETE FROM {T1} WHERE id=id", "delete_without_where"),
    bad("delete-not-false", f"DELETE FROM {T1} WHERE NOT false", "delete_without_where"),
    bad("delete-true-or", f"DELETE FROM {T1} WHERE true OR id=1", "delete_without_where"),
    bad("delete-alias-eq-alias", f"DELETE FROM {T1} AS x WHERE x.id = x.id", "delete_without_where"),
    bad("delete-is-null-or-not-null", f"DELETE FROM {T1} WHERE n IS NULL OR n IS NOT NULL", "delete_without_where"),
    bad("delete-like-percent", f"DELETE FROM {T1} WHERE v LIKE '%'", "delete_without_where"),
    bad("delete-2-gt-1", f"DELETE FROM {T1} WHERE 2 > 1", "delete_without_where"),
    bad("delete-only", f"DELETE FROM ONLY {T1}", "delete_without_where"),
    bad("update-no-where", f"UPDATE {T1} SET v = 'x'", "update_without_where"),
    bad("update-1-eq-1", f"UPDATE {T1} SET v = 'x' WHERE 1=1", "update_without_where"),
    bad("update-cast-true", f"UPDATE {T1} SET v = 'x' WHERE 'yes'::boolean", "update_without_where"),
    bad("update-qualified-self-eq", f"UPDATE {T1} SET v = 'x' WHERE t1.id = corpus.t1.id", "update_without_where"),
    bad("update-a-ne-b", f"UPDATE {T1} SET v = 'x' WHERE 'a' <> 'b'", "update_without_where"),
    bad("update-quoted-table", 'UPDATE "corpus space"."my table" SET v = NULL', "update_without_where"),
    # ALTER TABLE DROP COLUMN, DROP/REASSIGN OWNED
    bad("alter-drop-column", f"ALTER TABLE {T1} DROP COLUMN n", "drop_column"),
    bad("alter-drop-without-column-keyword", f"ALTER TABLE {T1} DROP n", "drop_column"),
    bad("alter-add-and-drop", f"ALTER TABLE {T1} ADD COLUMN z int, DROP COLUMN IF EXISTS n CASCADE", "drop_column"),
    bad("drop-owned", f"DROP OWNED BY {ROLE}", "drop_owned"),
    bad("reassign-owned", f"REASSIGN OWNED BY {ROLE} TO CURRENT_USER", "drop_owned"),
    # privileges and roles
    bad("grant-all-public", f"GRANT ALL ON {T1} TO PUBLIC", "privileges"),
    bad("grant-schema", f"GRANT USAGE ON SCHEMA corpus TO {ROLE}", "privileges"),
    bad("revoke", f"REVOKE SELECT ON {T1} FROM PUBLIC", "privileges"),
    bad("grant-role-membership", f"GRANT pg_read_server_files TO {ROLE}", "privileges"),
    bad("alter-default-privileges", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", "privileges"),
    bad("create-role-superuser", "CREATE ROLE corpus_evil SUPERUSER LOGIN PASSWORD 'x'", "role_change"),
    bad("create-user", "CREATE USER corpus_evil", "role_change"),
    bad("alter-role-superuser", f"ALTER ROLE {ROLE} SUPERUSER", "role_change"),
    bad("alter-user-password", f"ALTER USER {ROLE} WITH LOGIN PASSWORD 'x'", "role_change"),
    bad("alter-role-set", f"ALTER ROLE {ROLE} SET search_path = evil", "role_change"),
    bad("alter-role-rename", f"ALTER ROLE {ROLE} RENAME TO corpus_renamed", "role_change"),
    bad("drop-role", f"DROP ROLE {ROLE}", "drop"),
    # COPY with programs and server files
    bad("copy-to-program", f"COPY {T1} TO PROGRAM 'touch {PROGRAM_FILE}'", "copy_program"),
    bad("copy-from-program", "COPY corpus.victim FROM PROGRAM 'echo 99'", "copy_program"),
    bad("copy-query-to-program", f"COPY (SELECT 1) TO PROGRAM 'touch {PROGRAM_FILE}'", "copy_program"),
    bad("copy-to-file", f"COPY {T1} TO '{COPY_FILE}'", "copy_file"),
    bad("copy-query-to-file", f"COPY (SELECT * FROM {T1}) TO '{COPY_FILE}' WITH (FORMAT csv)", "copy_file"),
    bad("copy-from-server-file", "COPY corpus.victim FROM '/etc/hostname'", "copy_file"),
    # changing the role, the server configuration
    bad("set-role", f"SET ROLE {ROLE}", "set_role"),
    bad("set-local-role", f"SET LOCAL ROLE {ROLE}", "set_role"),
    bad("set-role-equals", f"SET role = '{ROLE}'", "set_role"),
    bad("set-session-authorization", f"SET SESSION AUTHORIZATION {ROLE}", "set_role"),
    bad("set-config-role", f"SELECT set_config('role', '{ROLE}', false)", "set_role"),
    bad("set-config-qualified-authorization",
        f"SELECT pg_catalog.set_config('session_authorization', '{ROLE}', false)", "set_role"),
    bad("set-config-search-path", "SELECT set_config('search_path', 'corpus, pg_catalog', false)", "unknown_effect"),
    bad("alter-system", "ALTER SYSTEM SET work_mem = '1GB'", "alter_system"),
    bad("alter-system-reset", "ALTER SYSTEM RESET ALL", "alter_system"),
    # functions with effects outside the statement
    bad("pg-read-file", "SELECT pg_read_file('/etc/hostname')", "unknown_effect"),
    bad("pg-read-binary-file-qualified", "SELECT pg_catalog.pg_read_binary_file('/etc/hostname')", "unknown_effect"),
    bad("pg-ls-dir", "SELECT pg_ls_dir('.')", "unknown_effect"),
    bad("lo-import", "SELECT lo_import('/etc/hostname')", "unknown_effect"),
    bad("dblink-exec", f"SELECT dblink_exec('dbname={VICTIM_DB}', 'DROP TABLE {T1}')", "unknown_effect"),
    bad("dblink-from", "SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)", "unknown_effect"),
    bad("terminate-backends",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()", "unknown_effect"),
    bad("reload-conf", "SELECT pg_reload_conf()", "unknown_effect"),
    bad("load-library", "LOAD 'auto_explain'", "unknown_effect"),
    # garbage
    bad("garbage-typo", "SELEC 1", "unparseable"),
    bad("garbage-incomplete-drop", "DROP TABLE", "unparseable"),
    bad("garbage-unterminated-string", "SELECT 'unterminated", "unparseable"),
    bad("garbage-unterminated-dollar", f"SELECT $x$ hidden; DROP TABLE {T1}", "unparseable"),
    bad("garbage-after-good", "SELECT 1; SELEC 2", "unparseable"),
    bad("garbage-symbols", ")))(((", "unparseable"),
]

# run through asyncpg and psql too: one of each family
SUBSET = {
    "drop-nested-block-comment", "drop-unicode-escaped", "drop-schema-with-space", "multi-select-then-drop",
    "cte-delete", "explain-analyze-delete", "merge-delete-on-true", "prepare-delete", "execute-unseen",
    "do-dollar-quoted-execute", "call-procedure", "udf-select", "truncate-table-two-cascade", "delete-id-eq-id",
    "update-no-where", "alter-drop-column", "drop-owned", "grant-all-public", "alter-role-superuser",
    "copy-to-program", "copy-to-file", "set-role", "set-config-role", "alter-system", "pg-read-file",
    "garbage-typo",
}


def _subset(cases: list[Any], *, single: bool = False) -> list[Any]:
    # asyncpg's prepare and execute-with-arguments take one statement only
    return [c for c in cases if c.id in SUBSET and not (single and ";" in c.values[0].sql.rstrip().rstrip(";"))]


Check = Callable[[], None]


@pytest.fixture
def unchanged(admin: psycopg.Connection[Any], bob: psycopg.Connection[Any],
              bob_identity: tuple[Any, ...]) -> Iterator[Check]:
    """A check that the database and bob's session are exactly as before the test. Whatever
    the outcome, corpus.victim is restored and a trigger that got through is dropped."""
    before = snapshot(admin)

    def check() -> None:
        after = snapshot(admin)
        diff = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
        assert not diff, f"a refused statement changed the database: {diff}"
        assert after.keys() == before.keys()
        assert session_state(bob) == bob_identity

    try:
        yield check
    finally:
        admin.execute(RESTORE_VICTIM)
        admin.execute("DROP TRIGGER IF EXISTS corpus_trg ON corpus.w")


def assert_refused(exc: BaseException, case: Bad) -> None:
    assert isinstance(exc, psycopg.errors.InsufficientPrivilege), repr(exc)
    assert exc.diag.sqlstate == "42501"
    message = exc.diag.message_primary or ""
    assert message.startswith("rowgate: denied"), message
    assert f'guardrail "{case.guardrail}"' in message, message
    assert "rowgate_deny_" not in str(exc)


@pytest.mark.parametrize("case", REFUSED)
def test_refused_simple_protocol(case: Bad, bob: psycopg.Connection[Any], unchanged: Check) -> None:
    with pytest.raises(psycopg.Error) as exc:
        bob.execute(case.sql, prepare=False)  # no parameters: one simple Query message
    assert_refused(exc.value, case)
    unchanged()


@pytest.mark.parametrize("case", REFUSED)
def test_refused_extended_protocol(case: Bad, bob: psycopg.Connection[Any], unchanged: Check) -> None:
    with pytest.raises(psycopg.Error) as exc:
        bob.cursor(binary=True).execute(case.sql, prepare=True)  # Parse of a named statement, Bind, Execute
    assert_refused(exc.value, case)
    unchanged()


REFUSED_WITH_PARAMS = [
    pytest.param(f"UPDATE {T1} SET v = %s", ["x"], "update_without_where", id="update-no-where"),
    pytest.param(f"DELETE FROM {T1} WHERE true OR id = %s", [1], "delete_without_where", id="delete-true-or-param"),
    pytest.param(f"DELETE FROM {T1} WHERE %s = %s OR 1 = 1", [1, 2], "delete_without_where", id="delete-or-1-eq-1"),
    pytest.param(f"UPDATE {T1} SET n = %s WHERE id = id", [5], "update_without_where", id="update-id-eq-id"),
    pytest.param("SELECT pg_read_file(%s)", ["/etc/hostname"], "unknown_effect", id="pg-read-file"),
    pytest.param("SELECT set_config('role', %s, false)", [ROLE], "set_role", id="set-config-role"),
    pytest.param("SELECT set_config(%s, %s, false)", ["role", ROLE], "set_role", id="set-config-computed-name"),
    pytest.param("SELECT corpus_wipe() + %s", [1], "unknown_effect", id="udf"),
    pytest.param("INSERT INTO corpus.w SELECT %s, v, n FROM corpus.t1 WHERE corpus.corpus_wipe() > 0", [903],
                 "unknown_effect", id="udf-in-insert-select"),
    pytest.param(f"WITH d AS (DELETE FROM {T1} RETURNING id) SELECT count(*) + %s FROM d", [0],
                 "delete_without_where", id="cte-delete"),
]


@pytest.mark.parametrize(("query", "params", "guardrail"), REFUSED_WITH_PARAMS)
def test_refused_extended_protocol_with_parameters(query: str, params: list[Any], guardrail: str,
                                                   bob: psycopg.Connection[Any], unchanged: Check) -> None:
    for binary in (False, True):
        with pytest.raises(psycopg.Error) as exc:
            bob.cursor(binary=binary).execute(query, params)
        assert_refused(exc.value, Bad(query, guardrail))
    unchanged()


def _psql(dsn: str, password: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run([tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", dsn, *args],
                          capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("case", _subset(REFUSED))
def test_refused_psql(case: Bad, gw: RunningProxy, unchanged: Check) -> None:
    out = _psql(f"postgresql://bob@127.0.0.1:{gw.port}/app?sslmode=disable", TOKENS["bob"], "-c", case.sql)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert f'ERROR:  rowgate: denied by guardrail "{case.guardrail}"' in out.stderr
    assert "rowgate_deny_" not in out.stderr
    unchanged()


@pytest.mark.parametrize("case", _subset(REFUSED))
def test_refused_asyncpg_execute(case: Bad, gw: RunningProxy, unchanged: Check) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(gw.dsn("bob"))
        try:
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match=f'"{case.guardrail}"'):
                await conn.execute(case.sql)  # without arguments: simple protocol
            assert await conn.fetchval("SELECT current_user") == await conn.fetchval("SELECT session_user")
        finally:
            await conn.close()

    asyncio.run(main())
    unchanged()


@pytest.mark.parametrize("case", _subset(REFUSED, single=True))
def test_refused_asyncpg_prepared(case: Bad, gw: RunningProxy, unchanged: Check) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(gw.dsn("bob"))
        try:
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match=f'"{case.guardrail}"'):
                stmt = await conn.prepare(case.sql)
                await stmt.fetch()
            stmt = await conn.prepare("SELECT count(*) FROM corpus.t1 WHERE id > $1")
            assert await stmt.fetchval(0) == 12
        finally:
            await conn.close()

    asyncio.run(main())
    unchanged()


# --- refusals that depend on session state ----------------------------------------------


def test_search_path_set_earlier_cannot_shadow_builtins(gw: RunningProxy, admin: psycopg.Connection[Any],
                                                        unchanged: Check) -> None:
    """With corpus before pg_catalog, lower() is corpus.lower(), a user function: a later
    message calling lower() has an unknown effect, not the built-in's."""
    with psycopg.connect(gw.dsn("bob"), autocommit=True) as conn:
        conn.execute("SET search_path = corpus, pg_catalog", prepare=False)
        for query in ("SELECT lower('X'::text)", "SELECT lower(v) FROM t1 WHERE id = 1"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match='"unknown_effect"'):
                conn.execute(query, prepare=False)
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match='"unknown_effect"'):
                conn.cursor(binary=True).execute(query)
    unchanged()


def test_search_path_from_startup_cannot_shadow_builtins(gw: RunningProxy, unchanged: Check) -> None:
    """The startup packet's search_path (asyncpg's server_settings) counts like SET."""
    async def main() -> None:
        conn = await asyncpg.connect(gw.dsn("bob"), server_settings={"search_path": "corpus, pg_catalog"})
        try:
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match='"unknown_effect"'):
                await conn.fetchval("SELECT lower('X'::text)")
        finally:
            await conn.close()

    asyncio.run(main())
    unchanged()


def test_refused_parse_leaves_no_statement_to_bind(gw: RunningProxy, unchanged: Check) -> None:
    """asyncpg prepares under a name; after the refusal that name is not usable either."""
    async def main() -> None:
        conn = await asyncpg.connect(gw.dsn("bob"))
        try:
            for _ in range(3):  # again and again on the same session
                with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                    await conn.fetch("DELETE FROM corpus.victim WHERE $1::int IS NULL OR true RETURNING id", 1)
            assert await conn.fetchval("SELECT count(*) FROM corpus.victim") == 3
        finally:
            await conn.close()

    asyncio.run(main())
    unchanged()


# --- the ordinary corpus: reads -----------------------------------------------------------


def read(case_id: str, sql: str, *params: Any) -> Any:
    return pytest.param(sql, list(params) or None, id=case_id)


READS = [
    read("select-star", "SELECT * FROM corpus.t1 ORDER BY id"),
    read("join", "SELECT t1.id, t1.v, t2.amount FROM corpus.t1 JOIN corpus.t2 ON t2.t1_id = t1.id ORDER BY t2.id"),
    read("left-join-aggregate", """SELECT t1.id, count(t2.id), coalesce(sum(t2.amount), 0) FROM corpus.t1
                                   LEFT JOIN corpus.t2 ON t2.t1_id = t1.id GROUP BY t1.id ORDER BY t1.id"""),
    read("cte", "WITH big AS (SELECT * FROM corpus.t2 WHERE amount > 10) SELECT count(*), max(amount) FROM big"),
    read("recursive-cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) "
                          "SELECT sum(n) FROM r"),
    read("subquery-in", "SELECT id FROM corpus.t1 WHERE id IN (SELECT t1_id FROM corpus.t2) ORDER BY id"),
    read("correlated-exists", """SELECT id, v FROM corpus.t1 t WHERE NOT EXISTS
                                 (SELECT 1 FROM corpus.t2 WHERE t1_id = t.id) ORDER BY id"""),
    read("scalar-subquery", "SELECT id, (SELECT max(amount) FROM corpus.t2 WHERE t1_id = t1.id) FROM corpus.t1 "
                            "ORDER BY id"),
    read("window-functions", """SELECT id, n, row_number() OVER (ORDER BY n DESC, id),
                                sum(n) OVER (PARTITION BY id % 2 ORDER BY id), rank() OVER (ORDER BY n)
                                FROM corpus.t1 ORDER BY id"""),
    read("lag-lead", "SELECT id, lag(amount) OVER w, lead(amount, 2, 0) OVER w FROM corpus.t2 "
                     "WINDOW w AS (ORDER BY id) ORDER BY id"),
    read("group-having", """SELECT id % 3, count(*), avg(n), string_agg(v, ',' ORDER BY v) FROM corpus.t1
                            GROUP BY 1 HAVING count(*) > 1 ORDER BY 1"""),
    read("rollup-filter", """SELECT id % 2, count(*) FILTER (WHERE n > 20), sum(n) FROM corpus.t1
                             GROUP BY ROLLUP (1) ORDER BY 1 NULLS LAST"""),
    read("union", "SELECT id FROM corpus.t1 UNION SELECT t1_id FROM corpus.t2 ORDER BY 1"),
    read("except-intersect", "(SELECT id FROM corpus.t1 EXCEPT SELECT t1_id FROM corpus.t2) "
                             "INTERSECT SELECT generate_series(1, 20) ORDER BY 1"),
    read("distinct-on", "SELECT DISTINCT ON (t1_id) t1_id, id, amount FROM corpus.t2 ORDER BY t1_id, amount DESC"),
    read("lateral", """SELECT t1.id, x.amount FROM corpus.t1, LATERAL (SELECT amount FROM corpus.t2
                       WHERE t1_id = t1.id ORDER BY amount DESC LIMIT 1) x ORDER BY 1"""),
    read("limit-offset", "SELECT id, v FROM corpus.t1 ORDER BY n DESC, id LIMIT 3 OFFSET 2"),
    read("values", "VALUES (1, 'a'), (2, 'b'), (3, NULL)"),
    read("table", "TABLE corpus.v1"),
    read("view", "SELECT * FROM corpus.v1 WHERE id > 2 ORDER BY id"),
    read("quoted-schema-with-space", 'SELECT "id", "v" FROM "corpus space"."my table" ORDER BY 1'),
    read("generate-series", "SELECT g, g * g, g::text FROM generate_series(1, 5) g"),
    read("string-functions", """SELECT upper(v), length(v), substr(v, 2), replace(v, 'v', 'w'), v || '!',
                                lpad(v, 6, '*'), split_part('a,b,c', ',', 2), md5(v), initcap('hello world')
                                FROM corpus.t1 ORDER BY id"""),
    read("format-and-regexp", "SELECT format('%s-%s', id, v), regexp_replace(v, '[0-9]+', '#'), "
                              "v ~ '^v1' FROM corpus.t1 ORDER BY id"),
    read("date-functions", """SELECT date '2024-02-29' + 1, date_trunc('month', timestamp '2024-05-17 10:00'),
                              extract(dow FROM date '2024-01-01'), to_char(date '2024-01-01', 'YYYY/MM/DD'),
                              age(timestamp '2024-01-01', timestamp '2023-01-01'), make_date(2024, 3, 1),
                              interval '1 day' * 3"""),
    read("dates-from-table", "SELECT created, created - date '2024-01-01', date_part('month', created) "
                             "FROM corpus.t2 WHERE created < date '2024-01-10' ORDER BY created"),
    read("json-operators", "SELECT body->>'name', body->'tags'->0, jsonb_array_length(body->'tags'), "
                           "body #> '{nested,k}', body ? 'n' FROM corpus.doc ORDER BY id"),
    read("json-build", "SELECT json_build_object('id', id, 'v', v)::text, to_jsonb(t1)::text FROM corpus.t1 "
                       "WHERE id < 4 ORDER BY id"),
    read("jsonb-agg-each", "SELECT key, value::text FROM corpus.doc, jsonb_each(body) WHERE id = 1 ORDER BY key"),
    read("jsonb-path", "SELECT jsonb_path_query_array(body, '$.nested.k[*] ? (@ > 1)')::text FROM corpus.doc "
                       "WHERE id = 3"),
    read("arrays", "SELECT array_agg(id ORDER BY id), array_length(array_agg(id), 1), "
                   "array_to_string(array_agg(v ORDER BY v), '/') FROM corpus.t1"),
    read("unnest", "SELECT * FROM unnest(ARRAY[3, 1, 2]) WITH ORDINALITY AS u(x, i) ORDER BY i"),
    read("case-coalesce-nullif", "SELECT id, CASE WHEN n > 20 THEN 'big' ELSE 'small' END, coalesce(NULL, n), "
                                 "nullif(n, 7), greatest(id, n), least(id, n) FROM corpus.t1 ORDER BY id"),
    read("math", "SELECT round(123.456, 1), 7 / 2, 7 % 3, power(2, 10), sqrt(2::numeric), abs(-3), "
                 "floor(-1.5), 10::numeric / 3"),
    read("like-any", "SELECT id FROM corpus.t1 WHERE v LIKE 'v1%' OR id = ANY(ARRAY[5, 6]) ORDER BY id"),
    read("for-update", "SELECT id FROM corpus.t1 WHERE id = 1 FOR UPDATE"),
    read("text-that-looks-destructive", "SELECT 'DROP TABLE corpus.t1; DELETE FROM corpus.t1' AS s"),
    read("dollar-quoted-text", "SELECT $$; TRUNCATE corpus.t1; $$ AS s, $tag$DROP SCHEMA corpus$tag$ AS t"),
    read("comments-with-destructive-text", "SELECT 1 /* DROP TABLE corpus.t1 /* nested */ */ AS x "
                                           "-- ; DELETE FROM corpus.t1"),
    read("escape-string", "SELECT E'it\\'s; DROP TABLE corpus.t1' AS s"),
    read("where-v-equals-sql", "SELECT count(*) FROM corpus.t1 WHERE v = 'delete from corpus.t1'"),
    read("explain-select", "EXPLAIN (COSTS OFF) SELECT * FROM corpus.t1 WHERE id = 1"),
    read("explain-delete-without-analyze", "EXPLAIN (COSTS OFF) DELETE FROM corpus.t1"),
    read("show", "SHOW work_mem"),
    read("catalog-relations", """SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid =
                                 c.relnamespace WHERE n.nspname = 'corpus' ORDER BY 1"""),
    read("information-schema", """SELECT table_name, column_name, data_type FROM information_schema.columns
                                  WHERE table_schema = 'corpus' ORDER BY 1, ordinal_position"""),
    read("catalog-functions", "SELECT pg_get_viewdef('corpus.v1'::regclass), format_type('numeric'::regtype, 655366),"
                              " has_table_privilege('corpus.t1', 'SELECT'), to_regclass('corpus.t1')::text"),
    read("set-config-custom-setting", "SELECT set_config('corpus.user_id', '42', false), "
                                      "current_setting('corpus.user_id')"),
    read("current-database", "SELECT current_database(), current_schema(), version() = version()"),
    read("param-equals", "SELECT v FROM corpus.t1 WHERE id = %s", 3),
    read("param-arithmetic", "SELECT %s::int + %s::int, %s::text || 'x'", 2, 3, "a"),
    read("param-range", "SELECT id, amount FROM corpus.t2 WHERE amount > %s AND t1_id <> %s ORDER BY id", 20, 4),
]


def _fetch(conn: psycopg.Connection[Any], query: str, params: list[Any] | None, binary: bool) -> list[Any]:
    cur = conn.cursor(binary=binary)
    cur.execute(query, params, prepare=False if params is None and not binary else None)
    return cur.fetchall()


@pytest.fixture(scope="module")
def app(gw: RunningProxy) -> Iterator[psycopg.Connection[Any]]:
    """bob's application session for the ordinary corpus."""
    with psycopg.connect(gw.dsn("bob"), autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize(("query", "params"), READS)
def test_read_passes_unchanged(query: str, params: list[Any] | None, app: psycopg.Connection[Any],
                               admin: psycopg.Connection[Any]) -> None:
    for binary in (False, True):
        through = _fetch(app, query, params, binary)
        direct = _fetch(admin, query, params, binary)
        assert through == direct, f"binary={binary}"


# --- the ordinary corpus: writes and DDL --------------------------------------------------


@dataclass(frozen=True)
class Write:
    sql: str
    check: str  # run directly afterwards
    expect: list[tuple[Any, ...]]
    params: tuple[Any, ...] | None = None
    setup: str | None = None  # run directly before
    returns: list[tuple[Any, ...]] | None = None  # rows the statement itself returns through the proxy


def write(case_id: str, w: Write) -> Any:
    return pytest.param(w, id=case_id)


def _w(i: int) -> str:
    return f"SELECT id, v, n FROM corpus.w WHERE id BETWEEN {i} AND {i + 9} ORDER BY id"


WRITES = [
    write("insert", Write("INSERT INTO corpus.w VALUES (100, 'one', 1)", _w(100), [(100, "one", 1)])),
    write("insert-returning", Write("INSERT INTO corpus.w (id, v) VALUES (110, 'two') RETURNING id, v", _w(110),
                                    [(110, "two", None)], returns=[(110, "two")])),
    write("insert-multi-row", Write("INSERT INTO corpus.w VALUES (120, 'a', 1), (121, 'b', 2), (122, 'c', 3)",
                                    "SELECT count(*), sum(n) FROM corpus.w WHERE id BETWEEN 120 AND 129",
                                    [(3, 6)])),
    write("insert-select", Write("INSERT INTO corpus.w SELECT id + 130, v, n FROM corpus.t1 WHERE id <= 3",
                                 "SELECT count(*) FROM corpus.w WHERE id BETWEEN 131 AND 133", [(3,)])),
    write("insert-on-conflict-update", Write(
        "INSERT INTO corpus.w VALUES (140, 'new', 0) ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = w.n + 1",
        _w(140), [(140, "new", 6)], setup="INSERT INTO corpus.w VALUES (140, 'old', 5)")),
    write("insert-on-conflict-nothing", Write("INSERT INTO corpus.w VALUES (150, 'new', 0) ON CONFLICT DO NOTHING",
                                              _w(150), [(150, "old", 5)],
                                              setup="INSERT INTO corpus.w VALUES (150, 'old', 5)")),
    write("insert-params", Write("INSERT INTO corpus.w VALUES (%s, %s, %s)", _w(160), [(160, "p", 7)],
                                 params=(160, "p", 7))),
    write("update-where", Write("UPDATE corpus.w SET n = n + 1 WHERE id = 170", _w(170),
                                [(170, "a", 2), (171, "b", 1)],
                                setup="INSERT INTO corpus.w VALUES (170, 'a', 1), (171, 'b', 1)")),
    write("update-from", Write("UPDATE corpus.w SET v = t1.v FROM corpus.t1 WHERE w.id = t1.id + 180", _w(180),
                               [(181, "v1", 0)], setup="INSERT INTO corpus.w VALUES (181, 'x', 0)")),
    write("update-returning-params", Write("UPDATE corpus.w SET v = %s WHERE id = %s RETURNING v", _w(190),
                                           [(190, "upd", 0)], params=("upd", 190), returns=[("upd",)],
                                           setup="INSERT INTO corpus.w VALUES (190, 'x', 0)")),
    write("update-in-subquery", Write(
        "UPDATE corpus.w SET n = 9 WHERE id IN (SELECT id + 200 FROM corpus.t1 WHERE id < 2)", _w(200),
        [(201, "a", 9), (202, "b", 0)], setup="INSERT INTO corpus.w VALUES (201, 'a', 0), (202, 'b', 0)")),
    write("delete-where", Write("DELETE FROM corpus.w WHERE id = 210", _w(210), [(211, "b", 0)],
                                setup="INSERT INTO corpus.w VALUES (210, 'a', 0), (211, 'b', 0)")),
    write("delete-using-returning", Write(
        "DELETE FROM corpus.w USING corpus.t1 WHERE w.id = t1.id + 220 AND t1.v = 'v1' RETURNING w.id", _w(220),
        [(222, "b", 0)], returns=[(221,)], setup="INSERT INTO corpus.w VALUES (221, 'a', 0), (222, 'b', 0)")),
    write("delete-params", Write("DELETE FROM corpus.w WHERE id = %s AND v = %s", _w(230), [], params=(230, "a"),
                                 setup="INSERT INTO corpus.w VALUES (230, 'a', 0)")),
    write("cte-delete-with-where", Write(
        "WITH d AS (DELETE FROM corpus.w WHERE id = 240 RETURNING *) INSERT INTO corpus.w SELECT id + 1, v, n FROM d",
        _w(240), [(241, "moved", 0)], setup="INSERT INTO corpus.w VALUES (240, 'moved', 0)")),
    write("merge-with-conditions", Write(
        """MERGE INTO corpus.w w USING (VALUES (250, 'five'), (251, 'six')) s(id, v) ON w.id = s.id
           WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v, 0)""",
        _w(250), [(250, "five", 1), (251, "six", 0)], setup="INSERT INTO corpus.w VALUES (250, 'x', 1)")),
    write("merge-conditional-delete", Write(
        """MERGE INTO corpus.w w USING (VALUES (260), (261)) s(id) ON w.id = s.id
           WHEN MATCHED AND w.n > 0 THEN DELETE WHEN MATCHED THEN UPDATE SET n = 5""",
        _w(260), [(261, "b", 5)], setup="INSERT INTO corpus.w VALUES (260, 'a', 1), (261, 'b', 0)")),
    write("nextval", Write("SELECT nextval('corpus.s1')", "SELECT is_called FROM corpus.s1", [(True,)])),
    write("create-table", Write("CREATE TABLE corpus.created (id int PRIMARY KEY, v text)",
                                "SELECT to_regclass('corpus.created') IS NOT NULL", [(True,)])),
    write("create-index", Write("CREATE INDEX corpus_created_v ON corpus.created (v)",
                                "SELECT to_regclass('corpus.corpus_created_v') IS NOT NULL", [(True,)])),
    write("alter-table-add-column", Write("ALTER TABLE corpus.created ADD COLUMN extra int DEFAULT 0",
                                          """SELECT column_name FROM information_schema.columns WHERE
                                             table_schema = 'corpus' AND table_name = 'created' ORDER BY 1""",
                                          [("extra",), ("id",), ("v",)])),
    write("create-view", Write("CREATE VIEW corpus.created_v AS SELECT id FROM corpus.created",
                               "SELECT to_regclass('corpus.created_v') IS NOT NULL", [(True,)])),
    write("create-table-as", Write("CREATE TABLE corpus.ctas AS SELECT id, v FROM corpus.t1 WHERE id < 4",
                                   "SELECT count(*) FROM corpus.ctas", [(3,)])),
    write("select-into", Write("SELECT id, v INTO corpus.selinto FROM corpus.t1 WHERE id < 3",
                               "SELECT count(*) FROM corpus.selinto", [(2,)])),
    write("comment-on", Write("COMMENT ON TABLE corpus.w IS 'scratch'",
                              "SELECT obj_description('corpus.w'::regclass, 'pg_class')", [("scratch",)])),
    write("analyze", Write("ANALYZE corpus.t1", "SELECT count(*) > 0 FROM pg_stats WHERE schemaname = 'corpus' "
                           "AND tablename = 't1'", [(True,)])),
]


@pytest.mark.parametrize("case", WRITES)
def test_write_passes_and_takes_effect(case: Write, app: psycopg.Connection[Any],
                                       admin: psycopg.Connection[Any]) -> None:
    if case.setup:
        admin.execute(case.setup)
    cur = app.execute(case.sql, list(case.params) if case.params is not None else None,
                      prepare=False if case.params is None else None)
    if case.returns is not None:
        assert cur.fetchall() == case.returns
    assert admin.execute(case.check).fetchall() == case.expect


# --- the ordinary corpus: sessions and transactions ---------------------------------------


@dataclass(frozen=True)
class Session:
    steps: tuple[str, ...]  # through the proxy, in order, on a fresh connection
    last: list[tuple[Any, ...]] | None = None  # what the last step returns
    check: str | None = None  # run directly afterwards
    expect: list[tuple[Any, ...]] | None = None


SESSIONS = [
    pytest.param(Session(("SET statement_timeout = '5s'", "SHOW statement_timeout"), [("5s",)]),
                 id="set-statement-timeout"),
    pytest.param(Session(("SET TimeZone = 'Europe/Berlin'", "SELECT current_setting('TimeZone')"),
                         [("Europe/Berlin",)]), id="set-timezone"),
    pytest.param(Session(("SET application_name = 'corpus-app'", "SELECT current_setting('application_name')"),
                         [("corpus-app",)]), id="set-application-name"),
    pytest.param(Session(("SET search_path = corpus, public", "SELECT count(*) FROM t1"), [(12,)]),
                 id="set-search-path"),
    pytest.param(Session(("SET work_mem = '8MB'", "RESET work_mem", "SET lock_timeout TO DEFAULT",
                          "SELECT current_setting('lock_timeout')"), [("0",)]), id="reset"),
    pytest.param(Session(("BEGIN", "SET LOCAL work_mem = '8MB'", "SHOW work_mem"), [("8MB",)]), id="set-local"),
    pytest.param(Session(("BEGIN", "INSERT INTO corpus.w VALUES (300, 'tx', 0)", "SAVEPOINT s1",
                          "UPDATE corpus.w SET v = 'tx2' WHERE id = 300", "ROLLBACK TO SAVEPOINT s1",
                          "RELEASE SAVEPOINT s1", "COMMIT"),
                         check=_w(300), expect=[(300, "tx", 0)]), id="transaction-savepoints"),
    pytest.param(Session(("BEGIN", "INSERT INTO corpus.w VALUES (310, 'gone', 0)", "ROLLBACK"),
                         check=_w(310), expect=[]), id="transaction-rollback"),
    pytest.param(Session(("START TRANSACTION ISOLATION LEVEL REPEATABLE READ", "SELECT count(*) FROM corpus.t1",
                          "END"), [], check="SELECT 1", expect=[(1,)]), id="start-transaction"),
    pytest.param(Session(("CREATE TEMP TABLE corpus_tmp (a int)", "INSERT INTO corpus_tmp VALUES (1), (2)",
                          "UPDATE corpus_tmp SET a = a + 10 WHERE a = 1", "DELETE FROM corpus_tmp WHERE a = 2",
                          "SELECT a FROM corpus_tmp"), [(11,)]), id="temp-table"),
    pytest.param(Session(("PREPARE corpus_q(int) AS SELECT v FROM corpus.t1 WHERE id = $1", "EXECUTE corpus_q(2)"),
                         [("v2",)]), id="prepare-execute"),
    pytest.param(Session(("PREPARE corpus_ins(int, text) AS INSERT INTO corpus.w VALUES ($1, $2, 0)",
                          "EXECUTE corpus_ins(320, 'prepared')", "DEALLOCATE corpus_ins"),
                         check=_w(320), expect=[(320, "prepared", 0)]), id="prepare-execute-write"),
    pytest.param(Session(("BEGIN", "DECLARE c CURSOR FOR SELECT id FROM corpus.t1 ORDER BY id", "FETCH 2 FROM c",
                          "MOVE 3 IN c", "FETCH NEXT FROM c"), [(6,)]), id="cursor"),
    pytest.param(Session(("BEGIN", "LOCK TABLE corpus.t1 IN SHARE MODE", "SELECT count(*) FROM corpus.t1",
                          "COMMIT"), []), id="lock-table"),
    pytest.param(Session(("LISTEN corpus_chan", "NOTIFY corpus_chan, 'hi'", "UNLISTEN corpus_chan",
                          "SELECT 1"), [(1,)]), id="listen-notify"),
    pytest.param(Session(("SET work_mem = '8MB'", "DISCARD ALL", "SHOW work_mem"), None), id="discard-all"),
]


@pytest.mark.parametrize("case", SESSIONS)
def test_session_statements_pass(case: Session, gw: RunningProxy, admin: psycopg.Connection[Any]) -> None:
    with psycopg.connect(gw.dsn("bob"), autocommit=True) as conn:
        rows: list[Any] = []
        for step in case.steps:
            cur = conn.execute(step, prepare=False)
            rows = cur.fetchall() if cur.description is not None else []
        if case.last is not None:
            assert rows == case.last
    if case.check is not None:
        assert admin.execute(case.check).fetchall() == case.expect


def test_copy_to_stdout_and_from_stdin(app: psycopg.Connection[Any], admin: psycopg.Connection[Any]) -> None:
    query = "COPY (SELECT * FROM corpus.t1 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
    outputs = []
    for conn in (app, admin):
        with conn.cursor().copy(query) as copy:
            outputs.append(b"".join(bytes(chunk) for chunk in copy))
    assert outputs[0] == outputs[1] and outputs[0].startswith(b"id,v,n\n1,v1,7\n")
    with app.cursor().copy("COPY corpus.w (id, v, n) FROM STDIN") as copy:
        copy.write_row((400, "copied", 1))
        copy.write_row((401, "in", 2))
    assert admin.execute(_w(400)).fetchall() == [(400, "copied", 1), (401, "in", 2)]


PSQL_READS = [
    pytest.param(("-c", r"\d corpus.t1"), id="describe-table"),
    pytest.param(("-c", r"\dt corpus.*"), id="list-tables"),
    pytest.param(("-c", r"\dn corpus*"), id="list-schemas"),
    pytest.param(("-c", r"\dv corpus.*"), id="list-views"),
    pytest.param(("-c", r"\d+ corpus.v1"), id="describe-view-verbose"),
    pytest.param(("-c", "SELECT id, v FROM corpus.t1 WHERE id < 4 ORDER BY id"), id="select"),
    pytest.param(("-c", "BEGIN", "-c", "SELECT count(*) FROM corpus.t2", "-c", "COMMIT"), id="transaction"),
    pytest.param(("-A", "-t", "-c", "SELECT json_agg(t1 ORDER BY id) FROM corpus.t1"), id="json-unaligned"),
]


@pytest.mark.parametrize("args", PSQL_READS)
def test_psql_passes_unchanged(args: tuple[str, ...], gw: RunningProxy, upstream: UpstreamDB) -> None:
    through = _psql(f"postgresql://bob@127.0.0.1:{gw.port}/app?sslmode=disable", TOKENS["bob"], *args)
    direct = _psql(upstream.dsn(), upstream.password, *args)
    assert through.returncode == 0, through.stderr
    assert through.stdout == direct.stdout and through.stdout


ASYNCPG_READS = [
    pytest.param("SELECT id, v, n FROM corpus.t1 WHERE id > $1 ORDER BY id", (3,), id="select-param"),
    pytest.param("SELECT t1_id, sum(amount), min(created) FROM corpus.t2 WHERE amount > $1 GROUP BY 1 ORDER BY 1",
                 (5,), id="aggregate-numeric-date"),
    pytest.param("SELECT body, body->'tags' FROM corpus.doc WHERE id = ANY($1::int[]) ORDER BY id", ([1, 3],),
                 id="jsonb-array-param"),
    pytest.param("SELECT $1::text || v, length($1::text) FROM corpus.t1 WHERE id = $2", ("x", 2), id="text-params"),
    pytest.param("WITH s AS (SELECT id, n FROM corpus.t1) SELECT count(*), max(n) FROM s WHERE id <= $1", (6,),
                 id="cte-param"),
]


@pytest.mark.parametrize(("query", "args"), ASYNCPG_READS)
def test_asyncpg_prepared_passes_unchanged(query: str, args: tuple[Any, ...], gw: RunningProxy,
                                           upstream: UpstreamDB) -> None:
    async def fetch(dsn: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            stmt = await conn.prepare(query)
            rows = [tuple(r) for r in await stmt.fetch(*args)]
            assert rows == [tuple(r) for r in await conn.fetch(query, *args)]
            return rows
        finally:
            await conn.close()

    async def main() -> None:
        through = await fetch(gw.dsn("bob"))
        direct = await fetch(upstream.dsn())
        assert through == direct and through

    asyncio.run(main())


def test_asyncpg_simple_protocol_write(gw: RunningProxy, admin: psycopg.Connection[Any]) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(gw.dsn("bob"))
        try:
            await conn.execute("INSERT INTO corpus.w VALUES (500, 'a', 1); UPDATE corpus.w SET n = 2 WHERE id = 500")
            await conn.executemany("INSERT INTO corpus.w VALUES ($1, $2, 0)", [(501, "b"), (502, "c")])
        finally:
            await conn.close()

    asyncio.run(main())
    assert admin.execute(_w(500)).fetchall() == [(500, "a", 2), (501, "b", 0), (502, "c", 0)]
