"""kill -9 of the proxy in the middle of a load of writes: every row that reached PostgreSQL
has its statement record in the audit log (written before the INSERT was forwarded), and the
chain left behind verifies."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import yaml
from auditutil import POLICY, records
from proxyutil import TOKENS, UpstreamDB, base_config

from rowgate.audit.signing import generate_key_file
from rowgate.embedded import free_port


def test_kill9_loses_no_record_of_a_statement_that_ran(upstream: UpstreamDB, tmp: Path,
                                                       direct: psycopg.Connection) -> None:
    direct.execute("DROP TABLE IF EXISTS kill_t")
    direct.execute("CREATE TABLE kill_t (n int PRIMARY KEY)")
    port = free_port()
    generate_key_file(tmp / "audit.key")
    cfg = base_config(upstream, tmp / "secrets", listen={"host": "127.0.0.1", "port": port}, data_dir=str(tmp),
                      policy=POLICY, audit={"signing_key_file": str(tmp / "audit.key"), "fsync_interval": "1s",
                                            "checkpoint_records": 50})
    path = tmp / "rowgate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "rowgate.cli", "serve", "-c", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        dsn = f"postgresql://bob:{TOKENS['bob']}@127.0.0.1:{port}/app?sslmode=disable"
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(dsn).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"rowgate did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.1)

        sent = [0, 0]

        def load(worker: int) -> None:
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    n = worker
                    while True:
                        conn.execute(f"INSERT INTO kill_t VALUES ({n})", prepare=False)
                        sent[worker] += 1
                        n += 2
            except psycopg.Error:
                return  # the proxy died under us

        workers = [threading.Thread(target=load, args=(w,)) for w in range(2)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 30
        while sum(sent) < 200 and time.monotonic() < deadline:  # a slow machine takes longer
            time.sleep(0.1)
        proc.kill()  # SIGKILL: no shutdown, no flush, no final checkpoint
        proc.wait(10)
        for w in workers:
            w.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    rows = {n for (n,) in direct.execute("SELECT n FROM kill_t")}
    assert len(rows) > 50, f"the load barely ran ({sent})"
    # the store may miss the journal's last records: the importer died with the proxy
    found = records(tmp, import_journal=True, types=("statement",), identity="bob")
    audited = {int(r["text"].split("(")[1].rstrip(")")) for r in found if r["text"].startswith("INSERT INTO kill_t")}
    assert rows <= audited, f"rows without an audit record: {sorted(rows - audited)[:10]}"
    out = subprocess.run([sys.executable, "-m", "rowgate.cli", "audit", "verify", "-c", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    direct.execute("DROP TABLE kill_t")
