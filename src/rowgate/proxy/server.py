"""The listener: accepts clients, enforces connection limits, maps cancel requests
to sessions, and shuts down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import signal
import sys
import time
from collections import Counter

from rowgate.audit.recorder import AuditRecorder
from rowgate.audit.setup import build_recorder
from rowgate.audit.stage import AuditStage
from rowgate.config import Config
from rowgate.errors import AdminShutdown, ConfigError, IdleSessionTimeout, TooManyConnections
from rowgate.identity.principal import Principal
from rowgate.masking import rewrite
from rowgate.pgwire import backend as be
from rowgate.pgwire.frontend import CancelRequest
from rowgate.proxy import upstream
from rowgate.proxy.gate import StatementGate
from rowgate.proxy.hooks import Pipeline, SessionInfo, Stage
from rowgate.proxy.login import Authenticator
from rowgate.proxy.masking_stage import MaskingStage
from rowgate.proxy.revocation import watch_credentials
from rowgate.proxy.session import ClientSession
from rowgate.proxy.tls import server_context, upstream_context

log = logging.getLogger("rowgate.server")


class ProxyServer:
    def __init__(self, config: Config, pipeline: Pipeline | None = None) -> None:
        self.config = config
        # the write-ahead audit log (None when it is off, or a caller brings its own pipeline)
        self.audit: AuditRecorder | None = build_recorder(config) if pipeline is None else None
        # masking on the wire (None when it is off, or a caller brings its own pipeline)
        self.masking = MaskingStage(config) if pipeline is None and config.masking.enabled else None
        if pipeline is None:
            checks = self.masking.checks if self.masking is not None else ()
            stages: list[Stage] = [StatementGate(config.policy, checks=checks, recorder=self.audit)]
            if self.masking is not None:
                stages.append(self.masking)
            if self.audit is not None:
                stages.append(AuditStage(self.audit))
            pipeline = Pipeline(stages)
        self.pipeline = pipeline
        self.tls_context = server_context(config.listen.tls, config.auth.mtls)
        self.upstream_tls = {n: upstream_context(u.tls, f"upstreams.{n}") for n, u in config.upstreams.items()}
        self.upstream_passwords = {
            n: u.password.resolve(f"upstreams.{n}.password") if u.password else None
            for n, u in config.upstreams.items()
        }
        self.auth = Authenticator(config, self.upstream_passwords)  # token store, OIDC, mTLS, throttle, access
        self.sessions: dict[int, ClientSession] = {}  # established sessions by the pid we gave the client
        self._connections = 0
        self._per_identity: Counter[str] = Counter()
        self._counted: set[int] = set()
        self._next_id = 0
        self._server: asyncio.Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._credential_watch: asyncio.Task[None] | None = None
        self._closing = False
        self.port = 0

    # --- listening ------------------------------------------------------------------

    async def start(self) -> None:
        listen = self.config.listen
        if self.masking is not None:  # classify the upstreams before the first client can read them
            await asyncio.get_running_loop().run_in_executor(None, self.masking.catalogs.start)
            if not rewrite.COMPILED:
                log.warning("masking runs its pure-Python row loop (%s): masked results cost several times "
                            "more CPU", "ROWGATE_PURE_PYTHON is set" if rewrite.BUILT
                            else "rowgate.masking._rowmask was not built: reinstall with a C compiler and "
                            "OpenSSL headers")
        try:
            self._server = await asyncio.start_server(
                self._accept, listen.host, listen.port, backlog=1024, reuse_address=True
            )
        except OSError as e:
            raise ConfigError(f"listen: cannot listen on {listen.host}:{listen.port}: {e.strerror}") from e
        self.port = self._server.sockets[0].getsockname()[1]
        self._watchdog = asyncio.create_task(self._watch_idle())
        self._credential_watch = asyncio.create_task(watch_credentials(self))
        log.info(
            "rowgate listening on %s:%d (tls %s), upstreams: %s",
            listen.host,
            self.port,
            listen.tls.mode,
            ", ".join(self.config.upstreams),
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        self._connections += 1
        self._next_id += 1
        session = ClientSession(self, reader, writer, self._next_id)
        try:
            await session.run()
        finally:
            self._connections -= 1

    def session_infos(self) -> list[SessionInfo]:
        return [s.info for s in self.sessions.values()]

    # --- limits ---------------------------------------------------------------------

    def admit(self) -> None:
        limit = self.config.limits.max_connections
        if self._connections > limit:
            raise TooManyConnections(
                "sorry, too many clients already",
                detail=f"rowgate accepts at most {limit} client connections (limits.max_connections)",
            )

    def admit_identity(self, session: ClientSession, principal: Principal) -> None:
        limit = self.config.limits.max_connections_per_identity
        if self._per_identity[principal.name] >= limit:
            raise TooManyConnections(
                f'too many connections for identity "{principal.name}"',
                detail=f"each identity may hold at most {limit} connections (limits.max_connections_per_identity)",
                hint="close idle connections or use a connection pool",
            )
        self._per_identity[principal.name] += 1
        self._counted.add(id(session))

    def login_failed(self, user: str, client_addr: str) -> None:
        log.warning("failed login for identity %r from %s", user, client_addr)
        if self.audit is not None:
            self.audit.login_refused(user, client_addr)

    # --- sessions and cancel --------------------------------------------------------

    def register(self, session: ClientSession) -> be.BackendKeyData:
        if self._closing:  # shutdown drained the sessions it found; this one came too late
            raise self.shutdown_error()
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self.sessions:
                break
        self.sessions[pid] = session
        return be.BackendKeyData(pid, secrets.token_bytes(4))

    def unregister(self, session: ClientSession) -> None:
        if session.key is not None and self.sessions.get(session.key.pid) is session:
            del self.sessions[session.key.pid]
        if id(session) in self._counted:
            self._counted.discard(id(session))
            assert session.info.principal is not None
            self._per_identity[session.info.principal.name] -= 1

    async def cancel(self, req: CancelRequest) -> None:
        session = self.sessions.get(req.pid)
        if session is None or session.key is None or not hmac.compare_digest(session.key.secret, req.secret):
            log.warning("cancel request with an unknown key ignored")
            return
        up = session.upstream
        if up is None or up.key is None:
            return
        name = session.info.upstream
        log.info("session %d: cancel requested", session.info.id)
        await upstream.send_cancel(name, self.config.upstreams[name], self.upstream_tls[name], up.key)

    async def _watch_idle(self) -> None:
        timeout = self.config.limits.idle_timeout
        while True:
            await asyncio.sleep(1 if timeout == 0 or timeout >= 2 else timeout / 2)
            if timeout == 0:
                continue
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.info.pending == 0 and now - s.last_activity > timeout:
                    s.terminate(
                        IdleSessionTimeout(
                            "terminating connection due to idle-session timeout",
                            detail=f"limits.idle_timeout is {timeout:g}s",
                        )
                    )

    # --- shutdown -------------------------------------------------------------------

    @staticmethod
    def shutdown_error() -> AdminShutdown:
        return AdminShutdown("terminating connection because rowgate is shutting down")

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting; let running statements finish for up to ``timeout``
        seconds (limits.shutdown_timeout by default); then close what is left."""
        timeout = self.config.limits.shutdown_timeout if timeout is None else timeout
        self._closing = True
        if self.masking is not None:
            self.masking.catalogs.stop()
        if self._server is not None:
            self._server.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._credential_watch is not None:
            self._credential_watch.cancel()
        log.info("shutting down: %d sessions open, waiting up to %gs", len(self.sessions), timeout)
        for s in list(self.sessions.values()):
            s.drain()
        deadline = time.monotonic() + timeout
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for s in list(self.sessions.values()):
            s.terminate(self.shutdown_error())
        while self._connections and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.05)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
        if self.audit is not None:  # commit, sign a last checkpoint, fsync
            self.audit.close()
            self.audit = None
        self.auth.close()


async def _serve(config: Config, pipeline: Pipeline | None) -> int:
    server = ProxyServer(config, pipeline)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown()
    log.info("rowgate stopped")
    return 0


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def serve(config: Config, pipeline: Pipeline | None = None) -> int:
    """Run the proxy in the foreground until SIGTERM or SIGINT; return the exit code.
    ``pipeline`` replaces the statement gate (only the benchmark's bare relay does that)."""
    setup_logging()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(config, pipeline))
    return int(uvloop.run(_serve(config, pipeline)))
