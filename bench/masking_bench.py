#!/usr/bin/env python3
"""Masking on the wire: the cost of reading a large result masked.

    .venv/bin/python bench/masking_bench.py [--rows 200000] [--rounds 5] [--upstream-dsn DSN]
                                            [--strategy default|pseudonym|redact|partial]

It starts (or uses) an upstream PostgreSQL, creates a table of ``--rows`` rows and 10
columns, 4 of them sensitive (email, full_name, phone, national_id; pinned in the
config, so classification cannot vary), starts ``rowgate serve`` (a real subprocess, so
the client and the proxy do not share an interpreter), and reads the whole table with
psycopg (a plain ``SELECT *``, text format) directly, through rowgate as an identity
that sees raw values, and through rowgate as a masked identity (the client's garbage
collector is paused while it reads). Rounds are interleaved so machine noise hits every
target alike; it prints the median time of each, the ratios, and the CPU time rowgate
spent per read (from /proc). The target is masked <= 1.5 x direct.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pgbench_compare import BenchError, clean_env, managed, rowgate_binary, wait_port

from rowgate.embedded import EmbeddedPostgres, free_port

TABLE = "people"
SENSITIVE = {"email": "email", "full_name": "person_name", "phone": "phone", "national_id": "national_id"}
CREATE = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} AS
SELECT g AS id,
       'user' || g || '@example-mail.com' AS email,
       (ARRAY['Anna', 'Ben', 'Carla', 'David', 'Emma', 'Felix'])[g % 6 + 1] || ' '
           || (ARRAY['Meyer', 'Smith', 'Garcia', 'Novak', 'Rossi'])[g % 5 + 1] || g AS full_name,
       '+1 (202) ' || lpad(g::text, 7, '0') AS phone,
       lpad((g % 899 + 1)::text, 3, '0') || '-' || lpad((g % 99 + 1)::text, 2, '0') || '-'
           || lpad((g % 9999 + 1)::text, 4, '0') AS national_id,
       (ARRAY['Berlin', 'Paris', 'Lisbon', 'Austin', 'Osaka'])[g % 5 + 1] AS city,
       'US' AS country,
       (g * 37 % 100000) / 100.0 AS amount,
       timestamptz '2024-01-01' + g * interval '1 minute' AS created_at,
       (ARRAY['new', 'paid', 'shipped'])[g % 3 + 1] AS status
FROM generate_series(1, %(rows)s) AS g;
ANALYZE {TABLE};
"""


def _config(workdir: Path, conninfo: dict[str, str], port: int, strategy: str) -> Path:
    tokens = {"raw": secrets.token_urlsafe(24), "masked": secrets.token_urlsafe(24)}
    identities = {}
    for name, token in tokens.items():
        (workdir / f"{name}.token").write_text(token)
        identities[name] = {"kind": "service", "groups": ["dpo" if name == "raw" else "analysts"],
                            "token": {"file": str(workdir / f"{name}.token")}}
    (workdir / "mask.key").write_text(secrets.token_hex(32))
    columns: dict[str, object] = {f"public.{TABLE}.{c}": cls for c, cls in SENSITIVE.items()}
    columns.update({f"public.{TABLE}.{c}": "none" for c in ("id", "city", "country", "amount", "created_at",
                                                              "status")})
    rules: list[dict[str, object]] = [{"groups": ["dpo"], "unmask": True, "reason": "benchmark baseline"}]
    if strategy != "default":
        rules.append({"groups": ["analysts"], "strategies": dict.fromkeys(SENSITIVE.values(), strategy)})
    up = {"host": conninfo["host"], "port": int(conninfo["port"]), "database": conninfo["dbname"],
          "user": conninfo["user"], "tls": {"mode": "disable"}}
    if conninfo.get("password"):
        (workdir / "upstream.password").write_text(conninfo["password"])
        up["password"] = {"file": str(workdir / "upstream.password")}
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "control": {"host": "127.0.0.1", "port": free_port()},
        "identities": identities,
        "upstreams": {"bench": up},
        "masking": {"key": {"file": str(workdir / "mask.key")}, "columns": columns, "rules": rules},
    }
    path = workdir / "rowgate.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    (workdir / "tokens.json").write_text(json.dumps(tokens))
    return path


def read_all(dsn: str) -> tuple[float, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        gc.collect()
        gc.disable()  # the client's collector runs at times of its own: noise, not proxy cost
        try:
            start = time.perf_counter()
            rows = conn.execute(f"SELECT * FROM {TABLE}").fetchall()
            return time.perf_counter() - start, len(rows)
        finally:
            gc.enable()


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) the process has used so far; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, upstream_dsn: str, workdir: Path) -> None:
    with psycopg.connect(upstream_dsn, autocommit=True) as conn:
        conn.execute(CREATE.replace("%(rows)s", str(int(args.rows))))
    info = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(upstream_dsn).items()}
    info.setdefault("host", "127.0.0.1")
    info.setdefault("port", "5432")
    port = free_port()
    cfg = _config(workdir, info, port, args.strategy)
    tokens = json.loads((workdir / "tokens.json").read_text())
    targets = {
        "direct": upstream_dsn,
        "rowgate raw": f"postgresql://raw:{tokens['raw']}@127.0.0.1:{port}/bench?sslmode=disable",
        "rowgate masked": f"postgresql://masked:{tokens['masked']}@127.0.0.1:{port}/bench?sslmode=disable",
    }
    logf = workdir / "rowgate.log"
    with managed([rowgate_binary(), "serve", "-c", str(cfg)], "rowgate", logf, env=clean_env()) as proc:
        wait_port(port, proc, "rowgate", logf, timeout=120)
        times: dict[str, list[float]] = {t: [] for t in targets}
        cpu: dict[str, list[float]] = {t: [] for t in targets}
        for dsn in targets.values():  # warm up: caches, the classification, the connection path
            read_all(dsn)
        for rnd in range(args.rounds):
            for t, dsn in targets.items():
                before = cpu_seconds(proc.pid)
                elapsed, n = read_all(dsn)
                after = cpu_seconds(proc.pid)
                if n != args.rows:
                    raise BenchError(f"{t} returned {n} rows, not {args.rows}")
                times[t].append(elapsed)
                if before is not None and after is not None:
                    cpu[t].append(after - before)
            print(f"round {rnd + 1}: " + ", ".join(f"{t} {v[-1]:.3f}s" for t, v in times.items()), file=sys.stderr)
    med = {t: statistics.median(v) for t, v in times.items()}
    print(f"\n{args.rows} rows x 10 columns (4 sensitive, strategy {args.strategy}), psycopg text, "
          f"median of {args.rounds} rounds")
    for t, v in med.items():
        used = f"   rowgate CPU {statistics.median(cpu[t]):5.2f} s" if cpu[t] and t != "direct" else ""
        print(f"  {t:<15} {v:7.3f} s   {v / med['direct']:5.2f} x direct{used}")
    print(f"  masked / raw through rowgate: {med['rowgate masked'] / med['rowgate raw']:.2f} x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--upstream-dsn", help="use this PostgreSQL (a superuser DSN) instead of an embedded one")
    p.add_argument("--strategy", default="default", choices=("default", "pseudonym", "redact", "partial"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rowgate-maskbench-") as tmp:
        workdir = Path(tmp)
        try:
            if args.upstream_dsn:
                run(args, args.upstream_dsn, workdir)
            else:
                pg = EmbeddedPostgres(workdir / "pg").start()
                try:
                    run(args, pg.dsn("postgres"), workdir)
                finally:
                    pg.stop()
        except BenchError as e:
            print(f"masking_bench: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
