"""Token changes in the audit log: `rowgate token create|revoke` (a process of its own, writing
only the state store) while a proxy runs, a token that expires, and a change made while no
proxy ran all become token_change records of the proxy's chain within seconds, once each, with
who made them and never the token or its verifier."""

from __future__ import annotations

import base64
import getpass
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from auditutil import records, wait_for
from identity.identutil import create_token, proxy_from, rowgate, write_config
from proxyutil import UpstreamDB

from rowgate.audit import journal
from rowgate.audit.setup import build_recorder
from rowgate.audit.tokens import TokenAudit
from rowgate.config import parse_config
from rowgate.errors import AuditUnavailable
from rowgate.identity.tokenstore import TokenStore
from rowgate.statestore import open_database, open_state

AUDIT = {"fsync_interval": "50ms"}
AUTH = {"revocation_poll": "200ms"}


def _changes(data: Path, expected: set[tuple[str, str]], timeout: float = 10.0) -> list[dict[str, Any]]:
    def complete(rs: list[dict[str, Any]]) -> bool:
        return expected <= {(r["identity"], r["action"]) for r in rs}

    found = wait_for(data, complete, timeout=timeout, types=("token_change",))
    assert complete(found), f"missing {expected - {(r['identity'], r['action']) for r in found}}"
    return found


def created_id(found: list[dict[str, Any]]) -> str:
    return str(next(r["token_id"] for r in found if r["action"] == "created"))


def _search(cfg: Path, *args: str) -> list[dict[str, Any]]:
    out = rowgate(cfg, "audit", "search", "-c", str(cfg), "--type", "token_change", "--json", *args)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_token_changes_are_audited(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp, audit=AUDIT, auth=AUTH)
    data = tmp / "data"
    # made before any proxy ran: recorded at the proxy's start
    early = create_token(cfg, "early-bird", "-g", "analysts")
    p = proxy_from(cfg)
    try:
        started = time.monotonic()
        _changes(data, {("early-bird", "created")})
        bot = create_token(cfg, "etl-bot", "--kind", "agent", "-g", "agents", "-g", "etl", "--on-behalf-of",
                           "alice", "--attr", "team=data", "--expires", "30d")
        short = create_token(cfg, "short-lived", "--expires", "2s")
        with psycopg.connect(p.dsn("etl-bot", token=bot["token"]), autocommit=True) as conn:
            conn.execute("SELECT 1")
        rowgate(cfg, "token", "revoke", "etl-bot")
        found = _changes(data, {("etl-bot", "created"), ("etl-bot", "revoked"), ("short-lived", "created")})
        assert time.monotonic() - started < 10
        # an expiry is no command: the proxy notices it by time
        found = _changes(data, {("short-lived", "expired")})
        # the CLI's view of the same records, while the proxy runs
        via_cli = _search(cfg, "--identity", "etl-bot")
        assert [r["action"] for r in via_cli] == ["created", "revoked"]
        human = rowgate(cfg, "audit", "search", "-c", str(cfg), "--type", "token_change", "--identity", "etl-bot")
        assert f"revoked token {created_id(via_cli)} (agent; groups: agents,etl)" in human.stdout
        # a token's session records say how it sees data (this proxy masks nothing)
        (start,) = wait_for(data, lambda rs: bool(rs), types=("session_start",), identity="etl-bot")
        assert start["masking"]["unmasked"] is True and start["masking"]["reason"] == "masking disabled"
    finally:
        p.stop()

    by = {(r["identity"], r["action"]): r for r in found}
    created = by[("etl-bot", "created")]
    assert created["kind"] == "agent" and created["groups"] == ["agents", "etl"]
    assert created["attributes"] == {"team": "data"} and created["on_behalf_of"] == "alice"
    assert created["expires"] is not None and created["at"] is not None
    assert created["by"].startswith(getpass.getuser() + "@")
    assert by[("etl-bot", "revoked")]["token_id"] == created["token_id"]
    assert by[("etl-bot", "revoked")]["by"] == created["by"]
    assert by[("short-lived", "expired")]["by"] == "rowgate (expiry)"
    assert by[("short-lived", "expired")]["at"] == by[("short-lived", "created")]["expires"]
    changes = [r["change"] for r in sorted(found, key=lambda r: r["seq"])]
    assert changes == sorted(changes) and len(set(changes)) == len(changes)  # each change once, in order

    # changed while no proxy runs: recorded at the next start, and nothing recorded twice
    rowgate(cfg, "token", "revoke", "early-bird")
    p = proxy_from(cfg)
    try:
        found = _changes(data, {("early-bird", "revoked")})
    finally:
        p.stop()
    keys = [(r["identity"], r["action"], r["token_id"]) for r in found]
    assert len(keys) == len(set(keys)) == 6

    # no secret anywhere in the log: neither the tokens nor their verifiers
    store = TokenStore(open_database(None, data / "state.db"))
    try:
        verifiers = [t.verifier for t in store.all()]
    finally:
        store.db.close()
    logged = b"".join(f.read_bytes() for f in (data / "audit").rglob("*") if f.is_file())
    logged += json.dumps(records(data)).encode()
    for secret in (early["token"], bot["token"], short["token"]):
        assert secret.encode() not in logged
    for v in verifiers:
        for part in (v.salt, v.stored_key, v.server_key):
            assert part.hex().encode() not in logged and base64.b64encode(part) not in logged
    assert "intact" in rowgate(cfg, "audit", "verify", "-c", str(cfg)).stdout


def test_a_change_the_log_cannot_take_is_recorded_later(tmp: Path) -> None:
    """The cursor moves only after the record is in the journal: a change made while the journal
    cannot be written is recorded once it can; a long history is recorded over several polls."""
    config = parse_config({"data_dir": str(tmp), "upstreams": {"app": {"database": "d", "user": "u"}},
                           "audit": AUDIT}, tmp)
    recorder = build_recorder(config)
    assert recorder is not None
    db = open_state(None, tmp)
    try:
        store = TokenStore(db)
        now = time.time()
        for name in ("t1", "t2", "t3"):
            store.create(name, kind="human", groups=(), attributes={}, on_behalf_of=None, expires=None, now=now)
        tokens = TokenAudit(store, recorder)
        assert tokens.due(now)
        assert tokens.sync(now, batch=2) == 2 and tokens.due(now)  # the rest at the next poll
        assert tokens.sync(now, batch=2) == 1 and not tokens.due(now)
        assert store.audited_through(recorder.writer.replica) == 3

        (_, path), = journal.segments(journal.root(tmp) / recorder.writer.replica)
        kept = path.with_suffix(".kept")
        path.rename(kept)
        path.symlink_to("/dev/full")  # a full device (the tests run as root: read-only would not do)
        try:
            time.sleep(0.5)  # the sync thread notices the replaced journal (fsync_interval: 50ms)
            store.revoke("t1", time.time())
            tokens.changed()
            with pytest.raises(AuditUnavailable):
                tokens.sync(time.time())
            assert store.audited_through(recorder.writer.replica) == 3 and tokens.due(time.time())
        finally:
            path.unlink()
            kept.rename(path)
        time.sleep(0.5)
        assert tokens.sync(time.time()) == 1
    finally:
        recorder.close()
        db.close()
    found = records(tmp, import_journal=True, types=("token_change",))
    assert [(r["identity"], r["action"]) for r in found] == [
        ("t1", "created"), ("t2", "created"), ("t3", "created"), ("t1", "revoked")]
