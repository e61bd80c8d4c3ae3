"""Findings of the second security review of the start-up, SCRAM, framing and relay
code, each shown against the real proxy with a raw socket or a real client."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from proxyutil import TOKENS, RunningProxy, UpstreamDB, raw_login, start_proxy

from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.auth import ScramClientExchange
from rowgate.pgwire.framing import Frame, Framer
from rowgate.proxy.hooks import Action, Pipeline, SessionInfo

# --- helpers ------------------------------------------------------------------------

Script = Callable[[socket.socket], object]


class Conn:
    """A raw client socket that decodes what the proxy answers."""

    def __init__(self, port: int, timeout: float = 5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._framer = Framer(peer="proxy")
        self._pending: list[be.BackendMessage] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self) -> be.BackendMessage | None:
        """The next backend message, or None once the proxy closed the connection."""
        while not self._pending:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                data = b""
            if not data:
                self.closed = True
                return None
            for ev in self._framer.feed(data):
                assert isinstance(ev, Frame)
                self._pending.append(be.decode_backend(ev.type, ev.payload))
        return self._pending.pop(0)

    def until_ready(self) -> list[be.BackendMessage]:
        """Messages up to ReadyForQuery, a FATAL/ERROR, or the close."""
        out: list[be.BackendMessage] = []
        while (msg := self.next()) is not None:
            out.append(msg)
            if isinstance(msg, be.ReadyForQuery) or (isinstance(msg, be.ErrorResponse) and msg.kind == b"E"):
                break
        return out

    def close(self) -> None:
        self.sock.close()


def scram_until_final(port: int, identity: str = "alice", database: str = "app") -> tuple[Conn, bytes]:
    """Run the SCRAM exchange up to the client-final message and return it unsent,
    so a test can send it with something behind it, or later."""
    c = Conn(port)
    c.send(fe.StartupMessage(fe.PROTOCOL_3_0, (("user", identity), ("database", database))).encode())
    req = c.next()
    assert isinstance(req, be.Authentication) and req.code == be.AUTH_SASL, req
    scram = ScramClientExchange(req.mechanisms(), identity, TOKENS[identity])
    c.send(fe.PasswordMessage(scram.initial()).encode())
    cont = c.next()
    assert isinstance(cont, be.Authentication) and cont.code == be.AUTH_SASL_CONTINUE, cont
    return c, fe.PasswordMessage(scram.respond(cont.data)).encode()


def error_of(messages: list[be.BackendMessage]) -> be.ErrorResponse:
    errors = [m for m in messages if isinstance(m, be.ErrorResponse) and m.kind == b"E"]
    assert errors, f"no ErrorResponse in {messages!r}"
    return errors[-1]


def rows_of(messages: list[be.BackendMessage]) -> list[tuple[bytes | None, ...]]:
    return [m.values for m in messages if isinstance(m, be.DataRow)]


class FakeUpstream:
    """A TCP server that plays a (misbehaving) PostgreSQL for one connection at a time;
    ``script(sock)`` runs for each accepted connection in a thread."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self.results: list[object] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            conn.settimeout(8)
            try:
                self.results.append(self._script(conn))
            except Exception as e:
                self.results.append(e)
            finally:
                conn.close()

    def close(self) -> None:
        self._srv.close()

    def config(self, **extra: object) -> dict[str, object]:
        return {"app": {"host": "127.0.0.1", "port": self.port, "database": "db", "user": "u", **extra}}


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def read_startup(sock: socket.socket) -> bytes:
    (length,) = struct.unpack("!i", recv_exactly(sock, 4))
    return recv_exactly(sock, length - 4)


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    head = recv_exactly(sock, 5)
    (length,) = struct.unpack("!i", head[1:])
    return head[0], recv_exactly(sock, length - 4)


def wait_closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes within ``timeout`` (whatever it sends before)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (TimeoutError, ConnectionResetError):
        pass
    return False


@pytest.fixture
def own_proxy(upstream: UpstreamDB, tmp: Path) -> Iterator[RunningProxy]:
    p = start_proxy(upstream, tmp)
    yield p
    p.stop()


# --- 1. bytes pipelined behind the client-final message --------------------------------
#
# The framer buffered a partial message that arrived in the same read as the SCRAM
# client-final message; the relay's fast path (then Framer.scan) tracked boundaries as
# if those bytes had been forwarded, but only forwarded what it read afterwards: the
# upstream saw a message without its first bytes, i.e. other message boundaries than
# the proxy (a framing desync a client controls). The session now hands the framer's
# pending bytes to the relay with the rest of what the client sent.


