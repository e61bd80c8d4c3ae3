"""Ends sessions whose credential stopped being valid: a state-store token revoked
(seen by polling the store's change counter, so within ``auth.revocation_poll``
plus a poll), or a token or JWT past its deadline. The client gets a FATAL 28000
(``CredentialEnded``) naming the reason, and a statement still running upstream is
cancelled: closing the connection alone would not stop it before it next writes.

The same poll brings token changes into the audit log (``rowgate.audit.tokens``): the CLI
that makes them cannot write it."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rowgate.audit.tokens import TokenAudit
from rowgate.errors import CredentialEnded
from rowgate.proxy import upstream

if TYPE_CHECKING:
    from rowgate.proxy.server import ProxyServer
    from rowgate.proxy.session import ClientSession

log = logging.getLogger("rowgate.auth")


_cancels: set[asyncio.Task[None]] = set()  # referenced until done


def _end(server: ProxyServer, s: ClientSession, name: str, why: str, hint: str) -> None:
    log.warning("session %d of identity %r terminated: %s", s.info.id, name, why)
    up = s.upstream
    if s.info.pending and up is not None and up.key is not None and s.info.upstream is not None:
        db = s.info.upstream
        task = asyncio.create_task(
            upstream.send_cancel(db, server.config.upstreams[db], server.upstream_tls[db], up.key)
        )
        _cancels.add(task)
        task.add_done_callback(_cancels.discard)
    s.terminate(CredentialEnded(f"terminating connection: {why}", hint=hint))


async def watch_credentials(server: ProxyServer) -> None:
    store = server.auth.store
    version: int | None = None
    live: set[str] = set()
    tokens = TokenAudit(store, server.audit) if store is not None and server.audit is not None else None
    while True:
        await asyncio.sleep(server.config.auth.revocation_poll)
        if store is not None:
            try:
                current = await asyncio.to_thread(store.version)
                if current != version:
                    live = await asyncio.to_thread(store.live_ids)
                    version = current
                    if tokens is not None:
                        tokens.changed()
            except Exception as e:  # a store outage must not stop the deadline checks below
                log.error("cannot poll the token store for revocations: %s", e)
        now = time.time()
        for s in list(server.sessions.values()):
            login, p = s.login, s.info.principal
            if login is None or p is None:
                continue
            if login.token_id is not None and version is not None and login.token_id not in live:
                _end(server, s, p.name, f'the token of identity "{p.name}" was revoked',
                     "ask your administrator for a new token")
            elif login.deadline is not None and now >= login.deadline:
                what = "JWT" if login.method == "jwt" else "token"
                when = datetime.fromtimestamp(login.deadline, UTC).isoformat(timespec="seconds")
                _end(server, s, p.name, f'the {what} of identity "{p.name}" expired at {when}',
                     "log in again with a fresh credential")
        # after the sessions: a long catch-up (the first start) must not delay ending them
        if tokens is not None and tokens.due(now):
            try:
                await asyncio.to_thread(tokens.sync, now)
            except Exception as e:  # tried again at the next poll; the sessions are watched meanwhile
                log.error("audit: cannot record token changes yet: %s", e)
