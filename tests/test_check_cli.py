"""`rowgate check`: the proxy's decision for a statement, from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rowgate.demo.workspace import DEMO_POLICY


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "t").write_text("unused-token")
    identities = {
        name: {"kind": kind, "groups": groups, "token": {"file": "t"}}
        for name, kind, groups in [
            ("alice", "human", ["analysts"]),
            ("bob", "human", ["engineers"]),
            ("agent", "agent", ["agents"]),
        ]
    }
    doc = {
        "identities": identities,
        "upstreams": {"shop": {"database": "shop", "user": "rowgate", "environment": "production"}},
        "policy": DEMO_POLICY,
    }
    path = tmp_path / "rowgate.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rowgate.cli", "check", "-c", str(config), *args],
        capture_output=True, text=True, timeout=60,
    )


def test_guardrail_refusal_is_explained(config: Path) -> None:
    out = check(config, "--as", "bob", "--database", "shop", "delete from orders where 1 = 1")
    assert out.returncode == 1
    assert "kind: write" in out.stdout
    assert "tables_written: ['public.orders']" in out.stdout
    assert 'denied by guardrail "delete_without_where"' in out.stdout


def test_allowed_read_exits_zero(config: Path) -> None:
    out = check(config, "--as", "alice", "--database", "shop", "SELECT email FROM customers WHERE id = 7")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "decision: allow" in out.stdout


def test_json_output_for_a_rule(config: Path) -> None:
    out = check(config, "--json", "--as", "agent", "--database", "shop", "INSERT INTO orders (id) VALUES (1)")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["decision"]["rule"] == "agents-read-only"
    assert doc["decision"]["action"] == "deny"
    assert doc["statements"][0]["kind"] == "write"
    assert doc["statements"][0]["tables_written"] == ["public.orders"]


def test_require_approval_in_the_demo_policy(config: Path) -> None:
    out = check(config, "--json", "--as", "bob", "--database", "shop", "DELETE FROM payments WHERE id = 3")
    assert out.returncode == 1
    assert json.loads(out.stdout)["decision"]["action"] == "require_approval"


def test_multi_statement_names_the_statement(config: Path) -> None:
    out = check(config, "--json", "--as", "bob", "--database", "shop", "SELECT 1; TRUNCATE orders")
    decision = json.loads(out.stdout)["decision"]
    assert decision["statement_index"] == 1
    assert "statement 2 of the message" in decision["message"]


def test_unknown_identity_is_a_clear_error(config: Path) -> None:
    out = check(config, "--as", "mallory", "--database", "shop", "SELECT 1")
    assert out.returncode == 2
    assert "identity 'mallory' is not in the config" in out.stderr
