"""Real clients through the real proxy against the real PostgreSQL.

Each test does what a user of that client would do and checks what the user would
check; where it makes sense the same thing is done over a direct connection to the
upstream and the two must be identical. No mocks: psql and pgbench run as
subprocesses, the drivers (psycopg 3, asyncpg, pg8000, SQLAlchemy) connect over TCP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import re
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pg8000.native
import psycopg
import pytest
import sqlalchemy as sa
from proxyutil import TOKENS, RunningProxy, UpstreamDB, tool
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

# --- helpers ---------------------------------------------------------------------


@pytest.fixture
def new_table(request: pytest.FixtureRequest, upstream: UpstreamDB) -> Iterator[Callable[..., str]]:
    """A factory of table names unique to the test; every table is dropped afterwards."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:36]
    made: list[str] = []

    def make(suffix: str = "") -> str:
        name = f"rgc_{base}{suffix}_{secrets.token_hex(3)}"
        made.append(name)
        return name

    yield make
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        for name in reversed(made):
            conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")


def _client_env(password: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", PGCLIENTENCODING="UTF8", PSQLRC=os.devnull, PGCONNECT_TIMEOUT="10")
    if password:
        env["PGPASSWORD"] = password
    return env


class Target:
    """Where a subprocess client connects: through the proxy (token in PGPASSWORD) or direct."""

    def __init__(self, url: str, password: str | None) -> None:
        self.url = url
        self.password = password

    @property
    def env(self) -> dict[str, str]:
        return _client_env(self.password)

    def psql(self, *args: str, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url, *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def via_proxy(proxy: RunningProxy) -> Target:
    # the URL carries no password: psql takes the rowgate token from PGPASSWORD
    return Target(f"postgresql://alice@127.0.0.1:{proxy.port}/app?sslmode=disable", TOKENS["alice"])


@pytest.fixture
def via_direct(upstream: UpstreamDB) -> Target:
    return Target(upstream.dsn(), upstream.password)


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.stderr == ""
    return res.stdout


def _active_backends(direct: psycopg.Connection, marker: str) -> list[tuple[int, str]]:
    """(pid, state) of other upstream backends whose current query contains ``marker``."""
    rows = direct.execute(
        "SELECT pid, state FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
        [f"%{marker}%"],
    ).fetchall()
    return [(int(pid), str(state)) for pid, state in rows]


def _wait_active(direct: psycopg.Connection, marker: str, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = [pid for pid, state in _active_backends(direct, marker) if state == "active"]
        if active:
            return active[0]
        time.sleep(0.05)
    raise AssertionError(f"no active upstream query containing {marker!r}")


# --- psql ----------------------------------------------------------------------------


def test_psql_simple_queries_identical_to_direct(proxy: RunningProxy, via_proxy: Target, via_direct: Target) -> None:
    assert _ok(via_proxy.psql("-At", "-c", "SELECT 40 + 2")) == "42\n"
    # the token in the URL instead of PGPASSWORD
    assert _ok(Target(proxy.dsn("bob"), None).psql("-At", "-c", "SELECT 'bob here'")) == "bob here\n"
    query = "SELECT g, md5(g::text), g % 3 = 0 AS fizz, NULL::text AS nothing FROM generate_series(1, 500) g"
    for fmt in (("-At",), ("-A", "-F", ","), ()):
        through = _ok(via_proxy.psql(*fmt, "-c", query))
        assert through == _ok(via_direct.psql(*fmt, "-c", query))
    assert through.count("\n") > 500
    assert "(500 rows)" in through


def test_psql_multi_statement_command_string(via_proxy: Target, via_direct: Target) -> None:
    sql = (
        "CREATE TEMP TABLE m (a int, b text); "
        "INSERT INTO m SELECT g, 'row ' || g FROM generate_series(1, 10) g; "
        "UPDATE m SET b = upper(b) WHERE a > 5; "
        "SELECT sum(a), count(*) FILTER (WHERE b LIKE 'ROW%') FROM m; "
        "SELECT b FROM m ORDER BY a DESC LIMIT 2"
    )
    through = _ok(via_proxy.psql("-At", "-c", sql))
    assert through == _ok(via_direct.psql("-At", "-c", sql))
    assert "55|5\n" in through
    assert through.endswith("ROW 10\nROW 9\n")


def test_psql_copy_from_stdin(via_proxy: Target, direct: psycopg.Connection, new_table: Callable[..., str]) -> None:
    t = new_table()
    direct.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, label text, note text)")
    # script on stdin: the COPY data follows the \copy command in the same stream
    script = (
        f"\\copy {t} FROM STDIN\n"
        "1\talpha\t\\N\n"
        "2\ttab\\there\tback\\\\slash\n"
        "3\tünïcode ☃\t\n"
        "\\.\n"
        f"SELECT count(*) FROM {t};\n"
    )
    assert _ok(via_proxy.psql("-At", input=script)) == "3\n"
    rows = direct.execute(f"SELECT id, label, note FROM {t} ORDER BY id").fetchall()
    assert rows == [(1, "alpha", None), (2, "tab\there", "back\\slash"), (3, "ünïcode ☃", "")]

    # with -c, FROM STDIN reads psql's standard input
    assert _ok(via_proxy.psql("-c", f"\\copy {t} FROM STDIN", input="4\tfour\tvia -c\n5\tfive\t\\N\n")) == ""
    assert direct.execute(f"SELECT label, note FROM {t} WHERE id >= 4 ORDER BY id").fetchall() == [
        ("four", "via -c"),
        ("five", None),
    ]

    # a bigger CSV load from psql's own stdin (pstdin)
    data = "".join(f'{i},"label, {i}","say ""{i}"""\n' for i in range(6, 50_006))
    _ok(via_proxy.psql("-c", f"\\copy {t} FROM pstdin WITH (FORMAT csv)", input=data))
    assert direct.execute(f"SELECT count(*), sum(id) FROM {t}").fetchone() == (50_005, sum(range(1, 50_006)))
    assert direct.execute(f"SELECT label, note FROM {t} WHERE id = 777").fetchone() == ("label, 777", 'say "777"')


def test_psql_copy_to_stdout(via_proxy: Target, via_direct: Target) -> None:
    cmd = (
        "\\copy (SELECT g, md5(g::text), CASE WHEN g % 7 = 0 THEN NULL ELSE 'x' || g END "
        "FROM generate_series(1, 20000) g ORDER BY g) TO STDOUT"
    )
    through = _ok(via_proxy.psql("-c", cmd))
    assert through == _ok(via_direct.psql("-c", cmd))
    lines = through.splitlines()
    assert len(lines) == 20000
    assert lines[0] == "1\tc4ca4238a0b923820dcc509a6f75849b\tx1"
    assert lines[6] == "7\t8f14e45fceea167a5a36dedd4bea2543\t\\N"
    csv = _ok(via_proxy.psql("-c", "\\copy (SELECT 'a,b' AS x, 1 AS y) TO STDOUT WITH (FORMAT csv, HEADER)"))
    assert csv == 'x,y\n"a,b",1\n'


def test_psql_describe(
    via_proxy: Target, via_direct: Target, direct: psycopg.Connection, new_table: Callable[..., str]
) -> None:
    parent, child = new_table("_p"), new_table("_c")
    direct.execute(f"CREATE TABLE {parent} (id serial PRIMARY KEY, code text UNIQUE NOT NULL)")
    direct.execute(
        f"CREATE TABLE {child} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        f"parent_id int NOT NULL REFERENCES {parent}(id) ON DELETE CASCADE, "
        "amount numeric(12,2) DEFAULT 0 CHECK (amount >= 0), tags text[], created timestamptz DEFAULT now())"
    )
    direct.execute(f"CREATE INDEX {child}_created ON {child} (created DESC)")
    direct.execute(f"COMMENT ON TABLE {child} IS 'child rows'")
    for cmd in (f"\\d {child}", f"\\d+ {child}", f"\\d {parent}", f"\\dt {child}", f"\\di {child}*"):
        through = via_proxy.psql("-c", cmd)
        assert (through.returncode, through.stdout, through.stderr) == (
            (d := via_direct.psql("-c", cmd)).returncode,
            d.stdout,
            d.stderr,
        ), cmd
        assert through.returncode == 0, through.stderr
    described = _ok(via_proxy.psql("-c", f"\\d {child}"))
    for word in ("parent_id", "amount", "numeric(12,2)", "text[]", "Foreign-key constraints", f"{child}_created"):
        assert word in described


def test_psql_repeated_queries_in_one_session(via_proxy: Target, tmp: Path) -> None:
    script = tmp / "repeat.sql"
    # \g with an empty query buffer runs the previous query again
    script.write_text(
        "SELECT pg_backend_pid() AS pid, count(*) AS n FROM generate_series(1, 100)\n\\g\n" + "\\g\n" * 199
    )
    lines = _ok(via_proxy.psql("-At", "-f", str(script))).splitlines()
    assert len(lines) == 200
    assert len(set(lines)) == 1  # the same upstream session answered every time
    assert lines[0].endswith("|100")


def test_psql_errors_like_direct(via_proxy: Target, via_direct: Target, tmp: Path) -> None:
    res = via_proxy.psql("-c", "SELECT 1/0")
    assert res.returncode == 1
    assert res.stderr == "ERROR:  division by zero\n"
    d = via_direct.psql("-c", "SELECT 1/0")
    assert (res.returncode, res.stdout, res.stderr) == (d.returncode, d.stdout, d.stderr)

    # a script stops at the first error with ON_ERROR_STOP: exit code 3, later lines not run
    script = tmp / "err.sql"
    script.write_text("SELECT 'before';\nSELECT 1/0;\nSELECT 'after';\n")
    res = via_proxy.psql("-At", "-f", str(script))
    assert res.returncode == 3
    assert res.stdout == "before\n"
    assert res.stderr == f"psql:{script}:2: ERROR:  division by zero\n"
    d = via_direct.psql("-At", "-f", str(script))
    assert (res.returncode, res.stdout, res.stderr) == (d.returncode, d.stdout, d.stderr)

    # an error with a position: psql draws the caret from the relayed position field
    res = via_proxy.psql("-c", "SELECT * FROM no_such_table_rgc")
    assert res.returncode == 1
    assert 'relation "no_such_table_rgc" does not exist' in res.stderr
    assert "LINE 1: SELECT * FROM no_such_table_rgc" in res.stderr
    d = via_direct.psql("-c", "SELECT * FROM no_such_table_rgc")
    assert res.stderr == d.stderr


def test_psql_cancel_with_sigint(via_proxy: Target, direct: psycopg.Connection) -> None:
    marker = f"rgc_cancel_{secrets.token_hex(4)}"
    proc = subprocess.Popen(
        [tool("psql"), "-X", "-d", via_proxy.url, "-c", f"SELECT pg_sleep(30) /* {marker} */"],
        env=via_proxy.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_active(direct, marker)
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)  # psql answers SIGINT with a CancelRequest
        _out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert elapsed < 5
    assert "canceling statement due to user request" in err
    assert proc.returncode == 1
    assert not [s for _, s in _active_backends(direct, marker) if s == "active"]


# --- psycopg 3 -------------------------------------------------------------------------

TYPES_QUERY = """
SELECT 1::int2 AS i2, 2::int4 AS i4, 9223372036854775807::int8 AS i8, 1.5::float4 AS f4,
       2.25::float8 AS f8, 'Infinity'::float8 AS inf, 12345678901234567890.123456789::numeric AS num,
       'héllo ☃'::text AS t, 'chars'::varchar(10) AS vc, 'c'::"char" AS ch,
       '\\xdeadbeef00ff'::bytea AS b, true AS bo, '2024-02-29'::date AS d,
       '2024-02-29 12:34:56.789+01'::timestamptz AS tz, '2024-02-29 12:34:56.789'::timestamp AS ts,
       '12:00:01.5'::time AS tm, '1 day 02:03:04.5'::interval AS iv,
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, '{"a": [1, 2, null], "b": "ü"}'::jsonb AS jb,
       '{"x": 1}'::json AS js, ARRAY[1, 2, NULL]::int[] AS ia, ARRAY['x', NULL, 'z"q']::text[] AS ta,
       ARRAY[[1.5, 2.5], [3.5, 4.5]]::numeric[] AS na, '192.168.0.1/24'::inet AS ip, '10.0.0.0/8'::cidr AS net,
       int4range(1, 10) AS rng, NULL::text AS n, NULL::int AS ni
"""


def test_psycopg_text_and_binary_results_identical(proxy: RunningProxy, direct: psycopg.Connection) -> None:
    big = "SELECT g, md5(g::text), g * 1.5 AS half, now() - now() AS zero FROM generate_series(1, 30000) g"
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur, direct.cursor(binary=binary) as dcur:
                row = cur.execute(TYPES_QUERY).fetchone()
                assert row == dcur.execute(TYPES_QUERY).fetchone()
                assert [c.name for c in cur.description or []] == [c.name for c in dcur.description or []]
                assert [c.type_code for c in cur.description or []] == [c.type_code for c in dcur.description or []]
                assert cur.pgresult is not None and dcur.pgresult is not None
                raw = [cur.pgresult.get_value(0, i) for i in range(cur.pgresult.nfields)]
                assert raw == [dcur.pgresult.get_value(0, i) for i in range(dcur.pgresult.nfields)]
                assert cur.execute(big).fetchall() == dcur.execute(big).fetchall()
        text_row = conn.execute(TYPES_QUERY).fetchone()
        binary_row = conn.cursor(binary=True).execute(TYPES_QUERY).fetchone()
    assert text_row == binary_row
    assert text_row is not None
    assert text_row[2] == 2**63 - 1
    assert text_row[6] == Decimal("12345678901234567890.123456789")
    assert text_row[10] == b"\xde\xad\xbe\xef\x00\xff"
    assert text_row[18] == {"a": [1, 2, None], "b": "ü"}
    assert text_row[21] == ["x", None, 'z"q']


ROUND_TRIP_VALUES: list[Any] = [
    42,
    -(2**63),
    2**63 - 1,
    "text with 'quotes', \"double\", \\ backslash, tab\t, newline\n and ☃",
    "",
    b"\x00\x01\xff bytes \x00",
    Decimal("12345678901234567890.123456789"),
    Decimal("-0.000001"),
    Decimal("Infinity"),
    3.141592653589793,
    True,
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(1999, 12, 31, 0, 0, tzinfo=dt.UTC),
    dt.date(2000, 1, 1),
    dt.time(13, 14, 15, 161718),
    dt.timedelta(days=3, seconds=7, microseconds=11),
    uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    Jsonb({"nested": {"list": [1, "two", None, 3.5]}, "ü": True}),
    [1, 2, None, 4],
    ["a", None, "c,d", 'e"f'],
    [[1, 2], [3, 4]],
    None,
]


def _unwrap(value: Any) -> Any:
    return value.obj if isinstance(value, Jsonb) else value


@pytest.mark.parametrize("placeholder", ["%s", "%t", "%b"])
def test_psycopg_parameters_round_trip(proxy: RunningProxy, direct: psycopg.Connection, placeholder: str) -> None:
    # a list of str is sent untyped, like a str: its cast makes it an array
    sql = "SELECT " + ", ".join(placeholder + ("::text[]" if i == 19 else "") for i in range(len(ROUND_TRIP_VALUES)))
    assert ROUND_TRIP_VALUES[19] == ["a", None, "c,d", 'e"f']
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        for binary in (False, True):
            row = conn.execute(sql, ROUND_TRIP_VALUES, binary=binary).fetchone()
            assert row == direct.execute(sql, ROUND_TRIP_VALUES, binary=binary).fetchone()
            assert row is not None
            assert list(row) == [_unwrap(v) for v in ROUND_TRIP_VALUES]
        # the same through a table: insert with parameters, read back
        conn.execute(
            "CREATE TEMP TABLE rt (i int8, t text, b bytea, n numeric, ts timestamptz, j jsonb, a int[], x text)"
        )
        values = [2**40, "☃'\"", b"\x00\xfe", Decimal("1e-20"), ROUND_TRIP_VALUES[11], Jsonb([1, {"k": "v"}]),
                  [None, 7], None]  # fmt: skip
        conn.execute(f"INSERT INTO rt VALUES ({', '.join([placeholder] * 8)})", values)
        assert conn.execute("SELECT * FROM rt").fetchone() == tuple(_unwrap(v) for v in values)


def _pipeline_scenario(conn: psycopg.Connection, table: str) -> list[Any]:
    """Run pipelines, one with a failing statement; return everything a user would observe."""
    seen: list[Any] = []
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int)")
    with conn.pipeline() as p:
        c1 = conn.execute(f"INSERT INTO {table} VALUES (1) RETURNING id")
        c2 = conn.execute("SELECT 42")
        c3 = conn.cursor()
        c3.executemany(f"INSERT INTO {table} VALUES (%s)", [(10,), (11,)])
        p.sync()
        seen.append((c1.fetchone(), c2.fetchone(), c3.rowcount))
        c4 = conn.execute("SELECT %s::text || %s", ["a", "b"])
    seen.append(c4.fetchone())
    # an error: the statements after it up to the next sync are skipped, and the
    # implicit transaction with the statements before it is rolled back
    try:
        with conn.pipeline():
            conn.execute(f"INSERT INTO {table} VALUES (2)")
            conn.execute("SELECT 1/0")
            conn.execute(f"INSERT INTO {table} VALUES (3)")
    except psycopg.Error as e:
        seen.append(("raised", type(e).__name__, e.sqlstate))
    seen.append(conn.info.transaction_status.name)
    # the connection goes on, in and out of pipeline mode
    with conn.pipeline():
        conn.execute(f"INSERT INTO {table} VALUES (4)")
        c5 = conn.execute(f"SELECT array_agg(id ORDER BY id) FROM {table}")
    seen.append(c5.fetchone())
    seen.append(conn.execute("SELECT 'after pipeline'").fetchone())
    # an explicit transaction in a pipeline, rolled back by the error
    try:
        with conn.pipeline(), conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (5)")
            conn.execute("SELECT 1/0")
    except psycopg.Error as e:
        seen.append(("raised", type(e).__name__, e.sqlstate))
    seen.append(conn.execute(f"SELECT array_agg(id ORDER BY id) FROM {table}").fetchone())
    seen.append(conn.info.transaction_status.name)
    return seen


def test_psycopg_pipeline_mode(proxy: RunningProxy, upstream: UpstreamDB, new_table: Callable[..., str]) -> None:
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        through = _pipeline_scenario(conn, new_table("_p"))
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        expected = _pipeline_scenario(conn, new_table("_d"))
    assert through == expected
    err = ("raised", "DivisionByZero", "22012")
    assert through == [
        ((1,), (42,), 2),
        ("ab",),
        err,
        "IDLE",
        ([1, 4, 10, 11],),  # 2 was rolled back with the error, 3 was never run
        ("after pipeline",),
        err,
        ([1, 4, 10, 11],),
        "IDLE",
    ]


def test_psycopg_copy_from_stdin(
    proxy: RunningProxy, direct: psycopg.Connection, new_table: Callable[..., str]
) -> None:
    t = new_table()
    direct.execute(f"CREATE TABLE {t} (id int, label text, data bytea, doc jsonb, at timestamptz)")
    at = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    rows = [(i, f"label\t{i} ☃" if i % 5 else None, bytes([i % 256]) * 3, Jsonb({"i": i}), at) for i in range(20_000)]
    with psycopg.connect(proxy.dsn("alice")) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY {t} FROM STDIN") as copy:
            for r in rows[:10_000]:
                copy.write_row(r)
        with conn.cursor() as cur, cur.copy(f"COPY {t} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "bytea", "jsonb", "timestamptz"])
            for r in rows[10_000:]:
                copy.write_row(r)
        assert direct.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,)  # not committed yet
        conn.commit()
    got = direct.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
    assert got == [(i, label, data, doc.obj, ts) for i, label, data, doc, ts in rows]

    # a COPY with bad data fails like it does directly, and the session stays usable
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        cur = conn.cursor()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation), cur.copy(f"COPY {t} (id) FROM STDIN") as copy:
            copy.write(b"1\nnot a number\n")
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)
        # the server rejects an early row while the client is still sending megabytes
        with pytest.raises(psycopg.errors.InvalidTextRepresentation), cur.copy(f"COPY {t} (id) FROM STDIN") as copy:
            copy.write(b"oops\n")
            for _ in range(40):
                copy.write(b"1\n" * 100_000)
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)
    assert direct.execute(f"SELECT count(*) FROM {t}").fetchone() == (20_000,)


