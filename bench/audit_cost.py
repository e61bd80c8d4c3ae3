#!/usr/bin/env python3
"""What the audit log adds to a statement round trip, end to end.

    .venv/bin/python bench/audit_cost.py [-n 20000] [--rounds 3] [--upstream-dsn DSN]

Starts an embedded PostgreSQL (or uses ``--upstream-dsn``) and two ``rowgate serve``
subprocesses with the same config except ``audit.enabled`` (off / on, SQLite store in a
temporary data dir, signed checkpoints). One psycopg client runs N simple-protocol
``SELECT 1`` (ClientCursor: a Query message) and N prepared ``SELECT $1`` (Bind/Execute/Sync
of a statement parsed once) round trips through each, rounds interleaved so machine noise
hits both alike, and prints the median µs per round trip and what the audit log adds: wall
clock (what the client sees) and the CPU time of the rowgate process, all threads and its audit
import process included (steadier than the wall clock on a shared machine; Linux /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import yaml

from rowgate.audit.signing import generate_key_file
from rowgate.embedded import EmbeddedPostgres, free_port

TOKEN = "bench-Tok3n-audit-cost"


def _config(tmp: Path, upstream: psycopg.conninfo.ConnDict, port: int, audit: bool) -> Path:
    data = tmp / ("on" if audit else "off")
    data.mkdir()
    (tmp / "bench.token").write_text(TOKEN)
    generate_key_file(tmp / "audit.key")
    doc = {
        "listen": {"host": "127.0.0.1", "port": port},
        "data_dir": str(data),
        "identities": {"bench": {"kind": "human", "groups": ["bench"], "token": {"file": str(tmp / "bench.token")}}},
        "upstreams": {"bench": {"host": str(upstream.get("host", "127.0.0.1")), "port": int(upstream.get("port", 5432)),
                                "database": str(upstream.get("dbname", "postgres")),
                                "user": str(upstream.get("user", "postgres"))}},
        "policy": {"rules": [{"id": "bench", "action": "allow"}]},
        "masking": {"enabled": False},
        "audit": {"enabled": audit, "signing_key_file": str(tmp / "audit.key")},
    }
    path = tmp / f"rowgate-{'on' if audit else 'off'}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu(pid: int) -> float:
    """Seconds of CPU (user + system, every thread) a process and its children (rowgate's audit
    import process) have used."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(entry)
        except OSError:  # gone meanwhile
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _serve(config: Path, port: int) -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen([sys.executable, "-m", "rowgate.cli", "serve", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dsn = f"postgresql://bench:{TOKEN}@127.0.0.1:{port}/bench?sslmode=disable"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(dsn).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"rowgate did not start: {proc.stderr.read() if proc.stderr else ''}") from None
                time.sleep(0.1)
        yield dsn, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _simple(dsn: str, n: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        for _ in range(200):
            cur.execute("SELECT 1")
        start = time.perf_counter()
        for _ in range(n):
            cur.execute("SELECT 1")
            cur.fetchone()
        return (time.perf_counter() - start) / n * 1e6


def _prepared(dsn: str, n: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        for i in range(200):
            cur.execute("SELECT %s::int", (i,), prepare=True)
        start = time.perf_counter()
        for i in range(n):
            cur.execute("SELECT %s::int", (i,), prepare=True)
            cur.fetchone()
        return (time.perf_counter() - start) / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=20000, help="round trips per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is shown)")
    p.add_argument("--upstream-dsn", help="use this PostgreSQL instead of an embedded one")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rowgate-audit-bench-") as name:
        tmp = Path(name)
        pg = None
        if args.upstream_dsn:
            upstream = psycopg.conninfo.conninfo_to_dict(args.upstream_dsn)
        else:
            pg = EmbeddedPostgres(tmp / "pg").start()
            upstream = psycopg.conninfo.conninfo_to_dict(pg.dsn())
        try:
            ports = {"off": free_port(), "on": free_port()}
            configs = {k: _config(tmp, upstream, port, k == "on") for k, port in ports.items()}
            wall: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}
            with _serve(configs["off"], ports["off"]) as off, _serve(configs["on"], ports["on"]) as on:
                for r in range(args.rounds):
                    for mode, run in (("simple SELECT 1", _simple), ("prepared SELECT $1", _prepared)):
                        for audit, (dsn, pid) in (("off", off), ("on", on)):
                            before = _cpu(pid)
                            us = run(dsn, args.n)
                            time.sleep(0.3)  # the audit log's background work for these round trips
                            used = (_cpu(pid) - before) / args.n * 1e6
                            wall.setdefault((mode, audit), []).append(us)
                            cpu.setdefault((mode, audit), []).append(used)
                            print(f"round {r + 1}: {mode:<20} audit {audit:<3} {us:7.1f} µs wall, {used:6.1f} µs "
                                  "rowgate CPU", file=sys.stderr)
            print(f"µs per round trip, median of {args.rounds} rounds x {args.n}")
            print(f"{'mode':<20} {'':>10} {'audit off':>10} {'audit on':>10} {'added':>8}")
            for mode in ("simple SELECT 1", "prepared SELECT $1"):
                for what, results in (("wall", wall), ("rowgate CPU", cpu)):
                    off_us = statistics.median(results[(mode, "off")])
                    on_us = statistics.median(results[(mode, "on")])
                    print(f"{mode:<20} {what:>10} {off_us:10.1f} {on_us:10.1f} {on_us - off_us:8.1f}")
        finally:
            if pg is not None:
                pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
