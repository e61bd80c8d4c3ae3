"""Bypass attempts against masking, as a masked identity, through psql, psycopg (text and
binary) and asyncpg (binary, prepared). Each is checked on the raw bytes the client
received (rows, errors, notices, COPY data, through a TCP tap): no seeded raw value, nor
its reverse, base64 or MD5, nor a piece of it (6 characters of an email's local part, 8
digits of an id, card, IBAN or phone) may appear. The analyst sees pseudonyms, the agent
redactions: neither keeps a piece of the value, so the piece check applies to both."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from proxyutil import UpstreamDB, tool
from wire_env import LeakChecker, MaskEnv, mask_env

# (id, statements, expectation): "rows" must return rows (masked), "refused" must be
# refused by the inference defence, "any" may be either (or fail in PostgreSQL)
CORPUS: list[tuple[str, list[str], str]] = [
    ("plain", ["SELECT email, national_id, phone, full_name FROM customers"], "rows"),
    ("upper", ["SELECT upper(email) FROM customers"], "rows"),
    ("reverse", ["SELECT reverse(national_id) FROM customers"], "rows"),
    ("base64", ["SELECT encode(convert_to(card_number, 'UTF8'), 'base64') FROM payments"], "rows"),
    ("md5", ["SELECT md5(email) FROM customers"], "rows"),
    ("substr_pieces", ["SELECT substr(national_id, 1, 3), substr(national_id, 5, 2), substr(national_id, 8) "
                       "FROM customers"], "rows"),
    ("string_agg", ["SELECT string_agg(email, ',') FROM customers"], "rows"),
    ("array_agg", ["SELECT array_agg(full_name) FROM customers"], "rows"),
    ("json_agg", ["SELECT json_agg(phone) FROM customers"], "rows"),
    ("row_to_json", ["SELECT row_to_json(c) FROM customers c"], "rows"),
    ("row_text", ["SELECT c::text FROM customers c"], "rows"),
    ("whole_row", ["SELECT c FROM customers c"], "rows"),
    ("to_jsonb_row", ["SELECT to_jsonb(c) FROM customers c"], "rows"),
    ("admin_view", ["SELECT * FROM customer_contacts"], "rows"),
    ("cte", ["WITH x AS (SELECT email AS e FROM customers) SELECT e FROM x"], "rows"),
    ("union_literal", ["SELECT email FROM customers UNION SELECT 'literal@example.org'"], "rows"),
    ("join", ["SELECT o.id, c.full_name, o.shipping_address FROM orders o JOIN customers c ON c.id = o.customer_id"],
     "rows"),
    ("misleading_names", ["SELECT contact, ref FROM leads"], "rows"),
    ("free_text", ["SELECT label FROM leads"], "rows"),
    ("format", ["SELECT format('%s/%s', email, national_id) FROM customers"], "rows"),
    ("regexp_replace", ["SELECT regexp_replace(email, '@', ' at ') FROM customers"], "rows"),
    ("translate", ["SELECT translate(national_id, '0123456789', 'abcdefghij') FROM customers"], "rows"),
    ("overlay", ["SELECT overlay(card_number placing 'x' from 1 for 1) FROM payments"], "rows"),
    ("lpad_rpad", ["SELECT lpad(c.phone, 30, '#'), rpad(p.iban, 40, '#') FROM customers c "
                   "JOIN payments p ON p.id = c.id"], "rows"),
    ("split_part", ["SELECT split_part(email, '@', 1) FROM customers"], "rows"),
    ("left_right", ["SELECT left(c.national_id, 6), right(p.card_number, 8) FROM customers c, payments p "
                    "WHERE p.id = c.id"], "rows"),
    ("concat_ws", ["SELECT concat_ws('|', full_name, email, phone) FROM customers"], "rows"),
    ("jsonb_build_object", ["SELECT jsonb_build_object('e', email, 's', national_id) FROM customers"], "rows"),
    ("jsonb_object_agg", ["SELECT jsonb_object_agg(email, national_id) FROM customers"], "rows"),
    ("xmlelement", ["SELECT xmlelement(name x, email) FROM customers"], "any"),  # needs a server built with libxml
    ("array_to_string", ["SELECT array_to_string(array_agg(national_id), ';') FROM customers"], "rows"),
    ("array_ctor", ["SELECT ARRAY[email, phone] FROM customers"], "rows"),
    ("scalar_subquery", ["SELECT (SELECT email FROM customers ORDER BY id LIMIT 1) AS e"], "rows"),
    ("case", ["SELECT CASE WHEN id > 0 THEN email END FROM customers"], "rows"),
    ("coalesce", ["SELECT coalesce(phone, email) FROM customers"], "rows"),
    ("min_max", ["SELECT max(national_id), min(email) FROM customers"], "rows"),
    ("concat_op", ["SELECT email || '' FROM customers"], "rows"),
    ("derived", ["SELECT t.e FROM (SELECT email AS e FROM customers) t"], "rows"),
    ("field_of_row", ["SELECT (s.c).email FROM (SELECT c FROM customers c) s"], "rows"),
    ("quote_literal", ["SELECT quote_literal(email) FROM customers"], "rows"),
    ("unnest", ["SELECT unnest(ARRAY[email, national_id]) FROM customers"], "rows"),
    ("lateral", ["SELECT x.email FROM (VALUES (1)) v, LATERAL (SELECT email FROM customers LIMIT 3) x"], "rows"),
    ("card_holder_iban", ["SELECT card_holder, iban FROM payments"], "rows"),
    ("returning", ["UPDATE customers SET country = country WHERE id = 1 RETURNING email, national_id"], "rows"),
    ("copy_query", ["COPY (SELECT email, national_id FROM customers) TO STDOUT"], "rows"),
    ("copy_table", ["COPY customers TO STDOUT"], "rows"),
    ("copy_csv", ["COPY customers (full_name, email, phone) TO STDOUT WITH (FORMAT csv)"], "rows"),
    ("copy_binary", ["COPY customers TO STDOUT WITH (FORMAT binary)"], "refused"),
    ("cursor", ["BEGIN", "DECLARE cur CURSOR FOR SELECT email, national_id FROM customers",
                "FETCH 50 FROM cur", "COMMIT"], "any"),
    ("binary_cursor", ["BEGIN", "DECLARE bcur BINARY CURSOR FOR SELECT email, full_name FROM customers",
                       "FETCH 50 FROM bcur", "COMMIT"], "any"),
    ("sql_prepare", ["PREPARE pe AS SELECT email, national_id FROM customers", "EXECUTE pe", "DEALLOCATE pe"], "any"),
    ("cast_error", ["SELECT email::int FROM customers"], "any"),
    ("date_cast_error", ["SELECT national_id::date FROM customers"], "any"),
    ("numeric_cast_error", ["SELECT full_name::numeric FROM customers"], "any"),
    ("like_filter", ["SELECT 1/0 FROM customers WHERE email LIKE 'a%'"], "refused"),
    ("where_equals", ["SELECT id FROM customers WHERE national_id = '123-45-6789'"], "refused"),
    ("subquery_filter", ["SELECT email FROM customers WHERE id IN (SELECT id FROM customers WHERE email LIKE 'a%')"],
     "refused"),
    ("order_by", ["SELECT email FROM customers ORDER BY national_id"], "refused"),
    ("group_by_expr", ["SELECT left(email, 1), count(*) FROM customers GROUP BY left(email, 1)"], "refused"),
    ("join_like", ["SELECT count(*) FROM customers c JOIN leads l ON l.contact LIKE c.email"], "refused"),
    ("ctas", ["CREATE TABLE stolen AS SELECT email FROM customers"], "refused"),
    ("select_into", ["SELECT email INTO stolen2 FROM customers"], "refused"),
    ("insert_select", ["INSERT INTO products (name, price_cents) SELECT email, 1 FROM customers LIMIT 1"],
     "refused"),
    ("create_view", ["CREATE VIEW my_contacts AS SELECT email FROM customers"], "refused"),
    ("copy_file", ["COPY (SELECT email FROM customers) TO '/tmp/rowgate-stolen.txt'"], "refused"),
    ("do_notice", ["DO $$ BEGIN RAISE NOTICE '%', (SELECT full_name || ' ' || national_id FROM customers "
                   "LIMIT 1); END $$"], "refused"),
    ("pg_notify", ["LISTEN c", "SELECT pg_notify('c', email) FROM customers LIMIT 1"], "refused"),
    ("query_to_xml", ["SELECT query_to_xml('select email from customers', true, true, '')"], "refused"),
    ("table_to_xml", ["SELECT table_to_xml('customers', true, true, '')"], "refused"),
    ("set_config", ["SELECT set_config('x.y', email, false) FROM customers LIMIT 1"], "refused"),
    # review R2: a composite expanded with (x).* has as many columns as its type, not one
    ("composite_star", ["SELECT (c).* FROM (SELECT c FROM customers c) s"], "rows"),
    ("populate_record_star", ["SELECT (jsonb_populate_record(null::customers, to_jsonb(c))).* FROM customers c"],
     "rows"),
    ("row_star", ["SELECT (x).* FROM (SELECT ROW(id, full_name, street_address) AS x FROM customers) s"], "rows"),
    ("star_renamed", ["SELECT f FROM (SELECT (c).* FROM (SELECT c FROM customers c) s) t(a, f)"], "rows"),
    ("star_cursor", ["BEGIN", "DECLARE scur CURSOR FOR SELECT (c).* FROM (SELECT c FROM customers c) s",
                     "FETCH 20 FROM scur", "COMMIT"], "any"),
    ("star_prepare", ["PREPARE ps AS SELECT (c).* FROM (SELECT c FROM customers c) s", "EXECUTE ps",
                      "DEALLOCATE ps"], "any"),
    ("star_copy", ["COPY (SELECT (c).* FROM (SELECT c FROM customers c) s) TO STDOUT"], "rows"),
    ("star_set_config", ["SELECT set_config('application_name', (SELECT f FROM (SELECT (c).* FROM "
                         "(SELECT c FROM customers c) s) t(a, f) LIMIT 1), false)"], "refused"),
    # the planner's statistics hold real values (most common values, histogram bounds)
    ("pg_stats", ["ANALYZE customers", "SELECT attname, most_common_vals::text, histogram_bounds::text "
                  "FROM pg_stats WHERE tablename = 'customers'"], "refused"),
    ("pg_statistic", ["ANALYZE payments", "SELECT stavalues1::text, stavalues2::text FROM pg_statistic"], "refused"),
]


STRATEGY = {"alice": "pseudonym", "agent": "redact"}


def _psql(env: MaskEnv, identity: str, stmts: list[str]) -> None:
    args = [tool("psql"), "-X", "-d", env.dsn(identity)]
    for s in stmts:
        args += ["-c", s]
    if len(stmts) > 1:  # and once more as one message of several statements
        args += ["-c", ";\n".join(stmts)]
    subprocess.run(args, capture_output=True, timeout=60, check=False)


def _psycopg(env: MaskEnv, identity: str, stmts: list[str], binary: bool) -> list[str]:
    """The SQLSTATE (or "ok") of each statement."""
    states = []
    with psycopg.connect(env.dsn(identity), autocommit=True) as conn:
        for s in stmts:
            try:
                with conn.cursor(binary=binary) as cur:
                    if s.upper().startswith("COPY") and "TO STDOUT" in s.upper():
                        with cur.copy(s) as copy:
                            for _ in copy:
                                pass
                    else:
                        cur.execute(s)
                        if cur.description is not None:
                            cur.fetchall()
                states.append("ok")
            except psycopg.Error as e:
                states.append(e.sqlstate or "?")
                if "masking:inference" in str(e):
                    states[-1] = "inference"
    return states


async def _asyncpg(env: MaskEnv, identity: str, stmts: list[str]) -> None:
    conn = await asyncpg.connect(env.dsn(identity))
    try:
        for s in stmts:
            try:
                if s.upper().startswith("COPY") and "TO STDOUT" in s.upper():
                    continue  # asyncpg reads COPY through copy_from_*; covered by psql and psycopg
                if s.upper() in ("BEGIN", "COMMIT") or s.upper().startswith(("DECLARE", "DO", "LISTEN", "DEALLOC")):
                    await conn.execute(s)
                else:
                    await conn.fetch(s)
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def env(upstream: UpstreamDB, tmp_path_factory: pytest.TempPathFactory) -> MaskEnv:
    return mask_env(upstream, tmp_path_factory.mktemp("masking"))


@pytest.fixture(scope="module")
def checker(env: MaskEnv) -> LeakChecker:
    return LeakChecker(env.secrets)


def test_corpus_size() -> None:
    assert len(CORPUS) >= 50


# known gaps of the content detectors, outside the wire stage (none at the moment)
_DETECTOR_GAPS: dict[str, str] = {}
_PARAMS = [pytest.param(*c, id=c[0], marks=[pytest.mark.xfail(reason=_DETECTOR_GAPS[c[0]], strict=False)]
                        if c[0] in _DETECTOR_GAPS else []) for c in CORPUS]


@pytest.mark.parametrize("identity", ["alice", "agent"])
@pytest.mark.parametrize(("name", "stmts", "expect"), _PARAMS)
def test_no_leak(env: MaskEnv, checker: LeakChecker, identity: str, name: str, stmts: list[str], expect: str) -> None:
    env.tap.take()
    states = _psycopg(env, identity, stmts, binary=False)
    got: dict[str, Any] = {"psycopg text": env.tap.take()}
    _psycopg(env, identity, stmts, binary=True)
    got["psycopg binary"] = env.tap.take()
    asyncio.run(_asyncpg(env, identity, stmts))
    got["asyncpg"] = env.tap.take()
    _psql(env, identity, stmts)
    got["psql"] = env.tap.take()
    for client, data in got.items():
        assert checker.leaks(data, STRATEGY[identity], stmts) == [], f"{name} through {client} leaked"
    if expect == "rows":
        assert states == ["ok"] * len(stmts), states
    elif expect == "refused":
        assert "inference" in states, states


def test_checker_finds_raw_values(env: MaskEnv, checker: LeakChecker, tmp_path: Path) -> None:
    """The check itself works: the DPO sees raw values, and they are found."""
    env.tap.take()
    _psycopg(env, "dana", ["SELECT email, national_id FROM customers LIMIT 3"], binary=False)
    assert checker.leaks(env.tap.take())
    _psycopg(env, "dana", ["SELECT reverse(email) FROM customers LIMIT 3"], binary=True)
    assert checker.leaks(env.tap.take())
