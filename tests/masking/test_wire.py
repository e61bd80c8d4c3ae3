"""Masking on the wire, end to end: the masked identity's rows, COPY data, errors and
notices are masked in both formats; the DPO's are not; the inference defence refuses
what would reveal masked values; a failure closes the connection."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import asyncpg
import psycopg
import pytest
from proxyutil import UpstreamDB
from wire_env import SHOP, MaskEnv, mask_env

from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.framing import Framer


@pytest.fixture(scope="module")
def env(upstream: UpstreamDB, tmp_path_factory: pytest.TempPathFactory) -> MaskEnv:
    return mask_env(upstream, tmp_path_factory.mktemp("masking"))


def _raw(env: MaskEnv, sql: str) -> list[tuple[object, ...]]:
    with env.direct() as conn:
        return conn.execute(sql).fetchall()


def test_masked_identity_gets_masked_values(env: MaskEnv) -> None:
    raw = _raw(env, "SELECT id, email, national_id, full_name FROM customers ORDER BY id LIMIT 20")
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        rows = conn.execute("SELECT id, email, national_id, full_name FROM customers WHERE id <= 20").fetchall()
    rows.sort()
    assert [r[0] for r in rows] == [r[0] for r in raw]
    for got, want in zip(rows, raw, strict=True):
        assert got[1] != want[1] and got[1].endswith("@pseudo.invalid")
        assert got[2] != want[2] and got[3] != want[3]


def test_dpo_sees_raw_values(env: MaskEnv) -> None:
    raw = _raw(env, "SELECT id, email, national_id FROM customers WHERE id <= 5 ORDER BY id")
    with psycopg.connect(env.dsn("dana"), autocommit=True) as conn:
        assert conn.execute("SELECT id, email, national_id FROM customers WHERE id <= 5 ORDER BY id").fetchall() == raw


def test_binary_formats(env: MaskEnv) -> None:
    raw = _raw(env, "SELECT email, date_of_birth FROM customers WHERE id = 1")[0]
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        got = conn.cursor(binary=True).execute("SELECT email, date_of_birth, id FROM customers WHERE id = 1").fetchone()
    assert got is not None and got[0] != raw[0] and got[0].endswith("@pseudo.invalid")
    assert got[1] != raw[1] and got[2] == 1

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(env.dsn("alice"))
        try:
            stmt = await conn.prepare("SELECT email, national_id, id FROM customers WHERE id = $1")
            return list(await stmt.fetch(1))
        finally:
            await conn.close()

    rec = asyncio.run(run())[0]
    assert rec["email"] == got[0]  # the same pseudonym in text and binary, psycopg and asyncpg
    assert rec["id"] == 1


def test_copy_to_stdout_is_masked(env: MaskEnv) -> None:
    raw = {r[0] for r in _raw(env, "SELECT email FROM customers")}
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy("COPY (SELECT id, email FROM customers ORDER BY id) TO STDOUT") as copy:
            rows = [r for r in copy.rows()]
        with cur.copy("COPY customers (id, email) TO STDOUT WITH (FORMAT csv)") as copy:
            data = b"".join(bytes(b) for b in copy)
    assert len(rows) == len(raw)
    assert not {r[1] for r in rows} & raw
    assert not any(e.encode() in data for e in raw)


def test_errors_echoing_values_are_masked(env: MaskEnv) -> None:
    email = _raw(env, "SELECT email FROM customers WHERE id = 1")[0][0]
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            conn.execute("SELECT email::int FROM customers WHERE id = 1")
        assert email not in str(e.value)
        with pytest.raises(psycopg.errors.UniqueViolation) as u:
            conn.execute("INSERT INTO customers (full_name, email, country, created_at) "
                         "VALUES ('x', %s, 'US', now())", (email,))
        assert email not in str(u.value) and email not in (u.value.diag.message_detail or "")


def test_inference_defence(env: MaskEnv) -> None:
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        for sql in ("SELECT id FROM customers WHERE email LIKE 'a%'", "SELECT id FROM customers ORDER BY national_id",
                    "CREATE TABLE t_stolen AS SELECT email FROM customers"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
                conn.execute(sql)
            assert "masking:inference" in str(e.value) and "is masked for you" in str(e.value)
        # filtering on columns that are not masked is fine
        assert conn.execute("SELECT count(*) FROM customers WHERE id < 10").fetchone() == (9,)
    with psycopg.connect(env.dsn("dana"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE email LIKE 'a%'").fetchone() is not None


def test_execute_without_describe_is_described_by_rowgate(env: MaskEnv) -> None:
    """A client that executes a prepared statement it never described still gets masked
    rows: rowgate describes the portal itself and drops the answer."""
    raw = _raw(env, "SELECT email FROM customers WHERE id = 2")[0][0]
    from proxyutil import TOKENS

    from rowgate.pgwire.auth import ScramClientExchange

    sock = socket.create_connection(("127.0.0.1", env.proxy.port), timeout=10)
    framer = Framer(peer="proxy")
    sock.sendall(fe.StartupMessage(fe.PROTOCOL_3_0, (("user", "alice"), ("database", SHOP))).encode())
    scram = None
    msgs: list[object] = []

    def read_until_ready() -> list[object]:
        out: list[object] = []
        nonlocal scram
        while True:
            for f in framer.feed(sock.recv(65536)):
                m = be.decode_backend(f.type, f.payload)
                out.append(m)
                if isinstance(m, be.Authentication) and m.code == be.AUTH_SASL:
                    scram = ScramClientExchange(m.mechanisms(), "alice", TOKENS["alice"])
                    sock.sendall(fe.PasswordMessage(scram.initial()).encode())
                elif isinstance(m, be.Authentication) and m.code == be.AUTH_SASL_CONTINUE and scram is not None:
                    sock.sendall(fe.PasswordMessage(scram.respond(m.data)).encode())
                elif isinstance(m, be.ReadyForQuery):
                    return out

    read_until_ready()
    sock.sendall(fe.Parse("", "SELECT email, id FROM customers WHERE id = 2").encode()
                 + fe.Bind("", "", (), (), ()).encode() + fe.Execute("", 0).encode() + fe.Sync().encode())
    msgs = read_until_ready()
    sock.close()
    kinds = [type(m).__name__ for m in msgs]
    assert kinds == ["ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery"], kinds
    row = next(m for m in msgs if isinstance(m, be.DataRow))
    assert row.values[0] is not None and row.values[0] != raw.encode() and row.values[1] == b"2"


def test_new_tables_are_classified_without_restart(env: MaskEnv) -> None:
    table = f"fresh_contacts_{uuid.uuid4().hex[:8]}"  # a name no catalog read has seen
    with env.direct() as direct:
        direct.execute(f"CREATE TABLE {table} AS SELECT id, email AS mail, full_name AS who FROM customers "
                       "WHERE id <= 100")
        raw = {r[0] for r in direct.execute(f"SELECT mail FROM {table}").fetchall()}
    stage = env.proxy.server.masking
    assert stage is not None
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        # until the catalog knows the table, reading it is refused (the content scanner alone
        # would miss the names), and the refusal says to come back
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute(f"SELECT who FROM {table}")
        assert f"not classified public.{table}" in str(refused.value)
        assert refused.value.diag.message_hint == "try again in a few seconds"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            classification = stage.catalogs.upstream(SHOP).classification
            if classification is not None and classification.column(f"public.{table}.mail") is not None:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the new table was not classified")
        got = {r[0] for r in conn.execute(f"SELECT mail FROM {table}").fetchall()}
        assert not got & raw and all(g.endswith("@pseudo.invalid") for g in got)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT id FROM {table} WHERE mail LIKE 'a%'")
    with env.direct() as direct:
        direct.execute(f"DROP TABLE {table}")


def test_unmasked_sessions_keep_the_fast_path(env: MaskEnv) -> None:
    with psycopg.connect(env.dsn("dana", via_tap=False), autocommit=True) as conn:
        conn.execute("SELECT email FROM customers LIMIT 1").fetchall()
        sessions = [s for s in env.proxy.server.sessions.values()
                    if s.info.principal is not None and s.info.principal.name == "dana"]
        assert sessions and all(ord("D") not in s.info.watched_backend for s in sessions)
    with psycopg.connect(env.dsn("alice", via_tap=False), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()
        sessions = [s for s in env.proxy.server.sessions.values()
                    if s.info.principal is not None and s.info.principal.name == "alice"]
        assert sessions and all(ord("D") in s.info.watched_backend for s in sessions)


def test_a_row_that_cannot_be_masked_fails_closed() -> None:
    from rowgate.errors import MaskingError
    from rowgate.masking.classes import PiiClass
    from rowgate.masking.rewrite import Masker, RowRewriter

    cols = [be.FieldDescription("email", 0, 0, 25, -1, -1, 0)]
    rw = RowRewriter(cols, [(PiiClass.EMAIL, "pseudonym")], Masker(lambda c: "redact", b"k" * 32))
    good = be.DataRow((b"a@b.example",)).encode()
    assert rw.rewrite(good) is not None
    for bad in (be.DataRow((b"a", b"b")).encode(), good[:-2], be.DataRow((b"\xff\xfe@x",)).encode()):
        with pytest.raises(MaskingError):
            rw.rewrite(bad)


def test_computed_values_are_no_oracle(env: MaskEnv) -> None:
    """A deterministic mask of a computed value would answer the question it computes."""
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        for sql in ("SELECT CASE WHEN email LIKE 'a%' THEN 'yes' ELSE 'no' END FROM customers",
                    "SELECT CASE WHEN email LIKE 'a%' THEN 1 ELSE 0 END FROM customers",
                    "SELECT length(full_name) FROM customers", "SELECT email LIKE 'a%' FROM customers"):
            values = {r[0] for r in conn.execute(sql).fetchall()}
            assert len(values) == 1, (sql, values)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow
def test_a_million_masked_rows_stream(env: MaskEnv) -> None:
    """1M rows (~110 MB on the wire) of pseudonymised emails and addresses: every row
    arrives masked, and the process running the proxy never holds the result."""
    raw = {r[0] for r in _raw(env, "SELECT email FROM customers")}
    sql = ("SELECT c.email, c.street_address, g FROM customers c, generate_series(1, 1000000 / "
           "(SELECT count(*) FROM customers)::int) g")
    expected = (1_000_000 // len(raw)) * len(raw)
    base = peak = _rss()
    rows = 0
    with psycopg.connect(env.dsn("alice", via_tap=False), autocommit=True) as conn:
        for email, address, _ in conn.cursor().stream(sql):
            assert email.endswith("@pseudo.invalid") and email not in raw and address.startswith("addr_")
            rows += 1
            if rows % 50_000 == 0:
                peak = max(peak, _rss())
    assert rows == expected
    assert peak - base < 40 * 2**20, f"the proxy's process grew by {(peak - base) >> 20} MiB"
