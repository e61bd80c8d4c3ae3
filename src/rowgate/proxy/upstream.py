"""Connecting to an upstream PostgreSQL with the credentials rowgate holds."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from rowgate.config import Upstream
from rowgate.errors import ProtocolViolation, RowgateError, UpstreamUnavailable
from rowgate.pgwire import backend as be
from rowgate.pgwire.auth import ScramClientExchange, md5_response
from rowgate.pgwire.buffer import cstr
from rowgate.pgwire.framing import Frame, Framer
from rowgate.pgwire.frontend import PROTOCOL_3_0, CancelRequest, PasswordMessage, SSLRequest, StartupMessage
from rowgate.proxy.relay import stream_buffer

log = logging.getLogger("rowgate.upstream")
READ_SIZE = 256 * 1024


@dataclass
class UpstreamConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    key: be.BackendKeyData | None
    # ParameterStatus and NoticeResponse messages of the startup, to replay to the client
    startup_messages: list[bytes] = field(default_factory=list)
    framer: Framer = field(default_factory=Framer)
    tls: bool = False


async def _open(
    name: str, cfg: Upstream, ctx: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    try:
        if cfg.host.startswith("/"):
            reader, writer = await asyncio.open_unix_connection(f"{cfg.host}/.s.PGSQL.{cfg.port}")
        else:
            reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
    except OSError as e:
        raise UpstreamUnavailable(
            f"rowgate cannot reach upstream database {name!r}", detail=f"{cfg.host}:{cfg.port}: {e.strerror or e}"
        ) from e
    if ctx is None:
        return reader, writer, False
    try:
        return reader, writer, await _negotiate_tls(name, cfg, ctx, reader, writer)
    except BaseException:
        # also on a timeout while the upstream keeps silent: the socket would stay open
        writer.close()
        raise


async def _negotiate_tls(
    name: str, cfg: Upstream, ctx: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    """SSLRequest and handshake; True if the connection is now encrypted."""
    writer.write(SSLRequest().encode())
    answer = await reader.readexactly(1)
    if answer == b"S":
        # bytes sent after 'S' but before the handshake would be read as if they came over
        # TLS: a man in the middle could inject a fake login (the flaw of CVE-2021-23222)
        if stream_buffer(reader):
            raise UpstreamUnavailable(
                f"upstream database {name!r} sent unencrypted data after agreeing to TLS",
                detail="possible man-in-the-middle attack; the connection was closed",
            )
        try:
            await writer.start_tls(ctx, server_hostname=cfg.tls.server_name or cfg.host)
        except (ssl.SSLError, OSError) as e:
            raise UpstreamUnavailable(f"TLS to upstream database {name!r} failed", detail=str(e)) from e
        return True
    if answer == b"N" and cfg.tls.mode == "prefer":
        return False
    raise UpstreamUnavailable(f"upstream database {name!r} does not accept TLS, which the config requires")


async def _read_frame(conn: UpstreamConnection, pending: list[Frame]) -> Frame:
    while not pending:
        data = await conn.reader.read(READ_SIZE)
        if not data:
            raise UpstreamUnavailable("the upstream database closed the connection during start-up")
        for ev in conn.framer.feed(data):
            if not isinstance(ev, Frame):
                raise ProtocolViolation("unexpected streamed message from upstream during start-up")
            pending.append(ev)
    return pending.pop(0)


async def _authenticate(conn: UpstreamConnection, name: str, cfg: Upstream, password: str | None) -> list[Frame]:
    pending: list[Frame] = []
    scram: ScramClientExchange | None = None
    scram_verified = False
    while True:
        f = await _read_frame(conn, pending)
        if f.type == ord("E"):
            err = be.decode_backend(f.type, f.payload)
            assert isinstance(err, be.ErrorResponse)
            log.warning("upstream %s refused rowgate's login: %s %s", name, err.sqlstate, err.message)
            raise UpstreamUnavailable(
                f"rowgate could not log in to upstream database {name!r}",
                detail=f"the upstream said: {err.message} (SQLSTATE {err.sqlstate})",
                hint="an operator must check the upstream's user and password in the rowgate config",
            )
        if f.type != ord("R"):
            pending.insert(0, f)
            return pending
        auth = be.decode_backend(f.type, f.payload)
        assert isinstance(auth, be.Authentication)
        if auth.code == be.AUTH_OK:
            if scram is not None and not scram_verified:
                # only the final SCRAM message proves the server knows the password: an
                # impostor would skip it
                raise UpstreamUnavailable(
                    f"upstream database {name!r} ended the SCRAM exchange without proving its identity",
                    detail="possible man-in-the-middle attack; the connection was closed",
                )
            continue
        if auth.code in (be.AUTH_CLEARTEXT, be.AUTH_MD5, be.AUTH_SASL) and password is None:
            raise UpstreamUnavailable(
                f"upstream database {name!r} asks for a password and the config gives none",
                hint=f"set upstreams.{name}.password",
            )
        assert password is not None or auth.code in (be.AUTH_SASL_CONTINUE, be.AUTH_SASL_FINAL)
        if auth.code == be.AUTH_CLEARTEXT:
            assert password is not None
            conn.writer.write(PasswordMessage(cstr(password)).encode())
        elif auth.code == be.AUTH_MD5:
            assert password is not None
            conn.writer.write(PasswordMessage(md5_response(cfg.user, password, auth.data[:4])).encode())
        elif auth.code == be.AUTH_SASL:
            assert password is not None
            scram = ScramClientExchange(auth.mechanisms(), cfg.user, password)
            conn.writer.write(PasswordMessage(scram.initial()).encode())
        elif auth.code == be.AUTH_SASL_CONTINUE and scram is not None:
            conn.writer.write(PasswordMessage(scram.respond(auth.data)).encode())
        elif auth.code == be.AUTH_SASL_FINAL and scram is not None and not scram_verified:
            scram.finish(auth.data)
            scram_verified = True
        else:
            raise UpstreamUnavailable(
                f"upstream database {name!r} asks for an authentication method rowgate does not support "
                f"(code {auth.code}); use trust, password, md5 or scram-sha-256"
            )
        await conn.writer.drain()


async def connect(
    name: str,
    cfg: Upstream,
    ctx: ssl.SSLContext | None,
    password: str | None,
    params: list[tuple[str, str]],
    max_message: int,
) -> UpstreamConnection:
    """Open, authenticate and run the upstream's start-up up to its first
    ReadyForQuery. Raises UpstreamUnavailable with a message safe for the client."""
    try:
        async with asyncio.timeout(cfg.connect_timeout):
            reader, writer, tls = await _open(name, cfg, ctx)
            conn = UpstreamConnection(reader, writer, None, framer=Framer(max_length=max_message, peer="upstream"))
            conn.tls = tls
            try:
                startup = StartupMessage(PROTOCOL_3_0, (("user", cfg.user), ("database", cfg.database), *params))
                writer.write(startup.encode())
                await writer.drain()
                pending = await _authenticate(conn, name, cfg, password)
                while True:
                    f = await _read_frame(conn, pending)
                    if f.type == ord("K"):
                        key = be.decode_backend(f.type, f.payload)
                        assert isinstance(key, be.BackendKeyData)
                        conn.key = key
                    elif f.type in (ord("S"), ord("N")):
                        conn.startup_messages.append(f.raw)
                    elif f.type == ord("Z"):
                        if pending or conn.framer.pending:
                            raise ProtocolViolation("upstream sent data after its start-up ReadyForQuery")
                        return conn
                    elif f.type == ord("E"):
                        err = be.decode_backend(f.type, f.payload)
                        assert isinstance(err, be.ErrorResponse)
                        raise UpstreamUnavailable(
                            f"upstream database {name!r} refused the session",
                            detail=f"the upstream said: {err.message} (SQLSTATE {err.sqlstate})",
                        )
                    elif f.type != ord("v"):
                        raise ProtocolViolation(f"unexpected message {chr(f.type)!r} from upstream during start-up")
            except BaseException:
                writer.close()
                raise
    except TimeoutError as e:
        raise UpstreamUnavailable(
            f"upstream database {name!r} did not answer within {cfg.connect_timeout:g}s"
        ) from e
    except (OSError, asyncio.IncompleteReadError) as e:
        raise UpstreamUnavailable(f"connection to upstream database {name!r} failed", detail=str(e)) from e
    except ProtocolViolation as e:
        raise UpstreamUnavailable(f"upstream database {name!r} broke the protocol", detail=e.message) from e


async def send_cancel(name: str, cfg: Upstream, ctx: ssl.SSLContext | None, key: be.BackendKeyData) -> None:
    """Forward a cancel with the upstream's own key. Errors are logged, never raised:
    PostgreSQL gives the canceller no answer either way."""
    try:
        async with asyncio.timeout(cfg.connect_timeout):
            _reader, writer, _tls = await _open(name, cfg, ctx)
            try:
                writer.write(CancelRequest(key.pid, key.secret).encode())
                await writer.drain()
            finally:
                writer.close()
    except (RowgateError, OSError, TimeoutError, asyncio.IncompleteReadError) as e:
        log.warning("cancel to upstream %s failed: %s", name, e)
