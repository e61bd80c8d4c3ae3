"""One client connection: start-up (TLS, authentication, upstream login), then the
relay of messages in both directions through the pipeline's hook point.

The relay's fast path forwards the bytes it read, unchanged and in the batches they
arrived in; the framer only tracks message boundaries, ReadyForQuery and limits.
Messages are decoded only for the types some stage asked for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from rowgate.errors import (
    FeatureNotSupported,
    InvalidAuthorization,
    ProtocolViolation,
    RowgateError,
    StartupTimeout,
    UnknownDatabase,
)
from rowgate.identity.access import application_name
from rowgate.identity.principal import Principal
from rowgate.pgwire import backend as be
from rowgate.pgwire.framing import Frame, Framer
from rowgate.pgwire.frontend import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    StartupPacket,
    decode_startup,
)
from rowgate.proxy import upstream
from rowgate.proxy.hooks import SessionInfo
from rowgate.proxy.login import LoginResult
from rowgate.proxy.relay import Relay, stream_buffer, take_buffered

if TYPE_CHECKING:
    from rowgate.proxy.server import ProxyServer

log = logging.getLogger("rowgate.session")

READ_SIZE = 256 * 1024
MAX_AUTH_MESSAGE = 65535  # PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH, for messages before authentication
MAX_USER_NAME = 256  # an e-mail address fits; PostgreSQL's own role names stop at 63 bytes
_Q, _E, _S, _F, _X = (ord(c) for c in "QESFX")
_Z, _PARAM, _COPY_IN = ord("Z"), ord("S"), ord("G")
_COPY_END = frozenset(b"cf")  # CopyDone, CopyFail

# Startup parameters passed on to the upstream. Anything else is dropped: in
# particular 'options' could carry '-c role=...' and run as another database role.
FORWARDED_PARAMS = frozenset(
    {
        "application_name",
        "client_encoding",
        "DateStyle",
        "datestyle",
        "TimeZone",
        "timezone",
        "IntervalStyle",
        "intervalstyle",
        "extra_float_digits",
        "search_path",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
        "bytea_output",
        "geqo",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "default_transaction_isolation",
        "default_transaction_read_only",
    }
)

# read by rowgate itself, never forwarded
_CONSUMED_PARAMS = frozenset({"user", "database", "replication", "options"})


class ClientSession:
    def __init__(
        self, server: ProxyServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sid: int
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "local")
        self.info = SessionInfo(id=sid, principal=None, client_addr=addr)
        limits = server.config.limits
        self.framer = Framer(
            max_length=limits.max_message_size,
            max_startup_length=limits.max_startup_packet,
            startup=True,
            peer="client",
        )
        self._events: deque[Frame] = deque()
        self.upstream: upstream.UpstreamConnection | None = None
        self.key: be.BackendKeyData | None = None
        self.last_activity = time.monotonic()
        self.draining = False
        self.copy_in = False  # between CopyInResponse and the client's CopyDone or CopyFail
        self._ending: RowgateError | None = None
        self._relayed: Relay | None = None
        self.login: LoginResult | None = None  # how the client proved who it is (None until it has)

    # --- life cycle -------------------------------------------------------------

    async def run(self) -> None:
        started = time.monotonic()
        try:
            try:
                async with asyncio.timeout(self.server.config.limits.startup_timeout):
                    ready = await self._startup()
            except TimeoutError:
                raise StartupTimeout(
                    "rowgate: start-up took too long",
                    detail=f"limits.startup_timeout is {self.server.config.limits.startup_timeout:g}s",
                ) from None
            if ready:
                self._log_start()
                await self._relay()
        except RowgateError as e:
            self._ending = self._ending or e
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as e:
            log.debug("session %d: connection lost: %s", self.info.id, e)
        except asyncio.CancelledError:
            pass
        finally:
            await self._close()
            if self.info.principal is not None:
                log.info(
                    "session %d end identity=%s statements=%d duration=%.1fs%s",
                    self.info.id,
                    self.info.principal.name,
                    self.info.statements,
                    time.monotonic() - started,
                    f" reason={self._ending.sqlstate}: {self._ending.message}" if self._ending else "",
                )
                if self.server.audit is not None:
                    reason = f"{self._ending.sqlstate}: {self._ending.message}" if self._ending else None
                    with contextlib.suppress(RowgateError):  # a lost session_end must not hide the ending
                        self.server.audit.session_end(self.info, time.monotonic() - started, reason)

    def terminate(self, error: RowgateError) -> None:
        """End the session from outside (shutdown, idle timeout, revocation): the
        client gets ``error`` if the stream is at a message boundary."""
        if self._ending is None:
            self._ending = error
        if self._relayed is not None:
            self._relayed.finish(None)

    def drain(self) -> None:
        """Close once the statement in progress has finished."""
        self.draining = True
        if self.info.pending == 0:
            self.terminate(self.server.shutdown_error())

    async def _close(self) -> None:
        err = self._ending
        up_at_boundary = self.upstream is None or self.upstream.framer.at_boundary
        if err is not None and up_at_boundary and not self.writer.is_closing():
            with contextlib.suppress(Exception):
                self.writer.write(self._error_bytes(err))
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                # a Terminate after half a forwarded message would become that message's tail
                if not self.upstream.writer.is_closing() and self.framer.at_boundary:
                    self.upstream.writer.write(b"X\x00\x00\x00\x04")
                self.upstream.writer.close()
        self.server.unregister(self)
        with contextlib.suppress(Exception):
            self.writer.close()
            if self._relayed is None:  # once relayed, the stream protocol no longer sees the close
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()

    @staticmethod
    def _error_bytes(err: RowgateError) -> bytes:
        return be.error_response(
            err.sqlstate, err.message, severity=err.severity, detail=err.detail, hint=err.hint
        ).encode()

    def _log_start(self) -> None:
        p = self.info.principal
        assert p is not None
        log.info(
            "session %d start identity=%s kind=%s groups=%s client=%s upstream=%s upstream_pid=%s "
            "application=%r tls=%s",
            self.info.id,
            p.name,
            p.kind,
            ",".join(p.groups) or "-",
            self.info.client_addr,
            self.info.upstream,
            # the DBA's reliable link from pg_stat_activity to the identity: the client can SET
            # application_name, it cannot change its backend's pid
            self.upstream.key.pid if self.upstream is not None and self.upstream.key is not None else "-",
            self.info.application_name,
            "yes" if self.info.tls else "no",
        )
        if self.server.audit is not None:
            self.server.audit.session_start(self.info)  # fail closed: no session without its record

    # --- start-up -------------------------------------------------------------------

    async def _next_frame(self) -> Frame:
        while not self._events:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            self._events.extend(self.framer.feed(data))
        return self._events.popleft()

    async def _read_startup_packet(self) -> StartupPacket:
        return decode_startup((await self._next_frame()).payload)

    def _unread_bytes(self) -> int:
        return self.framer.pending + len(self._events) + len(stream_buffer(self.reader))

    async def _startup(self) -> bool:
        """Negotiate, authenticate and log in upstream. False for a CancelRequest."""
        pkt = await self._read_startup_packet()
        negotiated_ssl = negotiated_gss = False
        while isinstance(pkt, SSLRequest | GSSENCRequest):
            # bytes sent after SSLRequest but before the handshake would be read as if
            # they came over TLS: refuse them (the flaw of CVE-2021-23214). PostgreSQL
            # refuses them after a GSSENCRequest too, whatever it answers.
            if self._unread_bytes():
                kind = "SSL" if isinstance(pkt, SSLRequest) else "GSSAPI encryption"
                raise ProtocolViolation(f"received unencrypted data after {kind} request")
            if isinstance(pkt, SSLRequest):
                if negotiated_ssl:
                    raise ProtocolViolation("duplicate SSLRequest")
                negotiated_ssl = True
                ctx = self.server.tls_context
                if ctx is None:
                    self.writer.write(b"N")
                else:
                    self.writer.write(b"S")
                    await self.writer.drain()
                    await self.writer.start_tls(ctx)
                    self.info.tls = True
            else:
                if negotiated_gss or negotiated_ssl:
                    raise ProtocolViolation("unexpected GSSENCRequest")
                negotiated_gss = True
                self.writer.write(b"N")
            await self.writer.drain()
            pkt = await self._read_startup_packet()
        if isinstance(pkt, CancelRequest):
            await self.server.cancel(pkt)
            return False
        assert isinstance(pkt, StartupMessage)
        self.framer.startup = False  # from here on every message carries a type byte
        # until the client has authenticated, nothing it sends may claim more memory than
        # an authentication message needs (limits.max_message_size applies afterwards)
        self.framer.max_length = min(self.framer.max_length, MAX_AUTH_MESSAGE)
        self._events.extend(self.framer.feed(b""))
        await self._login(pkt)
        return True

    def _check_startup(self, pkt: StartupMessage) -> tuple[str, str]:
        if self.server.config.listen.tls.mode == "required" and not self.info.tls:
            raise InvalidAuthorization(
                "rowgate requires an encrypted connection", hint="connect with sslmode=require (or stronger)"
            )
        user = pkt.get("user")
        if not user:
            raise InvalidAuthorization("no user name specified in the startup packet")
        if not user.isprintable():  # not UTF-8 (undecodable bytes arrive as surrogates) or control characters
            raise InvalidAuthorization("the user name must be printable UTF-8 text")
        if len(user) > MAX_USER_NAME:  # names are kept (throttle counters, logs): no 10 kB ones
            raise InvalidAuthorization(f"the user name is too long (at most {MAX_USER_NAME} characters)")
        replication = (pkt.get("replication") or "false").lower()
        if replication not in ("false", "off", "no", "0"):
            raise FeatureNotSupported("replication connections are not supported through rowgate")
        if (pkt.get("options") or "").strip():
            raise FeatureNotSupported(
                "the startup 'options' parameter is not supported through rowgate",
                hint="remove PGOPTIONS/options and use SET after connecting",
            )
        return user, pkt.get("database") or user

    async def _login(self, pkt: StartupMessage) -> None:
        user, database = self._check_startup(pkt)
        unsupported = tuple(k for k, _ in pkt.params if k.startswith("_pq_."))
        if pkt.minor > 0 or unsupported:
            self.writer.write(be.NegotiateProtocolVersion(0, unsupported).encode())
        self.server.admit()
        principal = await self._authenticate(user)
        self.framer.max_length = self.server.config.limits.max_message_size
        self.info.principal = principal
        cfg = self.server.config.upstreams.get(database)
        if cfg is None:
            raise UnknownDatabase(
                f'database "{database}" does not exist',
                hint="the database name selects a rowgate upstream; ask your administrator which ones you may use",
            )
        role = self.server.auth.access.role(principal, database)
        self.server.admit_identity(self, principal)
        self.info.upstream = database
        self.info.database_environment = cfg.environment
        self.info.application_name = pkt.get("application_name") or ""
        # the DBA sees who it is (auth.application_name); the client keeps seeing its own
        shown = application_name(self.server.config.auth.application_name, principal, self.info.application_name)
        params = [(k, v) for k, v in pkt.params if k in FORWARDED_PARAMS and k != "application_name"]
        params.append(("application_name", shown))
        self.upstream = await upstream.connect(
            database,
            cfg if role.user == cfg.user else cfg.model_copy(update={"user": role.user}),
            self.server.upstream_tls[database],
            role.password,
            params,
            self.server.config.limits.max_message_size,
        )
        self.key = self.server.register(self)
        out = [be.Authentication(be.AUTH_OK).encode()]
        for raw in self.upstream.startup_messages:
            if raw[0] == _PARAM:
                msg = be.decode_backend(raw[0], raw[5:])
                assert isinstance(msg, be.ParameterStatus)
                if msg.name == "application_name":  # the client sees its own, not the DBA's view
                    msg = be.ParameterStatus(msg.name, self.info.application_name)
                    raw = msg.encode()
                self.info.parameters[msg.name] = msg.value
            out.append(raw)
        # PostgreSQL reports search_path only from version 18 on; the gate needs the one the
        # session starts with to resolve names (and see shadowed built-ins) as the server does
        for name, value in params:
            if name == "search_path":
                self.info.parameters.setdefault(name, value)
        dropped = sorted(
            {k for k, _ in pkt.params if k not in FORWARDED_PARAMS | _CONSUMED_PARAMS and not k.startswith("_pq_.")}
        )
        if dropped:
            out.append(
                be.error_response(
                    "01000",
                    f"rowgate did not apply the startup parameters {', '.join(dropped)}",
                    severity="WARNING",
                    hint="run SET after connecting; the statement is then checked like any other",
                    notice=True,
                ).encode()
            )
        out.append(self.key.encode())
        out.append(be.ReadyForQuery("I").encode())
        self.writer.writelines(out)
        await self.writer.drain()

    async def _authenticate(self, user: str) -> Principal:
        self.login = await self.server.auth.login(self, user)
        return self.login.principal

    # --- relay ----------------------------------------------------------------------

    async def _relay(self) -> None:
        assert self.upstream is not None
        backlog = list(self._events)  # messages the client pipelined right behind its login
        self._events.clear()
        # and the start of the next one: the framer kept those bytes without forwarding
        # them, while from here on it only tracks bytes the relay forwards itself
        client_bytes = self.framer.take_pending() + take_buffered(self.reader)
        client = cast(asyncio.Transport, self.writer.transport)
        up = cast(asyncio.Transport, self.upstream.writer.transport)
        self._relayed = Relay(self, client, up)
        if self._ending is not None:  # terminated while logging in
            return
        await self._relayed.run(backlog, client_bytes, take_buffered(self.upstream.reader))

    def track_frontend(self, parts: Sequence[bytes | Frame]) -> bool:
        """Count statements and outstanding syncs; True once the client said Terminate."""
        for ev in parts:
            if type(ev) is Frame:
                t = ev.type
                if t == _Q:
                    self.info.pending += 1
                    self.info.statements += 1
                elif t == _E:
                    self.info.statements += 1
                elif t == _F or (t == _S and not self.copy_in):
                    # PostgreSQL ignores a Sync during COPY FROM STDIN: no ReadyForQuery answers it
                    self.info.pending += 1
                elif t in _COPY_END:
                    self.copy_in = False
                elif t == _X:
                    return True
        return False

    def track_backend(self, parts: Sequence[bytes | Frame]) -> None:
        for ev in parts:
            if type(ev) is Frame:
                t = ev.type
                if t == _Z:
                    self.info.pending = max(0, self.info.pending - 1)
                    self.info.transaction_status = chr(ev.raw[5])
                elif t == _COPY_IN:
                    self.copy_in = True
                elif t == _PARAM:
                    msg = be.decode_backend(t, ev.payload)
                    assert isinstance(msg, be.ParameterStatus)
                    self.info.parameters[msg.name] = msg.value