def test_psycopg_copy_to_stdout(proxy: RunningProxy, direct: psycopg.Connection) -> None:
    query = (
        "SELECT g, md5(g::text), CASE WHEN g % 9 = 0 THEN NULL ELSE g * 0.5 END, "
        "'2024-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 25000) g"
    )

    def dump(conn: psycopg.Connection, fmt: str) -> bytes:
        with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT {fmt}") as copy:
            return b"".join(bytes(chunk) for chunk in copy)

    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        for fmt in ("", "(FORMAT CSV, HEADER)", "(FORMAT BINARY)"):
            data = dump(conn, fmt)
            assert data == dump(direct, fmt), fmt
            assert len(data) > 25000
        text = dump(conn, "").decode().splitlines()
        assert len(text) == 25000
        assert text[8].split("\t")[2] == "\\N"
        with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "numeric", "timestamptz"])
            rows = list(copy.rows())
    assert len(rows) == 25000
    assert rows[0][:3] == (1, "c4ca4238a0b923820dcc509a6f75849b", Decimal("0.5"))
    assert rows[8][2] is None


def test_psycopg_server_side_cursor(proxy: RunningProxy, direct: psycopg.Connection) -> None:
    query = "SELECT g, md5(g::text) FROM generate_series(1, 20000) g ORDER BY g"
    expected = direct.execute(query).fetchall()
    with psycopg.connect(proxy.dsn("alice")) as conn:
        with conn.cursor(name="rgc_batches") as cur:
            cur.execute(query)
            batches = []
            while batch := cur.fetchmany(1500):
                batches.append(batch)
        assert [len(b) for b in batches] == [1500] * 13 + [500]
        assert [r for b in batches for r in b] == expected
        with conn.cursor(name="rgc_iter", binary=True) as cur:
            cur.itersize = 700
            cur.execute(query)
            assert list(cur) == expected
        with conn.cursor(name="rgc_scroll", scrollable=True) as cur:
            cur.execute(query)
            cur.scroll(10_000, mode="absolute")
            assert cur.fetchone() == expected[10_000]
            cur.scroll(-5)
            assert cur.fetchone() == expected[9_996]
        conn.commit()
    with (
        psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn,
        conn.cursor(name="rgc_hold", withhold=True) as cur,
    ):
        cur.execute(query)
        assert cur.fetchmany(3) == expected[:3]
        assert conn.execute("SELECT 'interleaved'").fetchone() == ("interleaved",)
        assert cur.fetchall() == expected[3:]