@pytest.mark.parametrize("split", [3, 7])
def test_partial_message_pipelined_behind_login_is_forwarded_whole(proxy: RunningProxy, split: int) -> None:
    query = fe.Query("SELECT 'pipelined behind the login'").encode()
    c, final = scram_until_final(proxy.port)
    try:
        c.send(final + query[:split])
        login = c.until_ready()
        assert isinstance(login[-1], be.ReadyForQuery), login
        time.sleep(0.2)  # the first bytes are held by the proxy across the login
        c.send(query[split:])
        answer = c.until_ready()
        assert rows_of(answer) == [(b"pipelined behind the login",)], answer
    finally:
        c.close()


class _Seen:
    frontend_types = frozenset({ord("Q")})
    backend_types: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self.sql: list[str] = []

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        msg = fe.decode_frontend(message.type, message.payload)
        assert isinstance(msg, fe.Query)
        self.sql.append(msg.sql)
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        return None


def test_partial_message_pipelined_behind_login_reaches_the_stage(upstream: UpstreamDB, tmp: Path) -> None:
    stage = _Seen()
    p = start_proxy(upstream, tmp, pipeline=Pipeline([stage]))
    try:
        query = fe.Query("SELECT 'checked'").encode()
        c, final = scram_until_final(p.port)
        c.send(final + query[:7])
        assert isinstance(c.until_ready()[-1], be.ReadyForQuery)
        c.send(query[7:])
        assert rows_of(c.until_ready()) == [(b"checked",)]
        c.close()
        assert stage.sql == ["SELECT 'checked'"]
    finally:
        p.stop()


# --- 2. message size before authentication ------------------------------------------------
#
# Before the client has proven anything, a 'p' message could claim up to
# limits.max_message_size (1 GiB by default) and the proxy kept buffering it for the
# whole startup_timeout: 1000 unauthenticated connections could pin a terabyte.
# PostgreSQL caps authentication messages at 65535 bytes (PG_MAX_AUTH_TOKEN_LENGTH).


def test_huge_password_message_before_authentication_is_refused_at_once(proxy: RunningProxy) -> None:
    c = Conn(proxy.port)
    try:
        c.send(fe.StartupMessage(fe.PROTOCOL_3_0, (("user", "alice"), ("database", "app"))).encode())
        assert isinstance(c.next(), be.Authentication)
        t0 = time.monotonic()
        c.send(b"p" + struct.pack("!i", 64 << 20) + b"n,,n=,r=" + b"x" * 1000)
        c.sock.settimeout(4)
        err = error_of(c.until_ready())
        assert time.monotonic() - t0 < 3
        assert err.sqlstate == "54000"
        assert c.next() is None
    finally:
        c.close()


def test_large_messages_still_pass_after_authentication(proxy: RunningProxy) -> None:
    big = "x" * 300_000
    with psycopg.connect(proxy.dsn("alice")) as conn:
        assert conn.execute(f"SELECT length('{big}')").fetchone() == (300_000,)


# --- 3. bytes pipelined behind a GSSENCRequest -------------------------------------------
#
# After answering 'N' the proxy waited for more bytes although the startup packet was
# already buffered: the connection hung until startup_timeout. PostgreSQL refuses any
# bytes received before its answer to an SSLRequest or GSSENCRequest.


def test_startup_pipelined_behind_gssenc_request_is_refused_at_once(proxy: RunningProxy) -> None:
    c = Conn(proxy.port)
    try:
        startup = fe.StartupMessage(fe.PROTOCOL_3_0, (("user", "alice"), ("database", "app"))).encode()
        t0 = time.monotonic()
        c.send(fe.GSSENCRequest().encode() + startup)
        c.sock.settimeout(4)
        if c.sock.recv(1, socket.MSG_PEEK) == b"N":  # refused after or instead of the answer
            c.sock.recv(1)
        err = error_of(c.until_ready())
        assert time.monotonic() - t0 < 3
        assert err.sqlstate == "08P01"
        assert "unencrypted data" in (err.message or "")
    finally:
        c.close()


# --- 4. a login that completes after shutdown began ----------------------------------------
#
# shutdown() drains the sessions registered when it starts; a client still in SCRAM at
# that moment finished logging in afterwards and got a full, never-drained session.


def test_login_completing_during_shutdown_is_refused(own_proxy: RunningProxy) -> None:
    c, final = scram_until_final(own_proxy.port)
    stopping = asyncio.run_coroutine_threadsafe(own_proxy.server.shutdown(5), own_proxy.loop)
    try:
        time.sleep(0.3)
        c.send(final)
        answer = c.until_ready()
        assert not any(isinstance(m, be.ReadyForQuery) for m in answer), answer
        assert error_of(answer).sqlstate == "57P01"
    finally:
        c.close()
        stopping.result(15)


# --- 5. an upstream that never answers the SSLRequest ------------------------------------
#
# The timeout fired inside _open, after the TCP connection existed, and nothing closed
# it: every client login leaked an upstream socket (the transport stays registered
# with the event loop, so it is never collected).


