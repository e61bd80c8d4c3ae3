"""Masking must not get in the way: a masked analyst's ordinary queries work, with
masked values that keep their types, stable pseudonyms that still join and group, and
every column that is not sensitive exactly as PostgreSQL sent it."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest
from proxyutil import UpstreamDB
from wire_env import MaskEnv, mask_env


@pytest.fixture(scope="module")
def env(upstream: UpstreamDB, tmp_path_factory: pytest.TempPathFactory) -> MaskEnv:
    return mask_env(upstream, tmp_path_factory.mktemp("masking"))


def _sensitive(env: MaskEnv, table: str) -> set[str]:
    stage = env.proxy.server.masking
    assert stage is not None
    classification = stage.catalogs.upstream("shop").classification
    assert classification is not None
    return {c.rsplit(".", 1)[1] for c in classification.sensitive() if c.startswith(f"public.{table}.")}


def _raw_rows(conn: psycopg.Connection[object], sql: str) -> tuple[list[str], list[list[bytes | None]]]:
    """Column names and the values exactly as they came over the wire."""
    cur = conn.execute(sql)
    res = cur.pgresult
    assert res is not None and cur.description is not None
    names = [d.name for d in cur.description]
    return names, [[res.get_value(r, c) for c in range(res.nfields)] for r in range(res.ntuples)]


def test_select_star_returns_every_row_masked(env: MaskEnv) -> None:
    sensitive = _sensitive(env, "customers")
    assert {"email", "full_name", "national_id", "phone"} <= sensitive
    with env.direct() as direct:
        names, raw = _raw_rows(direct, "SELECT * FROM customers ORDER BY id")
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        got_names, got = _raw_rows(conn, "SELECT * FROM customers ORDER BY id")
    assert got_names == names and len(got) == len(raw) == 2000
    for c, name in enumerate(names):
        column_raw = [r[c] for r in raw]
        column_got = [r[c] for r in got]
        if name == "notes":  # free text: only what the detectors find is masked
            continue
        if name in sensitive:
            assert all(g != w for g, w in zip(column_got, column_raw, strict=True) if w is not None), name
        else:
            assert column_got == column_raw, f"{name} is not sensitive and must pass byte for byte"


def test_typed_values_stay_valid(env: MaskEnv) -> None:
    """Binary results (asyncpg) decode: masked dates are dates, or NULL."""
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(env.dsn("alice"))
        try:
            return list(await conn.fetch("SELECT id, date_of_birth, email, created_at FROM customers ORDER BY id"))
        finally:
            await conn.close()

    rows = asyncio.run(run())
    assert len(rows) == 2000
    assert all(r["email"].endswith("@pseudo.invalid") for r in rows)


def test_pseudonyms_are_stable_across_queries_and_sessions(env: MaskEnv) -> None:
    sql = "SELECT id, email, full_name FROM customers WHERE id <= 50 ORDER BY id"
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        first = conn.execute(sql).fetchall()
        again = conn.execute(sql).fetchall()
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        other = conn.cursor(binary=True).execute(sql).fetchall()
    assert first == again == other
    assert len({r[1] for r in first}) == 50  # distinct emails keep distinct pseudonyms


def test_joins_and_grouping_on_pseudonymised_keys(env: MaskEnv) -> None:
    join = "SELECT c.email, count(*) FROM customers c JOIN leads l ON l.contact = c.email GROUP BY c.email"
    group = "SELECT email, count(*) FROM customers GROUP BY email"
    with env.direct() as direct:
        want_join = sorted(n for _, n in direct.execute(join).fetchall())
        want_group = len(direct.execute(group).fetchall())
    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        got_join = conn.execute(join).fetchall()
        got_group = conn.execute(group).fetchall()
        # the pseudonyms a join produces are those a plain read produces
        plain = {e for (e,) in conn.execute("SELECT email FROM customers").fetchall()}
    assert sorted(n for _, n in got_join) == want_join
    assert {e for e, _ in got_join} <= plain
    assert len(got_group) == want_group


def test_redacting_identity_cannot_group_on_masked_columns(env: MaskEnv) -> None:
    """Grouping is allowed on pseudonyms only: redacted values would make it an oracle."""
    with psycopg.connect(env.dsn("agent"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT email, count(*) FROM customers GROUP BY email")
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2000,)


def test_masked_counts_are_recorded_per_column(env: MaskEnv) -> None:
    stage = env.proxy.server.masking
    assert stage is not None
    seen: list[dict[str, int]] = []

    def record(req: object) -> None:
        meta = getattr(req, "meta", {})
        if isinstance(meta.get("masked"), dict) and meta["masked"]:
            seen.append(dict(meta["masked"]))

    with psycopg.connect(env.dsn("alice"), autocommit=True) as conn:
        conn.execute("SELECT 1")  # the session's exchange exists from its first message
        for s in list(env.proxy.server.sessions.values()):
            if s.info.exchange is not None and s.info.principal is not None and s.info.principal.name == "alice":
                s.info.exchange.on_done.append(record)
        conn.execute("SELECT id, email FROM customers WHERE id <= 10").fetchall()
    assert {"email": 10} in seen