def test_psycopg_listen_notify(proxy: RunningProxy, direct: psycopg.Connection) -> None:
    channel = f"rgc_chan_{secrets.token_hex(3)}"
    with (
        psycopg.connect(proxy.dsn("alice"), autocommit=True) as listener,
        psycopg.connect(proxy.dsn("bob"), autocommit=True) as notifier,
    ):
        listener.execute(f"LISTEN {channel}")
        notifier_pid = notifier.execute("SELECT pg_backend_pid()").fetchone()
        notifier.execute("SELECT pg_notify(%s, %s)", [channel, "hello ☃"])
        got = list(listener.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [(channel, "hello ☃")]
        assert notifier_pid == (got[0].pid,)
        # a notification from outside the proxy, and several at once
        direct.execute(f"NOTIFY {channel}, 'from direct'")
        with notifier.transaction():
            for i in range(3):
                notifier.execute(f"NOTIFY {channel}, 'batch {i}'")
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < deadline:
            got.extend(listener.notifies(timeout=1, stop_after=4 - len(got)))
        assert [n.payload for n in got] == ["from direct", "batch 0", "batch 1", "batch 2"]
        # nothing more arrives
        assert list(listener.notifies(timeout=0.3)) == []
        listener.execute(f"UNLISTEN {channel}")


def test_psycopg_notices(proxy: RunningProxy) -> None:
    notices: list[tuple[str | None, ...]] = []

    def on_notice(d: psycopg.errors.Diagnostic) -> None:  # a Diagnostic is only valid in the handler
        notices.append((d.severity, d.message_primary, d.message_detail, d.message_hint, d.sqlstate))

    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        conn.add_notice_handler(on_notice)
        conn.execute(
            "DO $$ BEGIN RAISE NOTICE 'hello %', 42; "
            "RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint'; END $$"
        )
        assert notices == [
            ("NOTICE", "hello 42", None, None, "00000"),
            ("WARNING", "careful", "some detail", "a hint", "01000"),
        ]
        # a notice in the middle of a result and in a pipeline
        notices.clear()
        conn.execute(
            "CREATE FUNCTION pg_temp.noisy(i int) RETURNS int LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE NOTICE 'row %', i; RETURN i; END $$"
        )
        assert conn.execute("SELECT pg_temp.noisy(g) FROM generate_series(1, 3) g").fetchall() == [(1,), (2,), (3,)]
        with conn.pipeline():
            conn.execute("SELECT pg_temp.noisy(99)")
        assert [n[1] for n in notices] == ["row 1", "row 2", "row 3", "row 99"]


def test_psycopg_parameter_status(proxy: RunningProxy) -> None:
    with psycopg.connect(proxy.dsn("alice", application_name="rgc-start")) as conn:
        conn.autocommit = True
        assert conn.info.parameter_status("application_name") == "rgc-start"
        assert conn.info.parameter_status("server_version")
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        conn.execute("SET application_name = 'rgc-changed'")
        assert conn.info.parameter_status("application_name") == "rgc-changed"
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"
        assert conn.execute("SELECT '2024-01-01 00:00+00'::timestamptz").fetchone() == (
            dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=9))),
        )
        conn.execute("SET DateStyle = 'SQL, DMY'")
        assert conn.info.parameter_status("DateStyle") == "SQL, DMY"
        # a rolled-back SET reports the old value again
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            conn.execute("SET LOCAL application_name = 'rgc-local'")
            assert conn.info.parameter_status("application_name") == "rgc-local"
            conn.execute("SELECT 1/0")
        assert conn.info.parameter_status("application_name") == "rgc-changed"