def test_upstream_socket_is_closed_when_the_tls_answer_times_out(upstream: UpstreamDB, tmp: Path) -> None:
    def silent(sock: socket.socket) -> bool:
        assert recv_exactly(sock, 8) == fe.SSLRequest().encode()
        return wait_closed_by_peer(sock, 4)  # never answer; does rowgate hang up?

    fake = FakeUpstream(silent)
    p = start_proxy(upstream, tmp, upstreams=fake.config(tls={"mode": "prefer"}, connect_timeout="300ms"))
    try:
        login = raw_login(p.port, "alice", TOKENS["alice"])
        err = login[-1]
        assert isinstance(err, be.ErrorResponse) and err.sqlstate == "08006", login
        deadline = time.monotonic() + 8
        while not fake.results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.results == [True], "rowgate left the upstream connection open"
    finally:
        p.stop()
        fake.close()


# --- 6. an upstream that skips the end of SCRAM ------------------------------------------------
#
# rowgate's SCRAM client accepted AuthenticationOk right after its client-first
# message, so anyone who can impersonate the upstream (any upstream TLS mode short of
# verify-ca/verify-full) was taken for the database without proving it knows the
# password; statements and results then go through the impostor.


def test_upstream_must_finish_scram_before_authentication_ok(
    upstream: UpstreamDB, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def impostor(sock: socket.socket) -> str:
        read_startup(sock)
        sock.sendall(be.Authentication.sasl(["SCRAM-SHA-256"]).encode())
        t, _ = read_message(sock)
        assert t == ord("p")
        sock.sendall(
            be.Authentication(be.AUTH_OK).encode()
            + be.BackendKeyData(4242, b"abcd").encode()
            + be.ReadyForQuery("I").encode()
        )
        return "closed" if wait_closed_by_peer(sock, 4) else "kept"

    monkeypatch.setenv("ROWGATE_REVIEW_UPSTREAM_PW", "upstream-secret")
    fake = FakeUpstream(impostor)
    p = start_proxy(upstream, tmp, upstreams=fake.config(password={"env": "ROWGATE_REVIEW_UPSTREAM_PW"}))
    try:
        login = raw_login(p.port, "alice", TOKENS["alice"])
        assert not any(isinstance(m, be.ReadyForQuery) for m in login), login
        err = login[-1]
        assert isinstance(err, be.ErrorResponse) and err.sqlstate == "08006", login
    finally:
        p.stop()
        fake.close()


# --- 7. a stage's own answer overtakes the answers to earlier messages -----------------------
#
# Relay._client_events writes Action.to_client at once, while the messages before it in
# the same batch are still on their way to the upstream: a client that pipelines (psycopg
# pipeline mode, pgjdbc batches, asyncpg) gets the refusal of statement 2 before the
# results of statement 1, and attributes each answer to the wrong statement. Fix: queue
# a stage's answer behind the responses still owed (e.g. keep a FIFO of "upstream owes N
# ReadyForQuery" markers and release the synthesized reply from from_upstream when its
# turn comes, or send it immediately only when pending == 0). Also, messages a stage
# sends upstream in to_upstream are not counted by track_frontend, so the pending count
# (idle timeout, graceful drain) goes wrong as soon as a stage rewrites a statement.


def test_refusal_keeps_its_place_in_a_pipeline(upstream: UpstreamDB, tmp: Path) -> None:
    """The gate's refusal comes back from the upstream, after the answers to what the
    client pipelined before it (stages cannot answer the client directly)."""
    p = start_proxy(upstream, tmp, policy={"rules": []})
    try:
        c, final = scram_until_final(p.port)
        c.send(final)
        assert isinstance(c.until_ready()[-1], be.ReadyForQuery)
        c.send(fe.Query("SELECT 'first', pg_sleep(0.3)").encode() + fe.Query("DROP TABLE review_nothing").encode())
        first = c.until_ready()
        second = c.until_ready()
        c.close()
        assert rows_of(first) == [(b"first", b"")], first
        err = error_of(second)
        assert err.sqlstate == "42501" and 'guardrail "drop"' in (err.message or "")
    finally:
        p.stop()


# --- 8. the pending count never returns to zero ------------------------------------------------
#
# PostgreSQL ignores a Sync sent during COPY FROM STDIN (for libpq's convenience), so no
# ReadyForQuery answers it; the session's pending counter stays above zero forever, and
# the session is then exempt from limits.idle_timeout and from the graceful drain at
# shutdown (it is cut only at shutdown_timeout). Any client can do it on purpose. Fix:
# track the copy-in state from the backend (CopyInResponse 'G' until CommandComplete or
# ErrorResponse) and do not count Sync/Flush while in it; more robustly, treat the
# session as idle when the last backend message was ReadyForQuery and nothing was
# forwarded from the client since.


def test_sync_inside_copy_does_not_disable_the_idle_timeout(
    upstream: UpstreamDB, tmp: Path, direct: psycopg.Connection
) -> None:
    direct.execute("CREATE TABLE IF NOT EXISTS review_copy (v int)")
    p = start_proxy(upstream, tmp, limits={"idle_timeout": "1s"})
    try:
        c, final = scram_until_final(p.port)
        c.send(final)
        assert isinstance(c.until_ready()[-1], be.ReadyForQuery)
        c.send(fe.Query("COPY review_copy FROM STDIN").encode())
        assert isinstance(c.next(), be.CopyResponse)
        c.send(b"d" + struct.pack("!i", 6) + b"1\n" + b"S\x00\x00\x00\x04" + b"c\x00\x00\x00\x04")
        answer = c.until_ready()
        assert isinstance(answer[-1], be.ReadyForQuery), answer
        c.sock.settimeout(4)
        idle = c.until_ready()  # nothing to do: the proxy should end the idle session
        c.close()
        assert error_of(idle).sqlstate == "57P05"
    finally:
        p.stop()


# --- 9. results watched for a while (SessionInfo.watched_backend) ---------------------------
#
# A regression guard for the relay's framing. With the earlier two framer modes (scan
# kept a copy of the head of a message already forwarded, feed kept bytes not yet
# forwarded), switching a session's results between them while the framer held the
# head of a message forwarded that head twice (entering) or dropped it (leaving), and
# the client's stream was desynchronised. Framer.split holds back only bytes not yet
# forwarded, whatever is wanted, so the switch is safe; these two scripts cut the
# upstream's stream right inside a message header at the moment of the switch.


class _Watcher:
    """Watches results of statements marked watch_me, until their ReadyForQuery."""

    frontend_types = frozenset({ord("Q")})
    backend_types: frozenset[int] = frozenset()

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        if b"watch_me" in message.payload:
            session.watched_backend = frozenset({ord("D"), ord("Z")})
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        if message.type == ord("Z"):
            session.watched_backend = frozenset()
        return None


_NOTICE = be.error_response("01000", "an asynchronous notice", notice=True).encode()
_ROW = be.DataRow((b"x",)).encode() + be.CommandComplete("SELECT 1").encode() + be.ReadyForQuery("I").encode()
_EMPTY = be.EmptyQueryResponse().encode() + be.ReadyForQuery("I").encode()


def _trusting_login(sock: socket.socket) -> None:
    read_startup(sock)
    sock.sendall(be.Authentication(be.AUTH_OK).encode() + be.BackendKeyData(7, b"kkkk").encode())
    sock.sendall(be.ReadyForQuery("I").encode())


def _enter_watch(sock: socket.socket) -> None:
    _trusting_login(sock)
    read_message(sock)  # an unwatched query: its answer ends with the head of a notice
    sock.sendall(_EMPTY + _NOTICE[:3])
    read_message(sock)  # a watched one
    sock.sendall(_NOTICE[3:] + _ROW)
    wait_closed_by_peer(sock, 5)


def _leave_watch(sock: socket.socket) -> None:
    _trusting_login(sock)
    read_message(sock)  # a watched query: its answer ends with the head of a notice
    sock.sendall(_ROW + _NOTICE[:3])
    time.sleep(0.3)
    sock.sendall(_NOTICE[3:])
    read_message(sock)  # an unwatched one
    sock.sendall(_EMPTY)
    wait_closed_by_peer(sock, 5)


@pytest.mark.parametrize("script,queries", [(_enter_watch, ["", "watch_me"]), (_leave_watch, ["watch_me", ""])])
def test_watching_results_mid_message_keeps_the_stream_intact(
    upstream: UpstreamDB, tmp: Path, script: Script, queries: list[str]
) -> None:
    fake = FakeUpstream(script)
    p = start_proxy(upstream, tmp, pipeline=Pipeline([_Watcher()]), upstreams=fake.config())
    try:
        c, final = scram_until_final(p.port)
        c.send(final)
        assert isinstance(c.until_ready()[-1], be.ReadyForQuery)
        c.sock.settimeout(3)
        received: list[be.BackendMessage] = []
        for sql in queries:
            c.send(fe.Query(sql).encode())
            received += c.until_ready()
            time.sleep(0.6)
        c.close()
        kinds = [type(m).__name__ for m in received]
        assert sorted(kinds) == sorted(
            ["EmptyQueryResponse", "ReadyForQuery", "ErrorResponse", "DataRow", "CommandComplete", "ReadyForQuery"]
        ), received
    finally:
        p.stop()
        fake.close()
