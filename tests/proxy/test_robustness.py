"""Hostile and broken clients affect only their own connection; limits and
shutdown behave as documented."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pg8000.exceptions
import pg8000.native
import psycopg
import pytest
from proxyutil import TOKENS, raw_login, start_proxy

from rowgate.pgwire import backend as be
from rowgate.pgwire.framing import Frame, Framer
from rowgate.pgwire.frontend import PROTOCOL_3_0, CancelRequest, StartupMessage


def _raw(proxy, payload: bytes, *, wait: float = 5.0) -> bytes:
    """Send raw bytes, return everything the proxy answers until it closes."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=wait) as s:
        s.sendall(payload)
        return _recv_all(s, wait)


def _error_of(data: bytes) -> be.ErrorResponse:
    frames = [ev for ev in Framer().feed(data) if isinstance(ev, Frame)]
    errors = [be.decode_backend(f.type, f.payload) for f in frames if f.type == ord("E")]
    assert errors, f"no ErrorResponse in {data!r}"
    err = errors[-1]
    assert isinstance(err, be.ErrorResponse)
    return err


def _login_sqlstate(proxy, identity: str) -> tuple[str, str]:
    """(SQLSTATE, message) of a refused login; pg8000 exposes the fields libpq hides."""
    with pytest.raises(pg8000.exceptions.DatabaseError) as exc:
        pg8000.native.Connection(
            identity, password=TOKENS[identity], host="127.0.0.1", port=proxy.port, database="app", timeout=5
        )
    fields = exc.value.args[0]
    return fields["C"], fields["M"]


@pytest.fixture
def held(proxy):
    """A healthy session held open during an attack; checked afterwards."""
    conn = psycopg.connect(proxy.dsn("bob"), autocommit=True)
    yield conn
    assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)
    conn.close()


def test_garbage_instead_of_startup(proxy, held):
    answer = _raw(proxy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    err = _error_of(answer)
    assert err.sqlstate in ("08P01", "54000")


def test_huge_startup_length_is_refused_without_waiting_for_it(proxy, held):
    t0 = time.monotonic()
    answer = _raw(proxy, struct.pack("!i", 2_000_000_000) + b"\x00\x03\x00\x00")
    assert time.monotonic() - t0 < 3
    err = _error_of(answer)
    assert err.sqlstate == "54000"
    assert "exceeds the limit" in (err.message or "")


def test_truncated_startup_then_disconnect(proxy, held):
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(StartupMessage(PROTOCOL_3_0, (("user", "alice"),)).encode()[:7])
    # the proxy must have dropped it: the held session and new ones still work
    with psycopg.connect(proxy.dsn("alice")) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def _logged_in_socket(proxy, identity: str = "alice") -> socket.socket:
    """Log in over a raw socket with psycopg's help: libpq does the SCRAM math, then we
    take over the socket."""
    conn = psycopg.connect(proxy.dsn(identity), autocommit=True)
    fd = conn.pgconn.socket
    s = socket.socket(fileno=socket.dup(fd))
    s.settimeout(5)
    # keep the psycopg object from closing the socket under us
    _keep.append(conn)
    return s


_keep: list[psycopg.Connection] = []


def _recv_all(s: socket.socket, wait: float = 5) -> bytes:
    out = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize(
    "payload,sqlstate",
    [
        (b"Q" + struct.pack("!i", 2_000_000_000), "54000"),  # a 2 GB message
        (b"Q" + struct.pack("!i", 2), "08P01"),  # a length smaller than itself
    ],
)
def test_bad_length_after_login_closes_only_that_session(proxy, held, payload, sqlstate):
    s = _logged_in_socket(proxy)
    s.sendall(payload)
    answer = _recv_all(s)
    s.close()
    err = _error_of(answer)
    assert err.sqlstate == sqlstate


def test_disconnect_mid_message(proxy, held, direct):
    s = _logged_in_socket(proxy)
    s.sendall(b"Q" + struct.pack("!i", 1000) + b"SELECT pg_sleep(")
    s.close()
    for c in _keep:
        c.close()
    time.sleep(0.3)


def test_unknown_message_type_after_login(proxy, held):
    s = _logged_in_socket(proxy)
    s.sendall(b"Q" + struct.pack("!i", 13) + b"SELECT 1;\x00\x00" + b"\x01\x00\x00\x00\x04")
    answer = _recv_all(s)
    s.close()
    # the upstream reports the malformed traffic; the proxy relays and closes
    assert answer


def test_forged_cancel_key_cancels_nothing(proxy):
    with psycopg.connect(proxy.dsn("alice")) as victim:
        key = victim.pgconn.backend_pid
        result: list[object] = []

        def run() -> None:
            try:
                result.append(victim.execute("SELECT pg_sleep(1.5), 'done'").fetchone())
            except psycopg.Error as e:
                result.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.3)
        for secret in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"1234"):
            _raw(proxy, CancelRequest(key, secret).encode(), wait=0.5)
        t.join(10)
        assert not isinstance(result[0], Exception), result
        assert result[0][1] == "done"


