"""OpenLineage events: built with openlineage-python's classes, written by its file transport,
read back and checked against the spec's required fields, the columnLineage facet and the
masking flag; and the lineage CLI over the audit index."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
from auditutil import POLICY, write_cli_config
from openlineage.client.event_v2 import RunState
from proxyutil import UpstreamDB, base_config, start_proxy

from rowgate.audit.setup import build_recorder
from rowgate.audit.stage import AuditStage
from rowgate.config import parse_config
from rowgate.pgwire.framing import Frame
from rowgate.proxy.gate import StatementGate
from rowgate.proxy.hooks import Action, Pipeline, SessionInfo


class MarkMasked:
    """Stands in for the masking stage: reports the email column of every result as masked
    (request.meta["masked"], as the masking stage fills it)."""

    uses_exchange = True
    frontend_types: frozenset[int] = frozenset()
    backend_types = frozenset(b"C")

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        req = session.exchange.current_server if session.exchange else None
        if req is not None and req.sql and "email" in req.sql and "INSERT" not in req.sql:
            req.meta["masked"] = {"email": 2}
        return None


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_openlineage_events(upstream: UpstreamDB, tmp: Path, direct: psycopg.Connection) -> None:
    direct.execute("DROP TABLE IF EXISTS lin_customers, lin_copy")
    direct.execute("CREATE TABLE lin_customers (id int, email text, country text)")
    direct.execute("INSERT INTO lin_customers VALUES (1, 'a@x.org', 'DE'), (2, 'b@x.org', 'FR')")
    direct.execute("CREATE TABLE lin_copy (email text)")
    log_file = tmp / "ol.jsonl"
    overrides = {"data_dir": str(tmp), "policy": POLICY,
                 "lineage": {"enabled": True, "namespace": "rowgate-test",
                             "transport": {"type": "file", "log_file_path": "ol.jsonl", "append": True}}}
    config = parse_config(base_config(upstream, tmp / "secrets", **overrides), tmp)
    recorder = build_recorder(config)
    assert recorder is not None
    pipeline = Pipeline([StatementGate(config.policy, recorder=recorder), MarkMasked(), AuditStage(recorder)])
    proxy = start_proxy(upstream, tmp, pipeline, **overrides)
    try:
        with psycopg.connect(proxy.dsn("alice"), autocommit=True, application_name="notebook") as conn:
            conn.execute("SELECT id, email FROM lin_customers WHERE country = 'DE'", prepare=False)
            conn.execute("INSERT INTO lin_copy SELECT email FROM lin_customers")
    finally:
        proxy.stop()
        recorder.close()  # drains the lineage queue

    events = _events(log_file)
    assert events, "no OpenLineage events written"
    for e in events:
        # the spec's required fields
        assert e["eventTime"] and e["producer"].startswith("https://") and e["schemaURL"].startswith("https://")
        assert uuid.UUID(e["run"]["runId"])
        assert e["job"]["namespace"] == "rowgate-test" and e["job"]["name"] == "alice.notebook"
        assert RunState(e["eventType"]) in (RunState.START, RunState.COMPLETE, RunState.FAIL)

    select = [e for e in events if "SELECT id, email" in e["job"]["facets"]["sql"]["query"]]
    assert [e["eventType"] for e in select] == ["START", "COMPLETE"]
    assert select[0]["run"]["runId"] == select[1]["run"]["runId"]
    done = select[1]
    namespace = f"postgres://{upstream.host}:{upstream.port}"
    assert done["inputs"] == [{"namespace": namespace, "name": "rowgate_test.public.lin_customers", "facets": {},
                               "inputFacets": {}}]
    (result,) = [o for o in done["outputs"] if "columnLineage" in o["facets"]]
    lineage = result["facets"]["columnLineage"]
    assert lineage["_schemaURL"].startswith("https://openlineage.io/spec/facets/")
    email = lineage["fields"]["email"]["inputFields"][0]
    assert email["namespace"] == namespace and email["name"] == "rowgate_test.public.lin_customers"
    assert email["field"] == "email"
    assert email["transformations"] == [{"type": "DIRECT", "subtype": "IDENTITY", "masking": True}]
    ident = lineage["fields"]["id"]["inputFields"][0]
    assert ident["transformations"][0]["masking"] is False
    (country,) = lineage["dataset"]
    assert country["field"] == "country" and country["transformations"][0]["type"] == "INDIRECT"
    assert country["transformations"][0]["subtype"] == "FILTER"
    assert done["run"]["facets"]["rowgate"]["identity"] == "alice"
    assert done["run"]["facets"]["rowgate"]["rows"] == 1

    insert = [e for e in events if e["job"]["facets"]["sql"]["query"].startswith("INSERT") and
              e["eventType"] == "COMPLETE"]
    assert insert and {"namespace": namespace, "name": "rowgate_test.public.lin_copy"} in [
        {"namespace": o["namespace"], "name": o["name"]} for o in insert[0]["outputs"]]

    # the lineage index answers the same question from the audit log
    cfg = write_cli_config(tmp)
    out = subprocess.run([sys.executable, "-m", "rowgate.cli", "lineage", "-c", str(cfg), "--column",
                          "rowgate_test.public.lin_customers.email", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    reads = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["identity"], r["masked"]) for r in reads] == [("alice", True), ("alice", False)]
    out = subprocess.run([sys.executable, "-m", "rowgate.cli", "lineage", "-c", str(cfg), "--identity", "alice"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "public.lin_customers.country" in out.stdout and "public.lin_customers.email" \
        in out.stdout
    direct.execute("DROP TABLE lin_customers, lin_copy")


def test_per_session_run(tmp: Path) -> None:
    """lineage.per: session — one run per client session with the union of what it read."""
    from rowgate.audit.lineage import LineageEmitter

    config = parse_config({"data_dir": str(tmp), "upstreams": {"app": {"database": "shop", "user": "x", "port": 5433}},
                           "lineage": {"enabled": True, "per": "session",
                                       "transport": {"type": "file", "log_file_path": "s.jsonl", "append": True}}},
                          tmp)
    emitter = LineageEmitter(config.lineage, config)
    who = {"replica": "r1", "session": 7, "identity": "agent", "database": "app", "application_name": "mcp"}
    emitter.session_started({**who, "seq": 1, "ts": "2026-01-01T00:00:00+00:00"})
    stmt = {**who, "seq": 2, "ts": "2026-01-01T00:00:01+00:00", "text": "SELECT upper(email) AS e FROM customers",
            "statements": [{"tables_read": ["public.customers"], "tables_written": [],
                            "columns": {"select": ["public.customers.email"]}}]}
    emitter.statement_started(stmt)  # no run of its own per session
    emitter.statement_completed(stmt, {**who, "seq": 3, "ts": "2026-01-01T00:00:02+00:00", "masked": {"e": 1},
                                       "rows": 1, "error": None})
    emitter.session_ended({**who, "seq": 4, "ts": "2026-01-01T00:00:03+00:00", "reason": None})
    emitter.close()
    events = _events(tmp / "s.jsonl")
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    assert events[1]["job"] == {"namespace": "rowgate", "name": "agent.mcp", "facets": events[1]["job"]["facets"]}
    assert events[1]["inputs"][0]["name"] == "shop.public.customers"
    assert events[1]["inputs"][0]["namespace"] == "postgres://127.0.0.1:5433"
    (result,) = events[1]["outputs"]
    (field,) = result["facets"]["columnLineage"]["fields"]["e"]["inputFields"]
    # traced by the analyzer's lineage: upper() is a transformation, and the column was masked
    assert field["transformations"] == [{"type": "DIRECT", "subtype": "TRANSFORMATION", "masking": True}]