def test_psycopg_transactions_visible_directly(
    proxy: RunningProxy, direct: psycopg.Connection, new_table: Callable[..., str]
) -> None:
    t = new_table()
    direct.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")

    def ids() -> list[int]:
        return [r[0] for r in direct.execute(f"SELECT id FROM {t} ORDER BY id").fetchall()]

    with psycopg.connect(proxy.dsn("alice")) as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert ids() == []
        conn.commit()
        assert ids() == [1]
        conn.execute(f"INSERT INTO {t} VALUES (2)")
        conn.rollback()
        assert ids() == [1]
        # savepoints: the inner block is rolled back, the outer committed
        with conn.transaction():
            conn.execute(f"INSERT INTO {t} VALUES (3)")
            with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
                conn.execute(f"INSERT INTO {t} VALUES (4)")
                conn.execute(f"INSERT INTO {t} VALUES (1)")
            conn.execute(f"INSERT INTO {t} VALUES (5)")
        conn.commit()
        assert ids() == [1, 3, 5]
        # an error aborts the transaction until rollback
        conn.execute(f"INSERT INTO {t} VALUES (6)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert ids() == [1, 3, 5]
        conn.execute(f"INSERT INTO {t} VALUES (7)")
    assert ids() == [1, 3, 5, 7]  # leaving the with block without an error commits
    # a connection closed mid-transaction leaves nothing behind
    with psycopg.connect(proxy.dsn("alice")) as conn:
        conn.execute(f"INSERT INTO {t} VALUES (8)")
        conn.close()
    assert 8 not in ids()


def test_psycopg_long_running_query(proxy: RunningProxy) -> None:
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        started = time.monotonic()
        assert conn.execute("SELECT 'done' FROM pg_sleep(2)").fetchone() == ("done",)
        assert 2 <= time.monotonic() - started < 10
        assert conn.execute("SELECT 1").fetchone() == (1,)


HUNDRED_MB = 100 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_psycopg_100mb_text_value(proxy: RunningProxy) -> None:
    started = time.monotonic()
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        (value,) = conn.execute("SELECT repeat('x', %s)", [HUNDRED_MB]).fetchone() or (None,)
        assert isinstance(value, str)
        assert len(value) == HUNDRED_MB
        assert value.count("x") == HUNDRED_MB
        del value
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)
    assert time.monotonic() - started < 30


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_psycopg_100mb_bytea_round_trip(proxy: RunningProxy) -> None:
    data = random.Random(7).randbytes(HUNDRED_MB)
    started = time.monotonic()
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:
        row = conn.execute("SELECT %b::bytea, length(%b::bytea)", [data, data], binary=True).fetchone()
        assert row is not None
        assert row[1] == HUNDRED_MB
        assert row[0] == data
        del row
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)
    assert time.monotonic() - started < 30


