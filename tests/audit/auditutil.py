"""Helpers for the audit tests: a proxy with the audit log on, and polling reads of its store
(the proxy imports its journal every fsync_interval; completions are written in batches, up to
fsync_interval after the statement)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from proxyutil import RunningProxy, UpstreamDB, start_proxy

from rowgate.audit import journal
from rowgate.audit import records as rec
from rowgate.audit.importer import catch_up
from rowgate.audit.signing import generate_key_file
from rowgate.audit.store import SearchFilter, open_store

# guardrails on (the relay tests' permissive policy lifts them): DELETE without WHERE is refused
POLICY: dict[str, Any] = {"rules": [{"id": "everyone", "action": "allow"}]}


def audit_proxy(upstream: UpstreamDB, tmp: Path, **overrides: Any) -> RunningProxy:
    key = tmp / "audit.key"
    generate_key_file(key)
    audit = {"signing_key_file": str(key), "fsync_interval": "50ms", **overrides.pop("audit", {})}
    return start_proxy(upstream, tmp, data_dir=str(tmp), policy=POLICY, audit=audit, **overrides)


def records(tmp: Path, *, import_journal: bool = False, **filters: Any) -> list[rec.Record]:
    """Records in the store; ``import_journal``: first import what the journal has beyond it, as
    `rowgate audit search` does (for a proxy that is gone; a running one imports by itself)."""
    store = open_store(None, tmp)
    try:
        if import_journal:
            catch_up(store, journal.root(tmp))
        return store.search(SearchFilter(**filters))
    finally:
        store.close()


def wait_for(tmp: Path, predicate: Any, timeout: float = 5.0, **filters: Any) -> list[rec.Record]:
    deadline = time.monotonic() + timeout
    while True:
        found = records(tmp, **filters)
        if predicate(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def completion_of(tmp: Path, statement: rec.Record) -> rec.Record:
    found = wait_for(tmp, lambda rs: any(r.get("ref") == statement["seq"] for r in rs), types=("completion",))
    matches = [r for r in found if r.get("ref") == statement["seq"] and r["replica"] == statement["replica"]]
    assert matches, f"no completion for record {statement['seq']}: {statement.get('text')}"
    return matches[0]


def write_cli_config(tmp: Path, **extra: Any) -> Path:
    """A config file for `rowgate audit` / `rowgate lineage` reading the test's data dir."""
    cfg = tmp / "cli.yaml"
    doc = {"data_dir": str(tmp), "upstreams": {"app": {"database": "rowgate_test", "user": "x"}},
           "audit": {"signing_key_file": str(tmp / "audit.key")}, **extra}
    cfg.write_text(yaml.safe_dump(doc))
    return cfg
