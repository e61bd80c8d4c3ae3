"""Statement analysis, no database: classification, tables, columns, functions, flags,
and the evasion forms the guardrails must see through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rowgate.sql import analyzer, facts
from rowgate.sql.analyzer import analyze
from rowgate.sql.facts import Kind, Statement
from rowgate.sql.functions import is_known_safe
from rowgate.sql.names import parse_search_path, quote_ident


def one(sql: str, search_path: tuple[str, ...] = ("public",)) -> Statement:
    statements = analyze(sql, search_path)
    assert len(statements) == 1, statements
    return statements[0]


# kinds and command tags ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "kind", "command"),
    [
        ("SELECT 1", Kind.READ, "SELECT"),
        ("select * from t for update", Kind.READ, "SELECT"),
        ("VALUES (1), (2)", Kind.READ, "SELECT"),
        ("TABLE customers", Kind.READ, "SELECT"),
        ("SHOW search_path", Kind.READ, "SHOW"),
        ("INSERT INTO t VALUES (1)", Kind.WRITE, "INSERT"),
        ("UPDATE t SET a = 1 WHERE id = 2", Kind.WRITE, "UPDATE"),
        ("DELETE FROM t WHERE id = 2", Kind.WRITE, "DELETE"),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a", Kind.WRITE, "MERGE"),
        ("COPY t FROM STDIN", Kind.WRITE, "COPY"),
        ("COPY t TO STDOUT", Kind.READ, "COPY"),
        ("TRUNCATE t", Kind.DDL, "TRUNCATE"),
        ("CREATE TABLE t (a int)", Kind.DDL, "CREATE TABLE"),
        ("CREATE TABLE t2 AS SELECT * FROM t", Kind.DDL, "CREATE TABLE AS"),
        ("SELECT * INTO t2 FROM t", Kind.DDL, "SELECT INTO"),
        ("CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", Kind.DDL, "CREATE MATERIALIZED VIEW"),
        ("CREATE VIEW v AS SELECT * FROM t", Kind.DDL, "CREATE VIEW"),
        ("CREATE INDEX i ON t (a)", Kind.DDL, "CREATE INDEX"),
        ("DROP TABLE t", Kind.DDL, "DROP TABLE"),
        ("DROP SCHEMA s CASCADE", Kind.DDL, "DROP SCHEMA"),
        ("DROP FUNCTION f(int)", Kind.DDL, "DROP FUNCTION"),
        ("ALTER TABLE t ADD COLUMN b int", Kind.DDL, "ALTER TABLE"),
        ("ALTER TABLE t RENAME COLUMN a TO b", Kind.DDL, "ALTER TABLE"),
        ("COMMENT ON TABLE t IS 'x'", Kind.DDL, "COMMENT"),
        ("GRANT SELECT ON t TO bob", Kind.DCL, "GRANT"),
        ("REVOKE SELECT ON t FROM bob", Kind.DCL, "REVOKE"),
        ("GRANT admins TO bob", Kind.DCL, "GRANT ROLE"),
        ("CREATE ROLE r", Kind.DCL, "CREATE ROLE"),
        ("CREATE USER u", Kind.DCL, "CREATE USER"),
        ("DROP ROLE r", Kind.DCL, "DROP ROLE"),
        ("SET search_path = app", Kind.SESSION, "SET"),
        ("RESET search_path", Kind.SESSION, "RESET"),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Kind.SESSION, "SET"),
        ("DISCARD ALL", Kind.SESSION, "DISCARD ALL"),
        ("LISTEN ch", Kind.SESSION, "LISTEN"),
        ("UNLISTEN *", Kind.SESSION, "UNLISTEN"),
        ("BEGIN", Kind.TRANSACTION, "BEGIN"),
        ("START TRANSACTION READ ONLY", Kind.TRANSACTION, "START TRANSACTION"),
        ("COMMIT", Kind.TRANSACTION, "COMMIT"),
        ("ROLLBACK", Kind.TRANSACTION, "ROLLBACK"),
        ("SAVEPOINT s1", Kind.TRANSACTION, "SAVEPOINT"),
        ("RELEASE SAVEPOINT s1", Kind.TRANSACTION, "RELEASE"),
        ("ROLLBACK TO SAVEPOINT s1", Kind.TRANSACTION, "ROLLBACK"),
        ("PREPARE TRANSACTION 'x'", Kind.TRANSACTION, "PREPARE TRANSACTION"),
        ("VACUUM t", Kind.UTILITY, "VACUUM"),
        ("ANALYZE t", Kind.UTILITY, "ANALYZE"),
        ("CHECKPOINT", Kind.UTILITY, "CHECKPOINT"),
        ("NOTIFY ch, 'x'", Kind.UTILITY, "NOTIFY"),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Kind.UTILITY, "LOCK TABLE"),
        ("DECLARE c CURSOR FOR SELECT * FROM t", Kind.UTILITY, "DECLARE CURSOR"),
        ("FETCH 10 FROM c", Kind.READ, "FETCH"),
        ("MOVE 10 IN c", Kind.UTILITY, "MOVE"),
        ("CLOSE c", Kind.UTILITY, "CLOSE CURSOR"),
        ("CLOSE ALL", Kind.UTILITY, "CLOSE CURSOR ALL"),
        ("DEALLOCATE p", Kind.UTILITY, "DEALLOCATE"),
        ("DO $$BEGIN NULL; END$$", Kind.PROCEDURAL, "DO"),
        ("CALL proc(1)", Kind.PROCEDURAL, "CALL"),
        ("EXECUTE p(1)", Kind.PROCEDURAL, "EXECUTE"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", Kind.DDL, "CREATE FUNCTION"),
        ("CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'", Kind.DDL, "CREATE PROCEDURE"),
        ("LOAD 'somelib'", Kind.PROCEDURAL, "LOAD"),
        ("ALTER SYSTEM SET work_mem = '1GB'", Kind.DDL, "ALTER SYSTEM"),
        ("CREATE EXTENSION hstore", Kind.DDL, "CREATE EXTENSION"),
        ("REFRESH MATERIALIZED VIEW mv", Kind.DDL, "REFRESH MATERIALIZED VIEW"),
        ("EXPLAIN SELECT * FROM t", Kind.READ, "EXPLAIN"),
    ],
)
def test_kind_and_command(sql: str, kind: Kind, command: str) -> None:
    s = one(sql)
    assert (s.kind, s.command) == (kind, command)


# tables ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "read", "written"),
    [
        ("SELECT * FROM customers", {"public.customers"}, set()),
        ("SELECT * FROM app.orders o JOIN customers c ON c.id = o.cid", {"app.orders", "public.customers"}, set()),
        ("SELECT * FROM pg_class", {"pg_catalog.pg_class"}, set()),
        ("SELECT * FROM information_schema.tables", {"information_schema.tables"}, set()),
        ('SELECT * FROM "Customers"', {"public.Customers"}, set()),
        ('SELECT * FROM "my schema"."my table"', {"my schema.my table"}, set()),
        ('SELECT * FROM U&"d\\0061ta"', {"public.data"}, set()),
        ("SELECT * FROM a WHERE id IN (SELECT aid FROM b WHERE EXISTS (SELECT 1 FROM c))",
         {"public.a", "public.b", "public.c"}, set()),
        ("SELECT (SELECT max(x) FROM b) FROM a", {"public.a", "public.b"}, set()),
        ("SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.id = a.id) s", {"public.a", "public.b"}, set()),
        ("SELECT * FROM (SELECT * FROM a) s JOIN (b JOIN c USING (id)) ON true", {"public.a", "public.b", "public.c"},
         set()),
        ("SELECT * FROM a UNION SELECT * FROM b EXCEPT SELECT * FROM c", {"public.a", "public.b", "public.c"}, set()),
        ("WITH customers AS (SELECT * FROM app.people) SELECT * FROM customers", {"app.people"}, set()),
        ("WITH customers AS (SELECT * FROM customers) SELECT * FROM customers", {"public.customers"}, set()),
        ("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
         set(), set()),
        ("SELECT * FROM public.customers x WHERE x.id = (WITH q AS (SELECT id FROM app.o) SELECT max(id) FROM q)",
         {"public.customers", "app.o"}, set()),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", set(), {"public.t"}),
        ("INSERT INTO archive SELECT * FROM orders WHERE old", {"public.orders"}, {"public.archive"}),
        ("INSERT INTO t (a) VALUES ((SELECT max(a) FROM u))", {"public.u"}, {"public.t"}),
        ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", {"public.u"}, {"public.t"}),
        ("DELETE FROM t USING u WHERE t.id = u.id RETURNING (SELECT 1 FROM v LIMIT 1)", {"public.u", "public.v"},
         {"public.t"}),
        ("MERGE INTO t USING (SELECT * FROM s) src ON t.id = src.id WHEN MATCHED THEN DELETE",
         {"public.s"}, {"public.t"}),
        ("CREATE TABLE t2 AS SELECT * FROM t", {"public.t"}, {"public.t2"}),
        ("SELECT * INTO t2 FROM t", {"public.t"}, {"public.t2"}),
        ("COPY t FROM STDIN", set(), {"public.t"}),
        ("COPY t TO STDOUT", {"public.t"}, set()),
        ("COPY (SELECT * FROM a JOIN b USING (id)) TO STDOUT", {"public.a", "public.b"}, set()),
        ("TRUNCATE a, s.b", set(), {"public.a", "s.b"}),
        ("DROP TABLE a, s.b", set(), {"public.a", "s.b"}),
        ("ALTER TABLE app.t ADD COLUMN c int", set(), {"app.t"}),
        ("CREATE TABLE t (LIKE src)", {"public.src"}, {"public.t"}),
        ("SELECT nextval('app.orders_id_seq')", set(), {"app.orders_id_seq"}),
        ("SELECT nextval('\"Seq\"'::regclass)", set(), {"public.Seq"}),
        ("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", set(), {"public.t"}),
        ("EXPLAIN UPDATE t SET a = 1", {"public.t"}, set()),
        ("PREPARE p AS SELECT * FROM secrets WHERE id = $1", {"public.secrets"}, set()),
        ("DECLARE c CURSOR FOR SELECT * FROM t", {"public.t"}, set()),
        ("CREATE VIEW v AS SELECT * FROM t", {"public.t"}, {"public.v"}),
        ("GRANT SELECT ON t, s.u TO bob", set(), {"public.t", "s.u"}),
        ("CREATE TEMP TABLE x (a int)", set(), {"pg_temp.x"}),
    ],
)
def test_tables(sql: str, read: set[str], written: set[str]) -> None:
    s = one(sql)
    assert set(s.tables_read) == read
    assert set(s.tables_written) == written


def test_search_path_resolution() -> None:
    assert one("SELECT * FROM t", ("$user", "app", "public")).tables_read == {"app.t"}
    assert one("SELECT * FROM t", ("$user",)).tables_read == {"public.t"}
    assert one("SELECT * FROM pg_stat_activity", ("app",)).tables_read == {"pg_catalog.pg_stat_activity"}


def test_set_search_path_applies_to_later_statements_of_the_message() -> None:
    first, second, third, fourth = analyze("SET search_path = secret; SELECT * FROM t; RESET search_path; TABLE t")
    assert first.setting == ("search_path", "secret")
    assert second.tables_read == {"secret.t"}
    assert third.setting == ("search_path", None)
    assert fourth.tables_read == {"public.t"}


# columns ---------------------------------------------------------------------------------

def test_columns_per_clause() -> None:
    s = one(
        "SELECT c.name, o.total FROM customers c JOIN app.orders o ON o.cid = c.id "
        "WHERE c.email LIKE '%x' GROUP BY c.name, o.total HAVING count(o.id) > 1 ORDER BY c.name"
    )
    assert s.columns == {
        "select": {"public.customers.name", "app.orders.total"},
        "join": {"app.orders.cid", "public.customers.id"},
        "where": {"public.customers.email"},
        "group_by": {"public.customers.name", "app.orders.total"},
        "having": {"app.orders.id"},
        "order_by": {"public.customers.name"},
    }


def test_unqualified_column_single_table_and_ambiguous() -> None:
    assert one("SELECT email FROM customers WHERE id = 1").columns == {
        "select": {"public.customers.email"}, "where": {"public.customers.id"}}
    assert one("SELECT email FROM customers, orders").columns == {"select": {"?.email"}}


def test_star_and_qualified_star() -> None:
    assert one("SELECT * FROM a, b").columns["select"] == {"public.a.*", "public.b.*"}
    assert one("SELECT b.* FROM a, s.b").columns["select"] == {"s.b.*"}
    assert one("SELECT public.a.x FROM a").columns["select"] == {"public.a.x"}


def test_whole_row_reference_counts_as_star() -> None:
    assert "public.customers.*" in one("SELECT to_json(c) FROM customers c").columns["select"]


def test_update_set_returning_columns() -> None:
    s = one("UPDATE t SET a = b + 1 WHERE id = 3 RETURNING a, c")
    assert s.columns == {
        "set": {"public.t.a"}, "select": {"public.t.b"}, "where": {"public.t.id"},
        "returning": {"public.t.a", "public.t.c"},
    }


def test_insert_columns_and_on_conflict() -> None:
    s = one("INSERT INTO t (a, b) VALUES (1, 2) ON CONFLICT (a) DO UPDATE SET b = excluded.b")
    assert s.columns["set"] == {"public.t.a", "public.t.b"}
    assert s.columns["select"] == {"public.t.b"}


def test_correlated_subquery_column() -> None:
    s = one("SELECT * FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.x = a.y)")
    assert s.columns["where"] == {"public.b.x", "public.a.y"}


def test_cte_columns_are_unknown_table_but_body_is_recorded() -> None:
    s = one("WITH c AS (SELECT ssn FROM customers) SELECT ssn FROM c")
    assert s.columns["select"] == {"public.customers.ssn", "?.ssn"}


def test_copy_columns() -> None:
    assert one("COPY customers (name, ssn) TO STDOUT").columns == {
        "select": {"public.customers.name", "public.customers.ssn"}}


def test_order_by_output_alias_is_not_a_table_column() -> None:
    assert one("SELECT a + 1 AS x FROM t ORDER BY x").columns == {"select": {"public.t.a"}}


def test_columns_cannot_poison_cache() -> None:
    s = one("SELECT a FROM poison_t")
    with pytest.raises(TypeError):
        s.columns["select"] = frozenset({"x"})  # type: ignore[index]
    assert one("SELECT a FROM poison_t").columns == {"select": {"public.poison_t.a"}}


# WHERE on UPDATE / DELETE -----------------------------------------------------------------

@pytest.mark.parametrize(
    "where",
    [
        "", "WHERE true", "WHERE 1=1", "WHERE 'a'='a'", "WHERE 2>1", "WHERE NOT false", "WHERE id = id",
        "WHERE t.id = id", "WHERE x IS NOT NULL OR x IS NULL", "WHERE true OR id = 1", "WHERE 1=1 AND true",
        "WHERE coalesce(true, id = 1)", "WHERE 't'", "WHERE 'yes'::boolean", "WHERE 1::bool", "WHERE 1+1 = 2",
        "WHERE id IS NOT DISTINCT FROM id", "WHERE 1 IN (1, 2)", "WHERE 5 BETWEEN 1 AND 10",
        "WHERE name LIKE '%'", "WHERE (id > 5) OR NOT (id > 5)", "WHERE EXISTS (SELECT 1)",
        "WHERE true IS TRUE", "WHERE NULL IS NULL", "WHERE (1 = 1) = true", "WHERE 'a' || 'b' = 'ab'",
        "WHERE a IS TRUE OR a IS NOT TRUE",
    ],
)
def test_trivially_true_where_is_flagged(where: str) -> None:
    assert facts.DELETE_WITHOUT_WHERE in one(f"DELETE FROM t {where}").flags
    assert facts.UPDATE_WITHOUT_WHERE in one(f"UPDATE t SET a = 1 {where}").flags


@pytest.mark.parametrize(
    "where",
    [
        "WHERE id = 1", "WHERE true AND id = 1", "WHERE 1=0 OR id = 2", "WHERE false", "WHERE NULL",
        "WHERE id = other", "WHERE CURRENT OF cur", "WHERE 'a' < 'b'", "WHERE random() < 0.5 AND id > 3",
        "WHERE x IS NULL", "WHERE name NOT LIKE '%'", "WHERE active", "WHERE id IN (SELECT id FROM u)",
        "WHERE EXISTS (SELECT 1 FROM u)",
    ],
)
def test_real_where_is_not_flagged(where: str) -> None:
    assert facts.DELETE_WITHOUT_WHERE not in one(f"DELETE FROM t {where}").flags
    assert facts.UPDATE_WITHOUT_WHERE not in one(f"UPDATE t SET a = 1 {where}").flags


def test_delete_using_without_where() -> None:
    assert facts.DELETE_WITHOUT_WHERE in one("DELETE FROM t USING u").flags


def test_merge_that_hits_every_row() -> None:
    assert facts.DELETE_WITHOUT_WHERE in one("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE").flags
    assert facts.DELETE_WITHOUT_WHERE in one(
        "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE").flags
    assert facts.UPDATE_WITHOUT_WHERE in one("MERGE INTO t USING s ON 1=1 WHEN MATCHED THEN UPDATE SET a = 1").flags
    assert not one("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE").flags


# flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "flag"),
    [
        ("DROP TABLE t", facts.DROP_TABLE),
        ("DROP VIEW v", facts.DROP_TABLE),
        ("DROP MATERIALIZED VIEW mv", facts.DROP_TABLE),
        ("DROP SEQUENCE s", facts.DROP_TABLE),
        ("DROP INDEX i", facts.DROP_TABLE),
        ("DROP FOREIGN TABLE f", facts.DROP_TABLE),
        ("DROP SCHEMA s", facts.DROP_SCHEMA),
        ("DROP DATABASE d", facts.DROP_DATABASE),
        ("DROP EXTENSION e", facts.DROP_OTHER),
        ("DROP TYPE ty", facts.DROP_OTHER),
        ("DROP FUNCTION f", facts.DROP_OTHER),
        ("TRUNCATE t", facts.TRUNCATE),
        ("ALTER TABLE t ADD COLUMN x int, DROP COLUMN y", facts.DROP_COLUMN),
        ("ALTER TABLE t DROP y", facts.DROP_COLUMN),
        ("DROP OWNED BY bob", facts.DROP_OWNED),
        ("REASSIGN OWNED BY bob TO alice", facts.DROP_OWNED),
        ("GRANT ALL ON ALL TABLES IN SCHEMA public TO bob", facts.PRIVILEGES),
        ("REVOKE admins FROM bob", facts.PRIVILEGES),
        ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", facts.PRIVILEGES),
        ("CREATE ROLE r SUPERUSER", facts.ROLE_CHANGE),
        ("ALTER USER bob WITH SUPERUSER", facts.ROLE_CHANGE),
        ("ALTER ROLE bob SET search_path = x", facts.ROLE_CHANGE),
        ("ALTER ROLE bob RENAME TO rob", facts.ROLE_CHANGE),
        ("DROP GROUP g", facts.ROLE_CHANGE),
        ("COPY t TO PROGRAM 'curl x'", facts.COPY_PROGRAM),
        ("COPY t FROM PROGRAM 'cat /etc/passwd'", facts.COPY_PROGRAM),
        ("COPY t FROM '/etc/passwd'", facts.COPY_FILE),
        ("COPY t TO '/tmp/out'", facts.COPY_FILE),
        ("SET ROLE postgres", facts.SET_ROLE),
        ("SET LOCAL ROLE postgres", facts.SET_ROLE),
        ("SET SESSION AUTHORIZATION postgres", facts.SET_ROLE),
        ("SELECT set_config('role', 'postgres', false)", facts.SET_ROLE),
        ("SELECT pg_catalog.set_config('SESSION_AUTHORIZATION', 'x', true)", facts.SET_ROLE),
        ("SELECT set_config(name, 'postgres', false) FROM params", facts.SET_ROLE),
        ("ALTER SYSTEM SET ssl = off", facts.ALTER_SYSTEM),
        ("DO $$BEGIN END$$", facts.UNKNOWN_EFFECT),
        ("CALL p()", facts.UNKNOWN_EFFECT),
        ("EXECUTE p", facts.UNKNOWN_EFFECT),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", facts.DATA_MODIFYING_CTE),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", facts.DELETE_WITHOUT_WHERE),
        ("WITH u AS (UPDATE t SET a = 1 RETURNING 1) INSERT INTO x SELECT * FROM u", facts.UPDATE_WITHOUT_WHERE),
        ("EXPLAIN ANALYZE DELETE FROM t", facts.EXPLAIN_ANALYZE),
        ("EXPLAIN ANALYZE DELETE FROM t", facts.DELETE_WITHOUT_WHERE),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", facts.EXPLAIN_ANALYZE),
        ("EXPLAIN (ANALYZE on) DELETE FROM t WHERE id = 1", facts.EXPLAIN_ANALYZE),
        ("CREATE SCHEMA s GRANT SELECT ON TABLE t TO bob", facts.PRIVILEGES),
    ],
)
def test_flags(sql: str, flag: str) -> None:
    assert flag in one(sql).flags


@pytest.mark.parametrize(
    "sql",
    ["RESET ROLE", "SET ROLE NONE", "RESET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL",
     "SELECT current_setting('role')", "SELECT set_config('statement_timeout', '5s', false) IS NULL"],
)
def test_role_resets_are_not_set_role(sql: str) -> None:
    assert facts.SET_ROLE not in one(sql).flags


def test_plain_explain_does_not_run_the_statement() -> None:
    s = one("EXPLAIN DELETE FROM t")
    assert s.kind == Kind.READ and not s.flags and not s.tables_written
    assert s.tables_read == {"public.t"}
    assert one("EXPLAIN (ANALYZE false) DELETE FROM t").kind == Kind.READ


def test_explain_analyze_keeps_inner_kind() -> None:
    s = one("EXPLAIN ANALYZE DELETE FROM t")
    assert (s.kind, s.command) == (Kind.WRITE, "EXPLAIN")


def test_copy_stdio_is_not_a_file() -> None:
    assert not one("COPY t FROM STDIN WITH (FORMAT csv)").flags
    assert not one("COPY t TO STDOUT").flags


def test_drop_column_only_when_dropping() -> None:
    assert facts.DROP_COLUMN not in one("ALTER TABLE t ADD COLUMN x int").flags


# functions -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_read_binary_file('/etc/passwd')",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT * FROM dblink('host=evil', 'select 1') AS r(a int)",
        "SELECT dblink_exec('host=x', 'drop table t')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT pg_terminate_backend(123)",
        "SELECT pg_reload_conf()",
        "SELECT my_func(1)",
        "SELECT app.compute(x) FROM t",
        "SELECT query_to_xml('select * from secrets', true, true, '')",
        "SELECT pg_notify('ch', 'x')",
        "SELECT * FROM t WHERE id = (SELECT evil())",
        "WITH x AS (SELECT f() AS v) SELECT * FROM x",
        "SELECT nextval(some_column) FROM t",
        "SELECT PG_READ_FILE('/etc/passwd')",
    ],
)
def test_functions_of_unknown_effect(sql: str) -> None:
    s = one(sql)
    assert facts.UNKNOWN_EFFECT in s.flags
    assert s.kind == Kind.PROCEDURAL


def test_unknown_function_in_write_keeps_write_kind() -> None:
    s = one("INSERT INTO t VALUES (my_func())")
    assert s.kind == Kind.WRITE and facts.UNKNOWN_EFFECT in s.flags
    assert s.functions == {"my_func"}


def test_functions_are_collected_everywhere() -> None:
    s = one(
        "WITH q AS (SELECT lower(name) n FROM t) SELECT upper(n), (SELECT count(*) FROM u WHERE u.x = abs(1)) "
        "FROM q WHERE length(n) > coalesce(nullif(1, 2), 3) ORDER BY pg_catalog.md5(n)"
    )
    assert s.functions == {"lower", "upper", "count", "abs", "length", "pg_catalog.md5"}
    assert s.kind == Kind.READ and not s.flags


def test_call_records_procedure() -> None:
    assert one("CALL app.do_things(now())").functions == {"app.do_things", "now"}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*), sum(a), avg(a), string_agg(b, ','), json_agg(t), bool_and(c) FROM t",
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b), lag(a) OVER w FROM t WINDOW w AS (ORDER BY a)",
        "SELECT lower(a), upper(a), substr(a, 1, 2), trim(a), regexp_replace(a, 'x', 'y'), to_char(now(), 'YYYY')",
        "SELECT date_trunc('day', now()), extract(year FROM now()), age(now()), make_date(2020, 1, 1)",
        "SELECT jsonb_build_object('a', 1) -> 'a', jsonb_agg(x), array_agg(y), unnest(ARRAY[1])",
        "SELECT * FROM generate_series(1, 10)",
        "SELECT pg_typeof(1), version(), current_setting('search_path'), pg_backend_pid(), pg_sleep(0)",
        "SELECT has_table_privilege('t', 'SELECT'), pg_get_viewdef('v'::regclass), format_type(23, -1)",
        "SELECT 'customers'::regclass, to_regclass('x'), currval('s'), pg_advisory_lock(1)",
        "SELECT information_schema._pg_expandarray(ARRAY[1])",
    ],
)
def test_safe_builtins_stay_read(sql: str) -> None:
    s = one(sql)
    assert s.kind == Kind.READ, s.flags
    assert not s.flags


def test_is_known_safe() -> None:
    assert is_known_safe("lower") and is_known_safe("pg_catalog.lower")
    assert not is_known_safe("public.lower")
    assert not is_known_safe("set_config") and not is_known_safe("dblink")
    assert is_known_safe("pg_get_indexdef") and is_known_safe("has_schema_privilege")
    assert is_known_safe("app.safe_fn", extra=frozenset({"app.safe_fn"}))
    assert not is_known_safe("lower", shadowable=True) and is_known_safe("pg_catalog.lower", shadowable=True)


def test_extra_safe_functions() -> None:
    s = analyze("SELECT app.score(x) FROM t", extra_safe_functions=frozenset({"app.score"}))[0]
    assert s.kind == Kind.READ and not s.flags


def test_builtins_shadowed_by_search_path() -> None:
    s = one("SELECT lower(x) FROM t", ("evil", "pg_catalog"))
    assert facts.UNKNOWN_EFFECT in s.flags
    assert one("SELECT pg_catalog.lower(x) FROM t", ("evil", "pg_catalog")).kind == Kind.READ


def test_nextval_is_a_write_of_the_sequence() -> None:
    s = one("SELECT nextval('orders_id_seq')")
    assert s.kind == Kind.WRITE and s.tables_written == {"public.orders_id_seq"} and not s.flags
    assert one("SELECT setval('app.s', 5)").tables_written == {"app.s"}


# code that is stored, prepared or executed ------------------------------------------------

def test_create_function_body_is_not_run() -> None:
    # the body is stored, not run: none of its tables or flags; but it installs code that
    # later runs out of rowgate's sight, so the statement itself is unknown_effect
    s = one("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN DROP TABLE t; DELETE FROM u; END$$")
    assert s.kind == Kind.DDL and s.flags == {facts.UNKNOWN_EFFECT} and not s.tables
    assert s.language == "plpgsql"
    s = one("CREATE FUNCTION g() RETURNS void BEGIN ATOMIC DELETE FROM t; END")
    assert s.flags == {facts.UNKNOWN_EFFECT} and not s.tables and s.language == "sql"


def test_do_block_language() -> None:
    assert one("DO LANGUAGE plpython3u $$import os$$").language == "plpython3u"
    assert one("DO $$BEGIN END$$").language == "plpgsql"


def test_prepare_carries_body_facts() -> None:
    s = one("PREPARE p (int) AS DELETE FROM t")
    assert (s.kind, s.command, s.prepare_name) == (Kind.WRITE, "PREPARE", "p")
    assert facts.DELETE_WITHOUT_WHERE in s.flags and s.tables_written == {"public.t"}


def test_execute_and_deallocate_names() -> None:
    assert one("EXECUTE my_plan(1, 'x')").execute_name == "my_plan"
    assert one("DEALLOCATE my_plan").deallocate_name == "my_plan"
    assert one("DEALLOCATE ALL").deallocate_name == "*"
    assert one("DISCARD ALL").deallocate_name == "*"
    s = one("CREATE TABLE x AS EXECUTE p")
    assert s.execute_name == "p" and facts.UNKNOWN_EFFECT in s.flags


# settings --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "setting"),
    [
        ("SET search_path = app, public", ("search_path", "app, public")),
        ('SET search_path TO "My Schema", public', ("search_path", '"My Schema", public')),
        ("SET search_path = 'app, public'", ("search_path", '"app, public"')),
        ("SET search_path = \"$user\", public", ("search_path", '"$user", public')),
        ("SET statement_timeout = 5000", ("statement_timeout", "5000")),
        ("SET TIME ZONE 'UTC'", ("timezone", "UTC")),
        ("SET application_name TO 'psql x'", ("application_name", "psql x")),
        ("SET LOCAL work_mem = '64MB'", ("work_mem", "64MB")),
        ("SET ROLE analyst", ("role", "analyst")),
        ("SET SESSION AUTHORIZATION bob", ("session_authorization", "bob")),
        ("RESET statement_timeout", ("statement_timeout", None)),
        ("SET search_path TO DEFAULT", ("search_path", None)),
        ("RESET ALL", ("all", None)),
    ],
)
def test_settings(sql: str, setting: tuple[str, str | None]) -> None:
    s = one(sql)
    assert s.kind == Kind.SESSION
    assert s.setting == setting


def test_search_path_helpers() -> None:
    assert parse_search_path('"$user", public') == ("$user", "public")
    assert parse_search_path('App, "My, Schema"') == ("app", "My, Schema")
    assert quote_ident("public") == "public" and quote_ident("My") == '"My"' and quote_ident("user") == '"user"'


# evasion forms ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE customers",
        "drop table customers",
        "DrOp   TaBlE\n\tcustomers",
        "/* comment */ DROP /* inner /* nested */ still comment */ TABLE customers",
        "-- line comment\nDROP TABLE -- another\n customers",
        "DROP TABLE IF EXISTS public.customers CASCADE",
        'DROP TABLE "customers"',
        "SELECT 1; DROP TABLE customers",
    ],
)
def test_drop_is_seen_through_formatting(sql: str) -> None:
    statements = analyze(sql)
    drop = statements[-1]
    assert facts.DROP_TABLE in drop.flags
    assert drop.tables_written == {"public.customers"}


def test_quoted_identifier_keeps_case() -> None:
    assert one('DROP TABLE "Customers"').tables_written == {"public.Customers"}
    assert one("DROP TABLE Customers").tables_written == {"public.customers"}


def test_dollar_quoted_sql_is_data() -> None:
    s = one("SELECT $$DROP TABLE x$$, $tag$DELETE FROM y$tag$")
    assert s.kind == Kind.READ and not s.flags and not s.tables
    assert one("SELECT 'DROP TABLE x; DELETE FROM y'").kind == Kind.READ


def test_multi_statement_string() -> None:
    sql = "SELECT * FROM a;\n  UPDATE b SET x = 1 ;DELETE FROM c WHERE id = 1; "
    statements = analyze(sql)
    assert [s.command for s in statements] == ["SELECT", "UPDATE", "DELETE"]
    assert [s.text for s in statements] == ["SELECT * FROM a", "UPDATE b SET x = 1", "DELETE FROM c WHERE id = 1"]
    assert facts.UPDATE_WITHOUT_WHERE in statements[1].flags


def test_statement_text_slices_with_unicode() -> None:
    statements = analyze("SELECT 'é' AS café; SELECT 2")
    assert [s.text for s in statements] == ["SELECT 'é' AS café", "SELECT 2"]


def test_empty_and_comment_only() -> None:
    assert analyze("") == []
    assert analyze("  /* nothing */ -- at all\n ") == []
    assert analyze(";;") == []


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT * FROM", "DROP TABLE customers; garbage", "SELECT 'unterminated"])
def test_unparseable(sql: str) -> None:
    statements = analyze(sql)
    assert len(statements) == 1
    s = statements[0]
    assert s.kind == Kind.UNPARSEABLE and s.command == "UNPARSEABLE" and s.flags == {facts.UNPARSEABLE}
    assert s.error and s.text == sql


def test_deeply_nested_is_refused_not_crashing() -> None:
    sql = "SELECT " + "(" * 5000 + "1" + ")" * 5000
    s = analyze(sql)
    assert len(s) == 1
    assert s[0].kind in (Kind.UNPARSEABLE, Kind.READ)


def test_unknown_statement_type_is_procedural() -> None:
    from pglast import ast

    from rowgate.sql.classify import classify

    outcome = classify(ast.ReturnStmt(), ("public",), frozenset())
    assert outcome.kind == Kind.PROCEDURAL and facts.UNKNOWN_EFFECT in outcome.flags


# fingerprint and cache -------------------------------------------------------------------

def test_fingerprint_ignores_literals() -> None:
    a = one("SELECT * FROM t WHERE id = 1 AND name = 'x'").fingerprint
    b = one("select * from t where id = 42 and name = 'yy'").fingerprint
    c = one("SELECT * FROM t WHERE other = 1").fingerprint
    assert a and a == b and a != c


def test_repeated_text_hits_the_cache() -> None:
    analyzer.cache_clear()
    # a write: served by the exact-text cache (plain reads are served by their shape first)
    analyze("DELETE FROM cached_t WHERE id = 1")
    analyze("DELETE FROM cached_t WHERE id = 1")
    info = analyzer.cache_info()
    assert info.hits == 1 and info.misses == 1
    analyze("DELETE FROM cached_t WHERE id = 1", ("app",))
    assert analyzer.cache_info().misses == 2


# psql's describe queries must stay plain reads --------------------------------------------

_PSQL_QUERIES = Path(__file__).parent / "fixtures" / "psql_describe_queries.json"


def _psql_queries() -> list[tuple[str, str]]:
    data: dict[str, list[str]] = json.loads(_PSQL_QUERIES.read_text())
    return [(command, q) for command, queries in data.items() for q in queries]


@pytest.mark.parametrize(("command", "sql"), _psql_queries())
def test_psql_describe_queries_are_reads(command: str, sql: str) -> None:
    for s in analyze(sql, ("$user", "public")):
        assert s.kind == Kind.READ, (command, s.flags, s.functions)
        assert not s.flags and not s.tables_written


# shapes generated SQL produces ------------------------------------------------------------

def test_long_union_chain_is_walked_without_deep_recursion() -> None:
    sql = " UNION ALL ".join(f"SELECT x FROM t{i}" for i in range(3000)) + " ORDER BY 1"
    s = one(sql)
    assert s.kind == Kind.READ and len(s.tables_read) == 3000


def test_long_operator_chain() -> None:
    s = one("SELECT " + " || ".join(["a"] * 5000) + " FROM t")
    assert s.kind == Kind.READ and s.columns == {"select": {"public.t.a"}}


def test_copy_of_data_modifying_query_is_a_write() -> None:
    s = one("COPY (DELETE FROM t RETURNING *) TO STDOUT")
    assert s.kind == Kind.WRITE and s.tables_written == {"public.t"} and facts.DELETE_WITHOUT_WHERE in s.flags


def test_explain_of_execute_is_procedural() -> None:
    s = one("EXPLAIN EXECUTE p(1)")
    assert s.kind == Kind.PROCEDURAL and s.execute_name == "p"


def test_dml_target_is_never_a_cte() -> None:
    assert one("WITH t AS (SELECT 1) DELETE FROM t WHERE id = 1").tables_written == {"public.t"}


def test_create_schema_elements_resolve_in_the_new_schema() -> None:
    s = one("CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT * FROM t")
    assert s.tables_written == {"s.t", "s.v"}


# code that runs out of sight ------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()",
        "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
        "CREATE OPERATOR === (leftarg = int, rightarg = int, function = f)",
        "CREATE AGGREGATE a(int) (sfunc = f, stype = int)",
        "CREATE CAST (int AS text) WITH FUNCTION f(int)",
        "CREATE RULE r AS ON INSERT TO x DO ALSO SELECT f()",
        "ALTER FUNCTION f() SECURITY DEFINER",
        "CREATE EXTENSION dblink",
        "SELECT 1 OPERATOR(app.===) 1",
        "SELECT 1 === 1",
        "SELECT * FROM t WHERE a <~> b",
    ],
)
def test_installing_or_calling_unseen_code_is_unknown_effect(sql: str) -> None:
    assert facts.UNKNOWN_EFFECT in one(sql).flags


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a || b, x ~~ y, c BETWEEN 1 AND 2 FROM t WHERE a IN (1, 2) AND b LIKE 'x' AND c ILIKE 'y'",
        "SELECT * FROM t WHERE d IS DISTINCT FROM e AND f SIMILAR TO 'g' AND j->>'k' = '1' AND NOT (x @> y)",
        "SELECT 1 OPERATOR(pg_catalog.+) 1",
        "SELECT * FROM t WHERE a = ANY(ARRAY[1]) AND b <> ALL(ARRAY[2]) AND c !~* 'z'",
    ],
)
def test_builtin_operators_are_plain_reads(sql: str) -> None:
    s = one(sql)
    assert s.kind == Kind.READ and not s.flags


def test_saved_database_settings_are_like_alter_system() -> None:
    s = one("ALTER DATABASE app SET search_path = evil, pg_catalog")
    assert facts.ALTER_SYSTEM in s.flags
    assert facts.ROLE_CHANGE in one("ALTER ROLE bob SET search_path = evil").flags