# --- asyncpg --------------------------------------------------------------------------


def test_asyncpg_prepared_statements(proxy: RunningProxy) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(proxy.dsn("alice"))
        try:
            stmt = await conn.prepare("SELECT $1::int * 2 AS twice, $2::text || '!' AS shout, $3::numeric + 1")
            assert [a.name for a in stmt.get_attributes()] == ["twice", "shout", "?column?"]
            for i in range(300):
                row = await stmt.fetchrow(i, f"n{i}", Decimal(i) / 8)
                assert tuple(row) == (2 * i, f"n{i}!", Decimal(i) / 8 + 1)
            many = await conn.prepare("SELECT g, md5(g::text) FROM generate_series(1, $1::int) g")
            for n in (0, 1, 5000):
                rows = await many.fetch(n)
                assert len(rows) == n
            # cursor over a prepared statement, in batches
            async with conn.transaction():
                cur = await many.cursor(10_000)
                total = 0
                while batch := await cur.fetch(3000):
                    total += len(batch)
            assert total == 10_000
            # executemany with the extended protocol
            await conn.execute("CREATE TEMP TABLE em (a int, b text)")
            await conn.executemany("INSERT INTO em VALUES ($1, $2)", [(i, str(i)) for i in range(1000)])
            assert await conn.fetchval("SELECT sum(a) FROM em") == sum(range(1000))
            # errors in a prepared statement leave the connection usable
            div = await conn.prepare("SELECT 10 / $1::int")
            assert await div.fetchval(5) == 2
            with pytest.raises(asyncpg.DivisionByZeroError):
                await div.fetchval(0)
            assert await div.fetchval(2) == 5
        finally:
            await conn.close()

    asyncio.run(main())


