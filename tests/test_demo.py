"""`rowgate demo` end to end: a real subprocess, a real embedded PostgreSQL, real clients
through the proxy; then a restart on the same directory must reuse data, port and tokens."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rowgate.config import load_config
from rowgate.demo import data
from rowgate.embedded import EmbeddedPostgres, free_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")


class DemoProcess:
    def __init__(self, data_dir: Path, port: int, control_port: int, log_dir: Path, run: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.stdout_path = log_dir / f"demo-{run}.out"
        self.stderr_path = log_dir / f"demo-{run}.err"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("ROWGATE_CONFIG", None)
        # Logs go to files, not pipes: nobody reads a pipe while we wait, and a full one blocks the demo.
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rowgate.cli", "demo", "--data-dir", str(data_dir),
                 "--port", str(port), "--control-port", str(control_port)],
                stdout=out, stderr=err, env=env, cwd=log_dir,
            )

    def output(self) -> str:
        return (f"--- stdout ---\n{self.stdout_path.read_text()}\n"
                f"--- stderr ---\n{self.stderr_path.read_text()}")

    def wait_ready(self) -> dict[str, Any]:
        """Until connections.json exists and the proxy accepts TCP connections."""
        connections = self.data_dir / "connections.json"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"demo exited early with {self.proc.returncode}\n{self.output()}")
            if connections.exists() and _accepts(self.port):
                doc: dict[str, Any] = json.loads(connections.read_text())
                return doc
            time.sleep(0.2)
        pytest.fail(f"demo not ready within {START_TIMEOUT}s\n{self.output()}")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"demo did not exit within {STOP_TIMEOUT}s of SIGTERM\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def demo_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "demo"
    yield data_dir
    # A demo killed by a failing test leaves pg_ctl's server running; never leak it.
    if (data_dir / "pg" / "pgdata" / "postmaster.pid").exists():
        EmbeddedPostgres(data_dir / "pg").stop(quiet=True)


def _first_email(dsn: str) -> str:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT email FROM customers ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


def _check_running_demo(doc: dict[str, Any], data_dir: Path, port: int, control_port: int) -> None:
    assert set(doc) == {"identities", "upstream", "control", "config"}
    assert set(doc["identities"]) == {"alice", "bob", "dana", "agent"}
    for name, dsn in doc["identities"].items():
        assert dsn.startswith(f"postgresql://{name}:")
        assert dsn.endswith(f"@127.0.0.1:{port}/shop")
    assert doc["control"] == f"http://127.0.0.1:{control_port}"
    assert Path(doc["config"]).is_absolute()

    # Through the proxy, as alice: the data is there (emails may arrive masked, so only its presence is checked).
    with psycopg.connect(doc["identities"]["alice"], connect_timeout=10) as conn:
        count = conn.execute("SELECT count(*) FROM customers").fetchone()
        assert count is not None and 1000 <= count[0] < 10000
        row = conn.execute("SELECT email FROM customers ORDER BY id LIMIT 1").fetchone()
        assert row is not None and isinstance(row[0], str) and row[0]

    # Straight to PostgreSQL, bypassing rowgate: the real values.
    with psycopg.connect(doc["upstream"], connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("shop",)
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in ("customers", "orders", "payments")}
        assert counts == {"customers": (data.N_CUSTOMERS,), "orders": (data.N_ORDERS,), "payments": (data.N_ORDERS,)}
    assert EMAIL.match(_first_email(doc["upstream"]))

    config = load_config(Path(doc["config"]))
    assert config.listen.port == port
    assert config.control.port == control_port
    assert config.upstreams["shop"].database == "shop"
    assert config.upstreams["shop"].environment == "production"
    assert config.identities["dana"].groups == ["dpo", "approvers"]
    assert config.identities["agent"].kind == "agent"
    for name in ("alice", "bob", "dana", "agent"):
        token_file = data_dir / "secrets" / f"{name}.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert config.identities[name].token.resolve(name) in doc["identities"][name]


def test_demo_serves_and_restarts_with_the_same_data(demo_dir: Path, tmp_path: Path) -> None:
    port, control_port = free_port(), free_port()

    first = DemoProcess(demo_dir, port, control_port, tmp_path, run=1)
    try:
        doc1 = first.wait_ready()
        _check_running_demo(doc1, demo_dir, port, control_port)
        email1 = _first_email(doc1["upstream"])
        # Reseeding is deterministic, so only a change made after seeding proves the data was kept.
        with psycopg.connect(doc1["upstream"], autocommit=True) as conn:
            conn.execute("INSERT INTO products (name, price_cents) VALUES ('restart marker', 1)")
        rc = first.terminate()
        assert rc == 0, first.output()
    finally:
        first.kill()
    assert "psql \"postgresql://alice:" in first.stdout_path.read_text()

    # Readiness on the second run must mean "rewritten", not "left over from the first".
    (demo_dir / "connections.json").unlink()
    second = DemoProcess(demo_dir, port, control_port, tmp_path, run=2)
    try:
        doc2 = second.wait_ready()
        _check_running_demo(doc2, demo_dir, port, control_port)
        assert doc2["identities"] == doc1["identities"], "tokens must be reused across restarts"
        assert doc2["upstream"] == doc1["upstream"], "the embedded PostgreSQL port should be stable"
        assert _first_email(doc2["upstream"]) == email1
        with psycopg.connect(doc2["upstream"]) as conn:
            marker = conn.execute("SELECT count(*) FROM products WHERE name = 'restart marker'").fetchone()
        assert marker == (1,), "data must be reused, not reseeded"
        rc = second.terminate()
        assert rc == 0, second.output()
    finally:
        second.kill()


@pytest.fixture(scope="module")
def shop() -> data.ShopData:
    return data.generate()


def test_generated_data_is_deterministic(shop: data.ShopData) -> None:
    again = data.generate()
    assert again == shop
    assert data.generate(seed=data.SEED + 1).tables["customers"][0] != shop.tables["customers"][0]


def test_generated_identifiers_are_valid(shop: data.ShopData) -> None:
    customers, payments = shop.tables["customers"], shop.tables["payments"]
    assert len(customers) == data.N_CUSTOMERS
    assert len({c[2] for c in customers}) == len(customers), "emails are unique"
    for c in customers:
        assert EMAIL.match(c[2]), c[2]
        area, group, serial = c[9].split("-")
        assert len(area) == 3 and area not in ("000", "666") and not area.startswith("9"), c[9]
        assert group != "00" and serial != "0000" and len(group) == 2 and len(serial) == 4, c[9]
    for p in payments:
        assert len(p[2]) == 16 and data.luhn_valid(p[2]), p[2]
        assert data.iban_valid(p[4]), p[4]
    notes = [c[10] for c in customers if c[10]]
    for marker in ("sk_live_", "AKIA", "ghp_"):
        assert any(marker in n for n in notes), f"some notes carry a {marker} secret"


def test_order_totals_match_items(shop: data.ShopData) -> None:
    totals: dict[int, int] = {}
    for _id, order_id, _product, quantity, unit in shop.tables["order_items"]:
        totals[order_id] = totals.get(order_id, 0) + quantity * unit
    assert all(totals[o[0]] == o[4] for o in shop.tables["orders"])
    assert all(p[5] == totals[p[1]] for p in shop.tables["payments"])


def test_luhn_and_iban_checks_reject_corruption() -> None:
    assert data.luhn_valid("4111111111111111")
    assert not data.luhn_valid("4111111111111112")
    assert data.iban_valid("DE89370400440532013000")
    assert not data.iban_valid("DE89370400440532013001")
