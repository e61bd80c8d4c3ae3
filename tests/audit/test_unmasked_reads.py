"""Every unmasked read is audited with the reason given: the records of a session that sees raw
values (an ``unmask`` rule, or masking off) say so and why; a masked session's say it is masked;
`rowgate audit search --unmasked` and `rowgate lineage --column` tell them apart. And the
policy_change record at start describes the policy it hashes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from auditutil import audit_proxy, completion_of, wait_for, write_cli_config
from proxyutil import UpstreamDB

REASON = "GDPR subject access requests"
DPO_TOKEN = "dana-Tok3n-dpo-audit-0123"
RAW_EMAIL = "ingrid.lindqvist@example.com"
MASKING = {"enabled": True, "rules": [
    {"groups": ["agents"], "strategies": {"email": "redact"}},
    {"groups": ["dpo"], "unmask": True, "reason": REASON},
]}


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "rowgate.cli", *args, "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def _json(out: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.stdout.splitlines()]


def _statement(tmp: Path, identity: str, text: str) -> dict[str, Any]:
    found = wait_for(tmp, lambda rs: any(r.get("text") == text for r in rs), types=("statement",),
                     identity=identity)
    matches = [r for r in found if r.get("text") == text]
    assert matches, f"no statement record of {identity} for {text!r}"
    return matches[-1]


def test_unmasked_reads_carry_their_reason(upstream: UpstreamDB, tmp: Path, direct: psycopg.Connection) -> None:
    direct.execute("DROP TABLE IF EXISTS um_people")
    direct.execute("CREATE TABLE um_people (id int PRIMARY KEY, email text, score int)")
    direct.execute("INSERT INTO um_people VALUES (1, %s, 7)", (RAW_EMAIL,))
    (tmp / "secrets").mkdir(parents=True, exist_ok=True)
    (tmp / "secrets" / "dana.token").write_text(DPO_TOKEN)
    dana = {"kind": "human", "groups": ["dpo"], "token": {"file": str(tmp / "secrets" / "dana.token")}}
    p = audit_proxy(upstream, tmp, masking=MASKING, identities={"dana": dana})
    config = p.config
    select = "SELECT email FROM um_people WHERE id = 1"
    aliased = "SELECT email AS contact, score FROM um_people"
    try:
        with psycopg.connect(p.dsn("dana", token=DPO_TOKEN), autocommit=True) as conn:
            assert conn.execute(select).fetchone() == (RAW_EMAIL,)
        with psycopg.connect(p.dsn("alice"), autocommit=True) as conn:
            (masked,) = conn.execute(select).fetchone() or ("",)
            assert masked != RAW_EMAIL and "@" in masked
            (contact, _), = conn.execute(aliased).fetchall()
            assert contact != RAW_EMAIL
        with psycopg.connect(p.dsn("agent"), autocommit=True) as conn:
            assert conn.execute(select).fetchone() != (RAW_EMAIL,)
        raw = _statement(tmp, "dana", select)
        done = completion_of(tmp, raw)
        masked_record = _statement(tmp, "alice", select)
        agent_record = _statement(tmp, "agent", select)
        aliased_record = _statement(tmp, "alice", aliased)
        completion_of(tmp, aliased_record)
        wait_for(tmp, lambda rs: len(rs) >= 3, types=("session_end",))
    finally:
        p.stop()

    # the raw read: its session_start, statement and completion say why it was allowed
    why = {"unmasked": True, "reason": REASON, "rule": 1, "matched": {"group": "dpo"}}
    assert raw["masking"] == why and done["masking"] == why
    (start,) = wait_for(tmp, lambda rs: bool(rs), types=("session_start",), identity="dana")
    assert start["masking"] == why
    # masked sessions say they are, and by which rule (or the defaults)
    assert masked_record["masking"] == {"unmasked": False, "reason": "defaults", "rule": None, "matched": {}}
    assert agent_record["masking"] == {"unmasked": False, "reason": "rule 0", "rule": 0,
                                       "matched": {"group": "agents"}}

    cfg = write_cli_config(tmp)
    found = _json(_cli(cfg, "audit", "search", "--unmasked", "--json"))
    assert found and {r["identity"] for r in found} == {"dana"}
    assert {r["type"] for r in found} >= {"session_start", "statement", "completion", "session_end"}
    assert all(r["masking"]["reason"] == REASON for r in found)
    statements = _json(_cli(cfg, "audit", "search", "--unmasked", "--type", "statement", "--json"))
    assert [r["text"] for r in statements] == [select]
    human = _cli(cfg, "audit", "search", "--unmasked", "--type", "statement").stdout
    assert f"UNMASKED (rule 1, group=dpo): {REASON}" in human and "alice" not in human

    # lineage: the DPO read the column raw (with the reason), alice masked, even through an alias
    reads = _json(_cli(cfg, "lineage", "--column", "rowgate_test.public.um_people.email", "--json"))
    by = {(r["identity"], r["seq"]): r for r in reads}
    dpo = by[("dana", raw["seq"])]
    assert dpo["masked"] is False and dpo["unmasked"] is True and dpo["masking_reason"] == REASON
    assert by[("alice", masked_record["seq"])]["masked"] is True
    assert by[("alice", aliased_record["seq"])]["masked"] is True
    assert by[("agent", agent_record["seq"])]["masked"] is True
    assert all(r["unmasked"] is False for r in reads if r["identity"] != "dana")
    text = _cli(cfg, "lineage", "--column", "rowgate_test.public.um_people.email").stdout
    dana_line = next(line for line in text.splitlines() if " dana " in line)
    assert f"RAW, UNMASKED (rule 1): {REASON}" in dana_line
    assert all(" masked " in line for line in text.splitlines() if " alice " in line)
    per_identity = _cli(cfg, "lineage", "--identity", "dana").stdout
    assert "sessions that see raw values" in per_identity

    # the policy the sessions ran under: hashes, and who may see raw values
    (policy,) = wait_for(tmp, lambda rs: bool(rs), types=("policy_change",))
    assert policy["event"] == "loaded"
    assert policy["policy_hash"] == hashlib.sha256(config.policy.model_dump_json().encode()).hexdigest()
    assert policy["config_hash"] == hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    assert policy["masking_hash"] == hashlib.sha256(config.masking.model_dump_json().encode()).hexdigest()
    assert policy["policy"]["rules"] == ["everyone"]
    assert policy["masking"]["unmask"] == [{"rule": 1, "identities": [], "groups": ["dpo"], "principal_kinds": [],
                                            "environments": [], "reason": REASON}]
    direct.execute("DROP TABLE um_people")