def test_asyncpg_binary_types_identical_to_direct(proxy: RunningProxy, upstream: UpstreamDB) -> None:
    params = (
        2**62,
        "☃ text",
        b"\x00\xff\x10",
        Decimal("-123.4500"),
        dt.datetime(2024, 2, 29, 1, 2, 3, 4, tzinfo=dt.UTC),
        [1, None, 3],
        None,
        uuid.UUID(int=12345),
        dt.timedelta(days=-1, seconds=5),
        '{"k": [1, 2]}',
    )
    sql = (
        "SELECT $1::int8, $2::text, $3::bytea, $4::numeric, $5::timestamptz, $6::int[], $7::text, "
        "$8::uuid, $9::interval, $10::jsonb"
    )

    async def fetch(dsn: str) -> tuple[list[Any], list[Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            typed = await conn.fetchrow(TYPES_QUERY)
            echoed = await conn.fetchrow(sql, *params)
            return list(typed.items()), list(echoed.values())
        finally:
            await conn.close()

    async def main() -> None:
        through = await fetch(proxy.dsn("alice"))
        assert through == await fetch(upstream.dsn())
        assert through[1] == list(params)
        typed = dict(through[0])
        assert typed["i8"] == 2**63 - 1
        assert typed["b"] == b"\xde\xad\xbe\xef\x00\xff"
        assert typed["ia"] == [1, 2, None]

    asyncio.run(main())


def test_asyncpg_copy(
    proxy: RunningProxy, upstream: UpstreamDB, direct: psycopg.Connection, new_table: Callable[..., str]
) -> None:
    t = new_table()
    direct.execute(f"CREATE TABLE {t} (id int, label text, data bytea, at timestamptz, amount numeric)")
    at = dt.datetime(2023, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    records = [(i, None if i % 4 == 0 else f"l{i}", bytes([i % 256]), at, Decimal(i) / 4) for i in range(15_000)]
    query = f"SELECT * FROM {t} ORDER BY id"

    async def copy_out(dsn: str, **kw: Any) -> bytes:
        conn = await asyncpg.connect(dsn)
        chunks: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            chunks.append(chunk)

        try:
            await conn.copy_from_query(query, output=sink, **kw)
        finally:
            await conn.close()
        return b"".join(chunks)

    async def main() -> None:
        conn = await asyncpg.connect(proxy.dsn("alice"))
        try:
            status = await conn.copy_records_to_table(t, records=records)
            assert status == "COPY 15000"
        finally:
            await conn.close()
        assert direct.execute(query).fetchall() == records
        for kw in ({}, {"format": "csv", "header": True}, {"format": "binary"}):
            data = await copy_out(proxy.dsn("alice"), **kw)
            assert data == await copy_out(upstream.dsn(), **kw), kw
        csv = (await copy_out(proxy.dsn("alice"), format="csv", header=True)).decode().splitlines()
        assert csv[0] == "id,label,data,at,amount"
        assert len(csv) == 15_001
        assert csv[2].startswith("1,l1,\\x01,")

    asyncio.run(main())


def test_asyncpg_timeout_cancels_upstream_query(proxy: RunningProxy, direct: psycopg.Connection) -> None:
    marker = f"rgc_timeout_{secrets.token_hex(4)}"

    async def main() -> None:
        conn = await asyncpg.connect(proxy.dsn("alice"))
        try:
            upstream_pid = await conn.fetchval("SELECT pg_backend_pid()")
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetch(f"SELECT pg_sleep(10) /* {marker} */", timeout=0.5)
            assert time.monotonic() - started < 3
            assert await conn.fetchval("SELECT 'usable'") == "usable"
            assert await conn.fetchval("SELECT pg_backend_pid()") == upstream_pid
            assert time.monotonic() - started < 3
            state = direct.execute(
                "SELECT state, query FROM pg_stat_activity WHERE pid = %s", [upstream_pid]
            ).fetchone()
            assert state is not None
            assert state[0] == "idle"
            assert marker not in state[1]
            assert not [s for _, s in _active_backends(direct, marker) if s == "active"]
        finally:
            await conn.close()

    asyncio.run(main())


# --- pg8000 ---------------------------------------------------------------------------


def test_pg8000_native_queries(proxy: RunningProxy, upstream: UpstreamDB, new_table: Callable[..., str]) -> None:
    t = new_table()
    via = pg8000.native.Connection(
        user="alice", password=TOKENS["alice"], host="127.0.0.1", port=proxy.port, database="app"
    )
    plain = pg8000.native.Connection(
        user=upstream.user, password=upstream.password, host=upstream.host, port=upstream.port,
        database=upstream.database,
    )  # fmt: skip
    try:
        sql = "SELECT :a::int + 1 AS n, :b::text AS t, :c::bytea AS b, :d::numeric AS d, :e::timestamptz AS e, :f AS f"
        args: dict[str, Any] = {
            "a": 41,
            "b": "pg8000 ☃",
            "c": b"\x01\x00",
            "d": Decimal("9.99"),
            "e": dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "f": None,
        }
        rows = via.run(sql, **args)
        assert rows == plain.run(sql, **args)
        assert rows == [[42, "pg8000 ☃", b"\x01\x00", Decimal("9.99"), args["e"], None]]
        assert [c["name"] for c in via.columns or []] == ["n", "t", "b", "d", "e", "f"]
        via.run(f"CREATE TABLE {t} (id int PRIMARY KEY, name text)")
        for i in range(50):
            via.run(f"INSERT INTO {t} VALUES (:id, :name)", id=i, name=f"name {i}")
        assert via.run(f"SELECT count(*) FROM {t} WHERE id >= :low", low=10) == [[40]]
        assert plain.run(f"SELECT name FROM {t} WHERE id = :id", id=7) == [["name 7"]]
        with pytest.raises(pg8000.native.DatabaseError) as err:
            via.run(f"INSERT INTO {t} VALUES (:id, 'dup')", id=1)
        assert err.value.args[0]["C"] == "23505"
        assert via.run("SELECT :x::int[]", x=[1, 2, 3]) == [[[1, 2, 3]]]
    finally:
        via.close()
        plain.close()


# --- SQLAlchemy -----------------------------------------------------------------------


def test_sqlalchemy_core_and_orm(
    proxy: RunningProxy, direct: psycopg.Connection, new_table: Callable[..., str]
) -> None:
    items_name, notes_name = new_table("_orm"), new_table("_core")

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = items_name
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(sa.String(50))
        attrs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
        price: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))

    notes = sa.Table(
        notes_name,
        Base.metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    engine = sa.create_engine(proxy.dsn("alice").replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        Base.metadata.create_all(engine)
        assert direct.execute("SELECT to_regclass(%s) IS NOT NULL", [items_name]).fetchone() == (True,)

        # Core
        with engine.begin() as conn:
            result = conn.execute(sa.insert(notes).returning(notes.c.id), [{"body": f"note {i}"} for i in range(20)])
            assert len(result.all()) == 20
        with engine.connect() as conn:
            rows = conn.execute(sa.select(notes.c.body).where(notes.c.id > 16).order_by(notes.c.id)).scalars().all()
            assert rows == ["note 16", "note 17", "note 18", "note 19"]
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.execute(sa.delete(notes).where(notes.c.id > 10))
            raise RuntimeError("roll back")
        assert direct.execute(f"SELECT count(*) FROM {notes_name}").fetchone() == (20,)

        # ORM
        with Session(engine) as session:
            session.add_all([Item(label=f"item {i}", attrs={"i": i}, price=Decimal(i) / 4) for i in range(10)])
            session.commit()
            found = session.scalars(sa.select(Item).where(Item.price >= 2).order_by(Item.id)).all()
            assert [i.label for i in found] == ["item 8", "item 9"]
            found[0].attrs = {"changed": True}
            session.commit()
            session.add(Item(label="uncommitted", price=1))
            session.flush()
            assert session.scalar(sa.select(sa.func.count()).select_from(Item)) == 11
            session.rollback()
        assert direct.execute(f"SELECT count(*) FROM {items_name}").fetchone() == (10,)
        assert direct.execute(f"SELECT attrs FROM {items_name} WHERE label = 'item 8'").fetchone() == (
            {"changed": True},
        )
        # the ORM's error handling: an integrity error rolls the session back
        with Session(engine) as session:
            session.add(Item(id=1, label="dup", price=0))
            with pytest.raises(sa.exc.IntegrityError):
                session.commit()
            session.rollback()
            assert session.get(Item, 1) is not None
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


# --- pgbench --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pgbench_tables(upstream: UpstreamDB) -> Iterator[None]:
    # pgbench -i runs DDL, so it goes straight to the upstream; the benchmark then goes through rowgate
    res = subprocess.run(
        [tool("pgbench"), "-i", "-q", "-s", "1", upstream.dsn()],
        capture_output=True,
        text=True,
        env=_client_env(upstream.password),
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    yield
    with psycopg.connect(upstream.dsn(), autocommit=True) as conn:
        for t in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"):
            conn.execute(f"DROP TABLE IF EXISTS {t}")


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_through_proxy(proxy: RunningProxy, pgbench_tables: None, mode: str) -> None:
    url = f"postgresql://alice@127.0.0.1:{proxy.port}/app?sslmode=disable"
    res = subprocess.run(
        [tool("pgbench"), "-n", "-S", "-T", "2", "-c", "4", "-M", mode, url],
        capture_output=True,
        text=True,
        env=_client_env(TOKENS["alice"]),
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    processed = re.search(r"number of transactions actually processed: (\d+)", res.stdout)
    assert processed is not None and int(processed.group(1)) > 100, res.stdout
    failed = re.search(r"number of failed transactions: (\d+)", res.stdout)
    assert failed is not None and failed.group(1) == "0", res.stdout
    assert f"query mode: {mode}" in res.stdout


def test_psql_large_object_import_uses_function_call(proxy, direct, tmp_path):
    """libpq's lo_import speaks the FunctionCall sub-protocol ('F'/'V' messages)."""
    src = tmp_path / "blob.bin"
    payload = bytes(range(256)) * 40
    src.write_bytes(payload)
    env = {**os.environ, "PGPASSWORD": TOKENS["alice"]}
    dsn = f"postgresql://alice@127.0.0.1:{proxy.port}/app?sslmode=disable"
    out = subprocess.run(
        [tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", dsn, "-c", f"\\lo_import {src}"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    oid = int(out.stdout.split()[1])
    try:
        assert direct.execute("SELECT lo_get(%s)", [oid]).fetchone()[0] == payload
    finally:
        direct.execute("SELECT lo_unlink(%s)", [oid])