def test_real_cancel_key_cancels(proxy):
    with psycopg.connect(proxy.dsn("alice")) as conn:
        # cancel_safe: the blocking PQcancel would hold the GIL the in-process proxy needs
        threading.Timer(0.5, conn.cancel_safe).start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        assert time.monotonic() - t0 < 5


def test_backend_key_is_the_proxys_not_the_upstreams(proxy, direct):
    with psycopg.connect(proxy.dsn("alice")) as conn:
        client_pid = conn.pgconn.backend_pid
        upstream_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert client_pid != upstream_pid


def test_max_connections(upstream, tmp):
    p = start_proxy(upstream, tmp, limits={"max_connections": 2})
    try:
        a = psycopg.connect(p.dsn("alice"))
        b = psycopg.connect(p.dsn("bob"))
        assert _login_sqlstate(p, "alice") == ("53300", "sorry, too many clients already")
        a.close()
        time.sleep(0.2)
        with psycopg.connect(p.dsn("alice")) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        b.close()
    finally:
        p.stop()


def test_per_identity_cap(upstream, tmp):
    p = start_proxy(upstream, tmp, limits={"max_connections_per_identity": 2})
    try:
        held = [psycopg.connect(p.dsn("alice")) for _ in range(2)]
        sqlstate, message = _login_sqlstate(p, "alice")
        assert sqlstate == "53300"
        assert "alice" in message
        with psycopg.connect(p.dsn("bob")) as other:  # another identity is not affected
            assert other.execute("SELECT 1").fetchone() == (1,)
        held[0].close()
        time.sleep(0.2)
        psycopg.connect(p.dsn("alice")).close()
        held[1].close()
    finally:
        p.stop()


def test_startup_timeout(upstream, tmp):
    p = start_proxy(upstream, tmp, limits={"startup_timeout": "500ms"})
    try:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(StartupMessage(PROTOCOL_3_0, (("user", "alice"), ("database", "app"))).encode())
            answer = _recv_all(s)  # we never answer the SCRAM challenge
        assert time.monotonic() - t0 < 3
        assert _error_of(answer).sqlstate == "08006"
    finally:
        p.stop()


def test_idle_timeout(upstream, tmp):
    p = start_proxy(upstream, tmp, limits={"idle_timeout": "1s"})
    try:
        conn = psycopg.connect(p.dsn("alice"), autocommit=True)
        conn.execute("SELECT pg_sleep(1.5)")  # a running statement is not idle
        time.sleep(2.5)
        with pytest.raises(psycopg.OperationalError) as exc:
            conn.execute("SELECT 1")
        assert "idle" in str(exc.value)
    finally:
        p.stop()


def test_graceful_shutdown_lets_running_statement_finish(upstream, tmp):
    p = start_proxy(upstream, tmp)
    busy = psycopg.connect(p.dsn("alice"), autocommit=True)
    idle = psycopg.connect(p.dsn("bob"), autocommit=True)
    result: list[object] = []

    def run() -> None:
        result.append(busy.execute("SELECT pg_sleep(1), 'finished'").fetchone())

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    p.stop(timeout=10)
    t.join(10)
    assert result[0][1] == "finished"
    with pytest.raises(psycopg.OperationalError) as exc:
        idle.execute("SELECT 1")
    assert "shutting down" in str(exc.value) or "closed" in str(exc.value)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(p.dsn("alice"), connect_timeout=2)


def test_shutdown_timeout_closes_long_statements(upstream, tmp):
    p = start_proxy(upstream, tmp)
    busy = psycopg.connect(p.dsn("alice"), autocommit=True)
    errors: list[Exception] = []

    def run() -> None:
        try:
            busy.execute("SELECT pg_sleep(30)")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    p.stop(timeout=1)
    t.join(10)
    assert time.monotonic() - t0 < 8
    assert errors and isinstance(errors[0], psycopg.OperationalError)


def test_unapplied_startup_parameters_are_reported(proxy):
    messages = raw_login(proxy.port, "alice", TOKENS["alice"], work_mem="7MB", application_name="raw")
    notices = [m for m in messages if isinstance(m, be.ErrorResponse) and m.kind == b"N"]
    assert len(notices) == 1
    assert "work_mem" in (notices[0].message or "")
    assert "application_name" not in (notices[0].message or "")
    assert isinstance(messages[-1], be.ReadyForQuery)
    statuses = {m.name: m.value for m in messages if isinstance(m, be.ParameterStatus)}
    assert statuses["application_name"] == "raw"


def test_newer_protocol_minor_is_negotiated_down(proxy):
    messages = raw_login(proxy.port, "alice", TOKENS["alice"], protocol=(3 << 16) | 2, **{"_pq_.future": "on"})
    negotiations = [m for m in messages if isinstance(m, be.NegotiateProtocolVersion)]
    assert negotiations == [be.NegotiateProtocolVersion(0, ("_pq_.future",))]
    assert isinstance(messages[-1], be.ReadyForQuery)


def test_gssenc_request_is_declined_and_login_continues(proxy):
    with psycopg.connect(proxy.dsn("alice", gssencmode="prefer")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(struct.pack("!ii", 8, 80877104))
        assert s.recv(1) == b"N"
