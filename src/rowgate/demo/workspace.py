"""The demo's files in its data directory: one token per demo identity (created once, then
reused so DSNs users saved keep working), ``rowgate.yaml`` and ``connections.json``."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from rowgate.demo.data import DATABASE


@dataclass(frozen=True)
class DemoIdentity:
    name: str
    groups: tuple[str, ...]
    kind: str
    role: str  # one line for the banner


IDENTITIES: tuple[DemoIdentity, ...] = (
    DemoIdentity("alice", ("analysts",), "human", "analyst: reads, PII masked"),
    DemoIdentity("bob", ("engineers",), "human", "engineer: reads and writes, risky writes need approval"),
    DemoIdentity("dana", ("dpo", "approvers"), "human", "data protection officer: approves, may unmask"),
    DemoIdentity("agent", ("agents",), "agent", "AI agent: read-only, PII masked"),
)

CONFIG_NAME = "rowgate.yaml"
AUDIT_KEY_NAME = "audit-signing.key"  # Ed25519, PEM, in SECRETS_DIR
LINEAGE_FILE = "openlineage.jsonl"  # OpenLineage RunEvents, one JSON per line
CONNECTIONS_NAME = "connections.json"
SECRETS_DIR = "secrets"


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers (a test polling for the file, a user's script) never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask and ignored for an existing file
    os.replace(tmp, path)


def token_path(data_dir: Path, name: str) -> Path:
    return data_dir / SECRETS_DIR / f"{name}.token"


def ensure_tokens(data_dir: Path) -> dict[str, str]:
    """A URL-safe random token per identity in ``secrets/<name>.token`` (0600), kept across runs."""
    secrets_dir = data_dir / SECRETS_DIR
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    tokens: dict[str, str] = {}
    for ident in IDENTITIES:
        path = token_path(data_dir, ident.name)
        token = path.read_text().strip() if path.exists() else ""
        if token:
            os.chmod(path, 0o600)  # tighten a copy restored with looser permissions
        else:
            token = secrets.token_urlsafe(24)
            _write_atomic(path, token + "\n", 0o600)
        tokens[ident.name] = token
    return tokens


def config_document(data_dir: Path, *, port: int, control_port: int, pg_port: int) -> dict[str, Any]:
    """The demo's rowgate.yaml as data. Paths are relative so the directory can be moved."""
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "control": {"host": "127.0.0.1", "port": control_port},
        "limits": {},
        "data_dir": ".",
        "identities": {
            ident.name: {
                "kind": ident.kind,
                "groups": list(ident.groups),
                "token": {"file": f"{SECRETS_DIR}/{ident.name}.token"},
            }
            for ident in IDENTITIES
        },
        "upstreams": {
            DATABASE: {
                "host": "127.0.0.1",
                "port": pg_port,
                "database": DATABASE,
                "user": "postgres",  # the embedded server trusts local TCP, so no password
                "environment": "production",
            }
        },
        "policy": DEMO_POLICY,
        # everyone sees PII masked (columns classified automatically), except the DPO
        "masking": {"rules": [{"groups": ["dpo"], "unmask": True,
                               "reason": "data protection officer: reviews personal data"}]},
        # every statement in data_dir/audit.db, checkpoints signed with the demo's own key
        "audit": {"signing_key_file": f"{SECRETS_DIR}/{AUDIT_KEY_NAME}"},
        "lineage": {"enabled": True, "per": "statement",
                    "transport": {"type": "file", "log_file_path": LINEAGE_FILE, "append": True}},
    }


# Written against groups, so a token created later for group analysts behaves like alice.
DEMO_POLICY: dict[str, Any] = {
    "mode": "enforce",
    "default": "allow",
    "rules": [
        {
            "id": "agents-read-only",
            "description": "AI agents may read, nothing else",
            "match": {"groups": ["agents"], "statement_kinds": ["write", "ddl", "dcl", "procedural"]},
            "action": "deny",
            "message": "AI agents are read-only",
            "hint": "run writes as a human identity",
        },
        {
            "id": "analysts-read-only",
            "match": {"groups": ["analysts"], "statement_kinds": ["write", "ddl", "dcl", "procedural"]},
            "action": "deny",
            "message": "analysts have read access only",
            "hint": "ask an engineer, or your administrator for write access",
        },
        {
            "id": "payments-changes-need-approval",
            "description": "changing payment records needs a second person",
            "match": {"groups": ["engineers"], "commands": ["UPDATE", "DELETE", "MERGE"], "tables": ["*.payments"]},
            "action": "require_approval",
            "message": "changes to payments need approval by someone in approvers",
        },
    ],
}


_CONFIG_HEADER = """\
# Written by `rowgate demo` on every start (the embedded PostgreSQL port may change);
# edits are overwritten. Copy this file elsewhere and use `rowgate serve -c FILE` to keep them.
"""


def write_config(data_dir: Path, *, port: int, control_port: int, pg_port: int) -> Path:
    path = data_dir / CONFIG_NAME
    doc = config_document(data_dir, port=port, control_port=control_port, pg_port=pg_port)
    _write_atomic(path, _CONFIG_HEADER + yaml.safe_dump(doc, sort_keys=False))
    return path.resolve()


def proxy_dsn(name: str, token: str, port: int, host: str = "127.0.0.1", database: str = DATABASE) -> str:
    return f"postgresql://{quote(name, safe='')}:{quote(token, safe='')}@{host}:{port}/{database}"


def connections_document(
    tokens: dict[str, str], *, port: int, control_port: int, upstream_dsn: str, config_path: Path
) -> dict[str, Any]:
    return {
        "identities": {ident.name: proxy_dsn(ident.name, tokens[ident.name], port) for ident in IDENTITIES},
        "upstream": upstream_dsn,
        "control": f"http://127.0.0.1:{control_port}",
        "config": str(config_path),
    }


def write_connections(data_dir: Path, doc: dict[str, Any]) -> Path:
    path = data_dir / CONNECTIONS_NAME
    # 0600: the file holds every demo identity's token.
    _write_atomic(path, json.dumps(doc, indent=2) + "\n", 0o600)
    return path


def banner(doc: dict[str, Any]) -> str:
    width = max(len(i.name) for i in IDENTITIES)
    lines = ["", "rowgate demo is running. Connect through the proxy as:", ""]
    for ident in IDENTITIES:
        lines.append(f"  {ident.name:<{width}}  (groups: {', '.join(ident.groups)}; intended role: {ident.role})")
        lines.append(f'  {"":<{width}}  psql "{doc["identities"][ident.name]}"')
    lines += [
        "",
        f"  upstream (direct, bypasses rowgate):  psql \"{doc['upstream']}\"",
        f"  config:                               {doc['config']}",
        "",
        "Try as alice:  SELECT full_name, email, national_id, notes FROM customers LIMIT 5;",
        "Try as bob:    DELETE FROM orders;   (stopped by a guardrail)",
        "Try as dana:   the same SELECT shows raw values (group dpo may unmask; every read is audited).",
        f"Audit log:  rowgate audit search -c {doc['config']} --identity alice    (and: audit verify, lineage)",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)
