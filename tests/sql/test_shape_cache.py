"""The shape cache (statements that differ only in literals share an analysis) must never
give a statement facts that its own full analysis would not give."""

from __future__ import annotations

import pytest

from rowgate.sql.analyzer import analyze, cache_clear

# (first, second): the same shape once constants are parameters
PAIRS = [
    ("SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id = 2"),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 5;", "SELECT abalance FROM pgbench_accounts WHERE aid = 77;"),
    ("SELECT * FROM t WHERE name = 'a'", "SELECT * FROM t WHERE name = 'it''s'"),
    ("DELETE FROM t WHERE id = 1", "DELETE FROM t WHERE id = 2"),
    ("DELETE FROM t WHERE 1 = 2", "DELETE FROM t WHERE 1 = 1"),
    ("UPDATE t SET a = 1 WHERE 'a' = 'b'", "UPDATE t SET a = 1 WHERE 'a' = 'a'"),
    ("SELECT * FROM t WHERE 1 = 2", "SELECT * FROM t WHERE 1 = 1"),
    ("SELECT nextval('seq_a')", "SELECT nextval('seq_b')"),
    ("SELECT currval('a')", "SELECT currval('b')"),
    ("SELECT set_config('search_path', 'x', false)", "SELECT set_config('role', 'postgres', false)"),
    ("SELECT 'public.a'::regclass", "SELECT 'public.payments'::regclass"),
    ("SELECT * FROM t WHERE oid = 'a'::regclass", "SELECT * FROM t WHERE oid = 'b'::regclass"),
    ("SELECT pg_read_file('/tmp/a')", "SELECT pg_read_file('/etc/passwd')"),
    ("SELECT * FROM dblink('a', 'select 1') AS x(a int)", "SELECT * FROM dblink('b', 'drop table t') AS x(a int)"),
    ("SELECT query_to_xml('select 1', true, true, '')", "SELECT query_to_xml('select * from s', true, true, '')"),
    ("COPY t TO '/tmp/a'", "COPY t TO '/tmp/b'"),
    ("SET search_path = a", "SET search_path = b"),
    ("SET ROLE a", "SET ROLE b"),
    ("SELECT 1; SELECT 2", "SELECT 3; SELECT 4"),
    ("SELECT 1; DROP TABLE t", "SELECT 2; DROP TABLE t"),
    ("SELECT $$x$$", "SELECT $$DROP TABLE t$$"),
    ("SELECT * FROM t LIMIT 1", "SELECT * FROM t LIMIT 100"),
    ("SELECT * FROM t WHERE a = 1 -- c", "SELECT * FROM t WHERE a = 2 -- c"),
    ("SELECT * FROM t WHERE a IN (1, 2)", "SELECT * FROM t WHERE a IN (3, 4)"),
    ("SELECT 1 FROM t WHERE true", "SELECT 1 FROM t WHERE false"),
    ("EXPLAIN SELECT * FROM t WHERE a = 1", "EXPLAIN SELECT * FROM t WHERE a = 2"),
    ("SELECT * FROM t FOR UPDATE", "SELECT * FROM t FOR UPDATE"),
    ("SELECT x FROM t TABLESAMPLE SYSTEM (1)", "SELECT x FROM t TABLESAMPLE SYSTEM (50)"),
    ("SELECT has_table_privilege('a', 'select')", "SELECT has_table_privilege('payments', 'select')"),
    ("SELECT to_regclass('a')", "SELECT to_regclass('payments')"),
    ("SELECT * FROM t WHERE a = 1::text", "SELECT * FROM t WHERE a = 2::text"),
    # a literal whose text (normalize's $n) reads like an identifier (found by review: N'x' -> N$1)
    ("SELECT N'x' FROM customers AS N$1", "SELECT N$1 FROM customers AS N$1"),
    ("SELECT int'1' FROM (SELECT ssn AS int$1 FROM customers) s",
     "SELECT int$1 FROM (SELECT ssn AS int$1 FROM customers) s"),
    ("SELECT id FROM (SELECT id, ssn AS n$2 FROM c) s WHERE '5' < N'x'",
     "SELECT id FROM (SELECT id, ssn AS n$2 FROM c) s WHERE '5' < N$2"),
    ("SELECT * FROM t WHERE oid = 'a'::\"regclass\"", "SELECT * FROM t WHERE oid = 'b'::\"regclass\""),
    ("SELECT * FROM t WHERE oid = 'a'::pg_catalog.regclass", "SELECT * FROM t WHERE oid = 'b'::pg_catalog.regclass"),
]


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[p[1][:40] for p in PAIRS])
def test_second_of_a_shape_gets_its_own_full_analysis(first: str, second: str) -> None:
    cache_clear()
    analyze(first)
    got = analyze(second)
    cache_clear()
    want = analyze(second)
    assert got == want


def test_a_plain_read_is_served_from_its_shape() -> None:
    cache_clear()
    analyze("SELECT v FROM t WHERE id = 1")
    from rowgate.sql import analyzer

    assert len(analyzer._shapes) == 1
    second = analyze("SELECT v FROM t WHERE id = 987")
    assert second[0].text == "SELECT v FROM t WHERE id = 987"
    assert second[0].tables_read == frozenset({"public.t"})
