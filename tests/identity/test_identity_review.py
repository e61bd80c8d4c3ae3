"""Security review of identity (issue 3): attacks on SCRAM, the brute-force throttle,
the token store, OIDC and client certificates, each against the real proxy over real
sockets. Every test here pins down a fix or a property the review checked."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from identutil import create_token, proxy_from, rowgate, write_config
from proxyutil import TOKENS, RunningProxy, UpstreamDB, start_proxy

from rowgate.pgwire import backend as be
from rowgate.pgwire.auth import SCRAM
from rowgate.pgwire.buffer import cstr, i32
from rowgate.pgwire.framing import Frame, Framer
from rowgate.pgwire.frontend import PROTOCOL_3_0, PasswordMessage, SSLRequest, StartupMessage

NO_AUDIT = {"enabled": False}


class Wire:
    """A hand-driven client connection: startup, then one message at a time."""

    def __init__(self, port: int, user: str | bytes, database: str = "app", tls: ssl.SSLContext | None = None,
                 family: int = socket.AF_INET, host: str = "127.0.0.1") -> None:
        self.sock: socket.socket = socket.create_connection((host, port), timeout=10)
        if tls is not None:
            self.sock.sendall(SSLRequest().encode())
            assert self.sock.recv(1) == b"S"
            self.sock = tls.wrap_socket(self.sock)
        self.framer = Framer(peer="proxy")
        self.pending: list[Any] = []
        if isinstance(user, bytes):  # raw bytes: names that are not UTF-8
            body = i32(PROTOCOL_3_0) + b"user\0" + user + b"\0" + cstr("database") + cstr(database) + b"\0"
            self.sock.sendall(i32(len(body) + 4) + body)
        else:
            self.sock.sendall(StartupMessage(PROTOCOL_3_0, (("user", user), ("database", database))).encode())

    def recv(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            for ev in self.framer.feed(data):
                assert isinstance(ev, Frame)
                self.pending.append(be.decode_backend(ev.type, ev.payload))
        return self.pending.pop(0)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(PasswordMessage(payload).encode())

    def error(self) -> dict[str, str]:
        """Read up to the error the connection ends with."""
        while True:
            msg = self.recv()
            if isinstance(msg, be.ErrorResponse) and msg.kind == b"E":
                return dict(msg.fields)
            assert not isinstance(msg, be.ReadyForQuery), "logged in"

    def close(self) -> None:
        self.sock.close()

    # --- SCRAM by hand ---------------------------------------------------------------

    def scram_first(self, cnonce: str = "rOprNGfwEbeRWgbNEkqO") -> tuple[str, bytes, int]:
        """Send client-first; return (server nonce, salt, iterations)."""
        msg = self.recv()
        assert isinstance(msg, be.Authentication) and msg.code == be.AUTH_SASL, msg
        first = f"n,,n=,r={cnonce}".encode()
        self.send(cstr(SCRAM) + i32(len(first)) + first)
        cont = self.recv()
        assert isinstance(cont, be.Authentication) and cont.code == be.AUTH_SASL_CONTINUE, cont
        attrs = dict(a.split("=", 1) for a in cont.data.decode().split(","))
        self._client_first_bare = f"n=,r={cnonce}"
        self._server_first = cont.data.decode()
        return attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])

    def scram_final(self, password: str, nonce: str, salt: bytes, iterations: int) -> None:
        import hashlib
        import hmac

        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        sig = hmac.new(stored, auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
        self.send(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())


@pytest.fixture(scope="module")
def store_proxy(upstream: UpstreamDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, Path]]:
    tmp = tmp_path_factory.mktemp("review")
    cfg = write_config(upstream, tmp, audit=NO_AUDIT)
    p = proxy_from(cfg)
    yield p, cfg
    p.stop()


# --- SCRAM: nothing tells an unknown name from a known one ----------------------------


def test_salts_look_alike_for_store_tokens_config_identities_and_unknown_names(
    store_proxy: tuple[RunningProxy, Path],
) -> None:
    """A store token's salt was 32 bytes where config identities and unknown names got
    16: the salt length alone told which names had a token."""
    p, cfg = store_proxy
    create_token(cfg, "salty")
    seen = {}
    for name in ("salty", "alice", "no-such-name"):
        salts = set()
        for _ in range(2):
            w = Wire(p.port, name)
            _, salt, iterations = w.scram_first()
            w.close()
            salts.add(salt)
            seen[name] = (len(salt), iterations)
        assert len(salts) == 1, name  # the same salt on every attempt
    assert len(set(seen.values())) == 1, seen
    assert seen["salty"] == (16, 4096)  # PostgreSQL's own salt length and iterations


def test_hostile_scram_messages_fail_cleanly_and_count_nothing_as_a_login(
    store_proxy: tuple[RunningProxy, Path],
) -> None:
    p, _ = store_proxy
    bad_first = {
        "channel binding asked for": b"p=tls-server-end-point,,n=,r=abc",
        "authzid": b"n,a=bob,n=,r=abc",
        "no nonce": b"n,,n=",
        "mandatory extension": b"n,,m=ext,n=,r=abc",
        "nonce with a comma escape": b"n,,n=,r=a=2Cb,x",
        "not UTF-8": b"n,,n=,r=\xff\xfe",
        "empty": b"",
    }
    for case, first in bad_first.items():
        w = Wire(p.port, "alice")
        assert w.recv().code == be.AUTH_SASL
        w.send(cstr(SCRAM) + i32(len(first)) + first)
        err = w.error()
        w.close()
        assert err["C"] == "08P01", (case, err)
    # a final message for another nonce (a replayed exchange), or with tampered channel-binding data
    for case, final in {"other nonce": "c=biws,r={n}x,p=AAAA", "cbind data": "c=eSws,r={n},p=AAAA",
                        "no proof": "c=biws,r={n}"}.items():
        w = Wire(p.port, "alice")
        nonce, _, _ = w.scram_first()
        w.send(final.format(n=nonce).encode())
        err = w.error()
        w.close()
        assert err["C"] == "08P01", (case, err)
    w = Wire(p.port, "alice")  # a SASL mechanism rowgate did not offer
    assert w.recv().code == be.AUTH_SASL
    w.send(cstr("SCRAM-SHA-256-PLUS") + i32(3) + b"p=x")
    assert w.error()["C"] == "08P01"
    w.close()
    # a password message far beyond any token, before authentication: refused unread
    w = Wire(p.port, "alice")
    assert w.recv().code == be.AUTH_SASL
    w.sock.sendall(b"p" + struct.pack("!I", 10_000_000))
    assert w.error()["C"] == "54000"
    w.close()
    with psycopg.connect(p.dsn("alice")) as conn:  # and the proxy is fine
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_user_name_that_is_not_utf8_is_refused_cleanly(store_proxy: tuple[RunningProxy, Path]) -> None:
    """The name went on to the store lookup, whose driver cannot encode it."""
    p, _ = store_proxy
    w = Wire(p.port, b"al\xffice")
    err = w.error()
    w.close()
    assert err["C"] == "28000" and "UTF-8" in err["M"], err
    with psycopg.connect(p.dsn("alice")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_parallel_guesses_cannot_outrun_the_lockout(upstream: UpstreamDB, tmp: Path) -> None:
    """Attempts that passed the lockout check before it tripped were still judged: an
    attacker opening many connections at once got far more guesses than lockout_after."""
    p = start_proxy(upstream, tmp, audit=NO_AUDIT, auth={"throttle": {
        "enabled": True, "identity": {"delay_after": 100, "lockout_after": 3},
        "address": {"delay_after": 100, "lockout_after": 100}, "lockout": 60}})
    try:
        wires = [Wire(p.port, "alice") for _ in range(5)]
        exchanges = [(w, *w.scram_first()) for w in wires]  # every one is past the lockout check
        for w, nonce, salt, i in exchanges[:3]:
            w.scram_final("wrong-guess-wrong-guess", nonce, salt, i)
            assert "password authentication failed" in w.error()["M"]
        # the right guess and a wrong one, both made while locked out: the same refusal, and no
        # server signature (which would prove the guess right) before it
        answers = []
        for (w, nonce, salt, i), secret in zip(exchanges[3:], (TOKENS["alice"], "wrong-again-wrong"), strict=True):
            w.scram_final(secret, nonce, salt, i)
            msg = w.recv()
            assert isinstance(msg, be.ErrorResponse), msg
            answers.append({k: re.sub(r"\d+", "N", v) if k == "M" else v for k, v in msg.fields if k in "SCMDH"})
        assert answers[0]["C"] == "28000" and "too many failed logins" in answers[0]["M"], answers
        assert answers[0] == answers[1]
        for w in wires:
            w.close()
    finally:
        p.stop()



def _guess(port: int, user: str, secret: str, host: str = "127.0.0.1") -> dict[str, str]:
    """One SCRAM login attempt by hand; the error it ends with ({} if it logged in)."""
    w = Wire(port, user, host=host)
    try:
        msg = w.recv()
        if isinstance(msg, be.ErrorResponse):
            return dict(msg.fields)
        w.pending.insert(0, msg)
        w.scram_final(secret, *w.scram_first())
        while True:
            msg = w.recv()
            if isinstance(msg, be.ErrorResponse) and msg.kind == b"E":
                return dict(msg.fields)
            if isinstance(msg, be.ReadyForQuery):
                return {}
    finally:
        w.close()


def test_a_flood_of_made_up_names_does_not_evict_a_lockout(
    upstream: UpstreamDB, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counters are bounded (oldest evicted first): failures for many invented names
    pushed alice's lockout out, and the brute force could go on."""
    from rowgate.identity import throttle

    monkeypatch.setattr(throttle, "MAX_TRACKED", 4)
    p = start_proxy(upstream, tmp, audit=NO_AUDIT, auth={"throttle": {
        "enabled": True, "identity": {"delay_after": 100, "lockout_after": 2},
        "address": {"delay_after": 100, "lockout_after": 1000}, "lockout": 60}})
    try:
        for _ in range(2):
            assert "password authentication failed" in _guess(p.port, "alice", "wrong-wrong-wrong-1")["M"]
        for i in range(10):
            _guess(p.port, f"made-up-{i}", "whatever-whatever")
        err = _guess(p.port, "alice", TOKENS["alice"])
        assert "too many failed logins for this identity" in err.get("M", ""), err
    finally:
        p.stop()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_clients_are_throttled_per_64(upstream: UpstreamDB, tmp: Path) -> None:
    from rowgate.identity.throttle import host_of

    assert host_of("2001:db8:1:2:aaaa::1:5432") == host_of("2001:db8:1:2:bbbb::7:6000") == "2001:db8:1:2::/64"
    assert host_of("::ffff:10.1.2.3:77") == "10.1.2.3"  # an IPv4 client on a dual-stack socket
    p = start_proxy(upstream, tmp, audit=NO_AUDIT, listen={"host": "::1", "port": 0}, auth={"throttle": {
        "enabled": True, "identity": {"delay_after": 100, "lockout_after": 100},
        "address": {"delay_after": 100, "lockout_after": 3}, "lockout": 60}})
    try:
        for i in range(3):
            assert "password authentication failed" in _guess(p.port, f"u{i}", "wrong-wrong-wrong", host="::1")["M"]
        err = _guess(p.port, "alice", TOKENS["alice"], host="::1")
        assert "too many failed logins for this address" in err.get("M", ""), err
        assert p.server.auth.throttle._address.get("::/64", time.monotonic()) is not None
    finally:
        p.stop()


# --- OIDC --------------------------------------------------------------------------------


class JwksServer:
    """An https JWKS endpoint on a thread that counts its requests; ``failing`` makes it answer 503."""

    def __init__(self, doc: dict[str, Any], certs: Any) -> None:
        import http.server

        self.doc, self.hits, self.failing = doc, 0, False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = b"down" if outer.failing else json.dumps(outer.doc).encode()
                self.send_response(503 if outer.failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs.server_cert, certs.server_key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://localhost:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()


def _tls_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_a_failing_jwks_url_is_not_hammered(upstream: UpstreamDB, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the cached JWKS was stale, every JWT login fetched it again while the provider
    was down (a failed fetch did not count as an attempt), each holding the key lock."""
    from certs import make_certs
    from test_oidc import AUDIENCE, ISSUER, Keys

    keys = Keys()
    certs = make_certs(tmp / "certs")
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))  # urllib's default context trusts the test CA
    idp = JwksServer(keys.jwks(), certs)
    p = start_proxy(
        upstream, tmp, audit=NO_AUDIT,
        listen={"tls": {"mode": "optional", "cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}},
        auth={"oidc": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": idp.url, "jwks_max_age": "1s",
                       "jwks_min_refresh": "1s"}, "throttle": {"enabled": False}},
    )
    try:
        assert idp.hits == 1

        def login(token: str) -> psycopg.Connection:
            return psycopg.connect(host="127.0.0.1", port=p.port, user="carol", password=token, dbname="app",
                                   sslmode="require", autocommit=True, connect_timeout=10)

        idp.failing = True
        time.sleep(1.2)  # the cached keys are stale now
        for _ in range(4):  # keep working with the keys fetched before: the provider may be back later
            login(keys.token()).close()
        for i in range(4):  # made-up kids: refused, and no fetch for each
            with pytest.raises(psycopg.OperationalError, match="no key with kid"):
                login(_with_kid(keys, f"random-{i}"))
        assert idp.hits == 2, idp.hits  # one fetch (failed) within jwks_min_refresh
        idp.failing = False
        time.sleep(1.1)
        login(keys.token()).close()
        assert idp.hits == 3
    finally:
        p.stop()
        idp.stop()


def _with_kid(keys: Any, kid: str, **headers: Any) -> str:
    import jwt
    from test_oidc import AUDIENCE, ISSUER

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "iat": now, "exp": now + 300}
    return jwt.encode(claims, keys.rsa, algorithm="RS256", headers={"kid": kid, **headers})


def test_jwt_header_tricks_are_refused(upstream: UpstreamDB, tmp: Path) -> None:
    """Keys named by the token itself (jwk, jku, x5u), unknown critical extensions, a kid
    that looks like a path, iat in the future, an oversized token: all refused, and none
    makes rowgate read a file or fetch a URL."""
    import jwt
    from certs import make_certs
    from cryptography.hazmat.primitives.asymmetric import rsa
    from test_oidc import AUDIENCE, ISSUER, Keys

    keys = Keys()
    certs = make_certs(tmp / "certs")
    (tmp / "jwks.json").write_text(json.dumps(keys.jwks()))
    (tmp / "evil.json").write_text(json.dumps({"keys": []}))
    p = start_proxy(
        upstream, tmp, audit=NO_AUDIT,
        listen={"tls": {"mode": "optional", "cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}},
        auth={"oidc": {"issuer": ISSUER, "audience": [AUDIENCE, "other"], "jwks": "jwks.json", "leeway": 0},
              "throttle": {"enabled": False}},
    )
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(attacker.public_key()))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "iat": now, "exp": now + 300}

    def signed(key: Any, **headers: Any) -> str:
        return jwt.encode(claims, key, algorithm="RS256", headers=headers)

    def login(token: str) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=p.port, user="carol", password=token, dbname="app",
                               sslmode="require", autocommit=True, connect_timeout=10)

    cases = {
        "embedded jwk": (signed(attacker, jwk=attacker_jwk), "no key with kid None"),
        "embedded jwk with a known kid": (signed(attacker, kid="rsa-1", jwk=attacker_jwk), "Signature verification"),
        "jku": (signed(attacker, kid="evil", jku=f"file://{tmp / 'evil.json'}"), "no key with kid 'evil'"),
        "x5u": (signed(attacker, kid="rsa-1", x5u="https://evil.example/cert.pem"), "Signature verification"),
        "kid as a path": (signed(attacker, kid=str(tmp / "evil.json")), "no key with kid"),
        "kid traversal": (signed(attacker, kid="../../../../etc/passwd"), "no key with kid"),
        "unknown crit": (signed(keys.rsa, kid="rsa-1", crit=["exp-check"]), "critical extension"),
        "iat in the future": (keys.token(iat=now + 3600), "not yet valid"),
        "audience not ours": (keys.token(aud=["x", "y"]), "Audience doesn't match"),
        "issuer with a trailing slash": (keys.token(iss=ISSUER + "/"), "Invalid issuer"),
    }
    try:
        for case, (token, why) in cases.items():
            with pytest.raises(psycopg.OperationalError, match="JWT authentication failed") as e:
                login(token).close()
            assert why in str(e.value), (case, str(e.value))
        login(keys.token(aud=["x", AUDIENCE])).close()  # one of several audiences is ours: fine
        huge = keys.token(padding="x" * 70_000)
        with pytest.raises(psycopg.OperationalError):
            login(huge).close()
        login(keys.token()).close()  # still serving
        # without TLS the password is never asked for in clear: SCRAM, where a JWT cannot work
        w = Wire(p.port, "carol")
        assert w.recv().code == be.AUTH_SASL
        w.close()
        w = Wire(p.port, "carol", tls=_tls_client())
        assert w.recv().code == be.AUTH_CLEARTEXT
        w.close()
        # in clear inside TLS, an unknown name and a wrong token get the very same answer
        answers = []
        for user in ("alice", "no-such-name"):
            w = Wire(p.port, user, tls=_tls_client())
            assert w.recv().code == be.AUTH_CLEARTEXT
            w.send(cstr("not-the-token-0123456789"))
            answers.append({k: v for k, v in w.error().items() if k in "SCMDH"})
            w.close()
        assert answers[0] == {**answers[1], "M": answers[1]["M"].replace("no-such-name", "alice")}, answers
    finally:
        p.stop()


# --- client certificates ---------------------------------------------------------------


def _client_cert(ca: Any, directory: Path, name: str, cns: list[str], *, expired: bool = False,
                 server_only: bool = False) -> tuple[Path, Path]:
    """A certificate signed by ``ca`` with the given CNs (several, or with odd characters)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    issuer = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes()).subject
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=3), now - datetime.timedelta(days=1)) if expired else (
        now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_only else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
                                 for cn in cns]))
        .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_client_certificate_tricks(upstream: UpstreamDB, tmp: Path) -> None:
    from certs import make_certs

    ca = make_certs(tmp / "ca")
    p = start_proxy(
        upstream, tmp, audit=NO_AUDIT,
        listen={"tls": {"mode": "optional", "cert_file": str(ca.server_cert), "key_file": str(ca.server_key)}},
        auth={"throttle": {"enabled": False},
              "mtls": {"ca_file": str(ca.ca_cert), "identities": {"etl-service": {"groups": ["etl"]}},
                       "any_certificate": {"groups": ["staff"]}}},
    )

    def login(user: str, cert: tuple[Path, Path], password: str | None = None) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=p.port, user=user, dbname="app", sslmode="require",
                               sslcert=str(cert[0]), sslkey=str(cert[1]), autocommit=True, connect_timeout=10,
                               **({"password": password} if password else {}))

    certs = tmp / "clients"
    try:
        # two CNs: which one names the holder is ambiguous (PostgreSQL itself reads only the first)
        two = _client_cert(ca, certs, "two", ["mallory", "etl-service"])
        for user in ("etl-service", "mallory"):
            with pytest.raises(psycopg.OperationalError, match="more than one CN"):
                login(user, two).close()
        # a CN with a NUL or a comma is a different name, never the one it starts with
        for n, cn in enumerate(("etl-service\x00x", "etl-service,CN=x")):
            odd = _client_cert(ca, certs, f"odd{n}", [cn])
            with pytest.raises(psycopg.OperationalError):
                login("etl-service", odd).close()
        # expired, or made for a server: the handshake refuses it
        for name, kw in (("expired", {"expired": True}), ("server", {"server_only": True})):
            cert = _client_cert(ca, certs, name, ["etl-service"], **kw)
            with pytest.raises(psycopg.OperationalError):  # (TLS 1.3: the client sees only the close)
                login("etl-service", cert).close()
        # a certificate for one name and another identity's token: the certificate decides, and refuses
        etl = _client_cert(ca, certs, "etl", ["etl-service"])
        with pytest.raises(psycopg.OperationalError, match='identifies "etl-service", not "alice"'):
            login("alice", etl, TOKENS["alice"]).close()
        with login("etl-service", etl) as conn:
            assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("rowgate:etl-service",)
    finally:
        p.stop()


# --- revocation ----------------------------------------------------------------------------


def test_revocation_ends_a_long_copy_and_a_long_statement_within_5s(
    store_proxy: tuple[RunningProxy, Path], direct: psycopg.Connection
) -> None:
    p, cfg = store_proxy
    token = create_token(cfg, "copier")["token"]
    dsn = p.dsn("copier", token=token)
    outcome: dict[str, Any] = {}

    def copy_out() -> None:
        try:
            with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(
                "COPY (SELECT g, repeat('x', 200) FROM generate_series(1, 1000000000) g) TO STDOUT"
            ) as copy:
                for _ in copy:
                    outcome["copy_rows"] = outcome.get("copy_rows", 0) + 1
                    time.sleep(0.0005)  # a slow reader: the proxy is mid-stream when the revocation comes
        except psycopg.Error as e:
            outcome["copy"] = (time.monotonic(), str(e))

    def sleeper() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_sleep(60) /* revoked-sleeper */")
        except psycopg.Error as e:
            outcome["sleep"] = (time.monotonic(), str(e))

    threads = [threading.Thread(target=copy_out), threading.Thread(target=sleeper)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while outcome.get("copy_rows", 0) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    revoked = time.monotonic()
    rowgate(cfg, "token", "revoke", "copier")
    for t in threads:
        t.join(15)
    assert "copy" in outcome and "sleep" in outcome, outcome
    for what in ("copy", "sleep"):
        at, _ = outcome[what]
        assert at - revoked < 5 + 1.5, (what, at - revoked)  # the CLI process itself takes a moment
    # new connections are refused at once
    with pytest.raises(psycopg.OperationalError, match="revoked"):
        psycopg.connect(dsn)
    # and the statement does not go on running upstream without anyone behind it
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = direct.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%revoked-sleeper%' "
                              "AND pid <> pg_backend_pid()").fetchone()
        if rows == (0,):
            break
        time.sleep(0.2)
    assert rows == (0,)


# --- the state store -----------------------------------------------------------------------


def test_state_store_files_are_private_and_hold_no_token(upstream: UpstreamDB, tmp: Path) -> None:
    cfg = write_config(upstream, tmp, audit=NO_AUDIT)
    token = create_token(cfg, "private-bot")["token"]  # the CLI creates the store
    data = tmp / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    p = proxy_from(cfg)
    try:
        with psycopg.connect(p.dsn("private-bot", token=token)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        rowgate(cfg, "token", "revoke", "private-bot")
        files = sorted(data.glob("state.db*"))
        assert {f.name for f in files} >= {"state.db", "state.db-wal"}, files
        for f in files:
            assert f.stat().st_mode & 0o777 == 0o600, f
            assert token.encode() not in f.read_bytes(), f
    finally:
        p.stop()


# --- access mapping: a group's role holds -------------------------------------------------


def test_a_group_role_cannot_be_escaped_and_the_upstream_password_never_shows(
    upstream: UpstreamDB, tmp: Path, direct: psycopg.Connection, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rowgate.session")
    for role in ("rg_rev_reader", "rg_rev_power"):
        direct.execute(f"DROP ROLE IF EXISTS {role}")
    direct.execute("CREATE ROLE rg_rev_power NOLOGIN")
    direct.execute("CREATE ROLE rg_rev_reader LOGIN NOINHERIT IN ROLE rg_rev_power")  # could SET ROLE to power
    monkeypatch.setenv("RG_REVIEW_BAD_PW", "sEcret-upstream-pw-77")
    base = {"host": upstream.host, "port": upstream.port, "database": upstream.database, "user": upstream.user}
    app = {**base, "access": [{"groups": ["analysts"], "user": "rg_rev_reader"}]}
    # a role whose password in the config is wrong: the upstream refuses rowgate itself
    broken = {**base, "access": [{"groups": ["analysts"], "user": "rg_scram",
                                  "password": {"env": "RG_REVIEW_BAD_PW"}}]}
    p = start_proxy(upstream, tmp, audit=NO_AUDIT, policy={"rules": []}, upstreams={"app": app, "broken": broken})
    try:
        with psycopg.connect(p.dsn("alice"), autocommit=True) as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert pid is not None and "identity=alice kind=human groups=analysts" in caplog.text
            assert f"upstream_pid={pid[0]} " in caplog.text  # the DBA's link from pg_stat_activity to alice
            for sql in ("SET ROLE rg_rev_power", "SET SESSION AUTHORIZATION rg_rev_power",
                        "SELECT set_config('role', 'rg_rev_power', false)",
                        "SELECT set_config('ro' || 'le', 'rg_rev_power', false)",
                        "SET LOCAL ROLE rg_rev_power", "ALTER ROLE CURRENT_USER SET role = 'rg_rev_power'",
                        "ALTER DATABASE rowgate_test SET role = 'rg_rev_power'"):
                with pytest.raises(psycopg.Error) as e:
                    conn.execute(sql)
                assert e.value.sqlstate == "42501", (sql, e.value.sqlstate, str(e.value))
            for sql in ("RESET ROLE", "SET ROLE NONE", "DISCARD ALL", "RESET ALL"):  # back to the login role
                conn.execute(sql)
                assert conn.execute("SELECT current_user, session_user").fetchone() == ("rg_rev_reader",) * 2, sql
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(p.dsn("alice", database="broken"))
        assert "sEcret-upstream-pw-77" not in str(e.value)
        assert "APP" not in p.server.config.upstreams
        with pytest.raises(psycopg.OperationalError, match='database "APP" does not exist'):
            psycopg.connect(p.dsn("alice", database="APP"))  # upstream names are exact, not case-folded
    finally:
        p.stop()
        for role in ("rg_rev_reader", "rg_rev_power"):
            direct.execute(f"DROP ROLE IF EXISTS {role}")


def test_token_guesses_do_not_lock_out_the_names_certificate(upstream: UpstreamDB, tmp: Path) -> None:
    """Guessing at a name's token locked out its certificate logins as well (a cheap
    denial of service against a service account), and each certificate login cleared
    the guesses counted so far (more guesses for the attacker)."""
    from certs import make_certs

    ca = make_certs(tmp / "ca")
    p = start_proxy(
        upstream, tmp, audit=NO_AUDIT,
        listen={"tls": {"mode": "optional", "cert_file": str(ca.server_cert), "key_file": str(ca.server_key)}},
        auth={"mtls": {"ca_file": str(ca.ca_cert), "identities": {"alice": {"groups": ["analysts"]}}},
              "throttle": {"enabled": True, "identity": {"delay_after": 100, "lockout_after": 2},
                           "address": {"delay_after": 100, "lockout_after": 100}, "lockout": 60}},
    )
    cert = _client_cert(ca, tmp / "clients", "alice", ["alice"])
    try:
        for _ in range(2):
            assert "password authentication failed" in _guess(p.port, "alice", "wrong-wrong-wrong")["M"]
        with psycopg.connect(host="127.0.0.1", port=p.port, user="alice", dbname="app", sslmode="require",
                             sslcert=str(cert[0]), sslkey=str(cert[1]), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert "too many failed logins" in _guess(p.port, "alice", TOKENS["alice"])["M"]  # still locked
    finally:
        p.stop()


def test_empty_and_oversized_user_names(store_proxy: tuple[RunningProxy, Path]) -> None:
    p, _ = store_proxy
    w = Wire(p.port, "")
    assert w.error()["M"] == "no user name specified in the startup packet"
    w.close()
    w = Wire(p.port, "a" * 5000)  # would be kept as a throttle key, in logs, ...
    err = w.error()
    w.close()
    assert err["C"] == "28000" and "too long" in err["M"], err
    long_ok = "x" * 256
    assert "password authentication failed" in _guess(p.port, long_ok, "wrong-wrong-wrong")["M"]


def test_a_broken_state_store_refuses_logins_cleanly(upstream: UpstreamDB, tmp: Path) -> None:
    """A store error escaped the session as an unhandled exception: the client saw the
    connection drop with no reason."""
    cfg = write_config(upstream, tmp, audit=NO_AUDIT)
    p = proxy_from(cfg)
    try:
        assert p.server.auth.db is not None
        p.server.auth.db.close()  # as if the disk or the PostgreSQL store went away
        for user in ("alice", "no-such-name"):
            with pytest.raises(psycopg.OperationalError, match="state store is unavailable"):
                psycopg.connect(p.dsn(user))
    finally:
        p.stop()


def test_parallel_guesses_in_clear_inside_tls_cannot_outrun_the_lockout(upstream: UpstreamDB, tmp: Path) -> None:
    """The same race on the cleartext-inside-TLS path (OIDC configured)."""
    from certs import make_certs
    from test_oidc import AUDIENCE, ISSUER, Keys

    certs = make_certs(tmp / "certs")
    (tmp / "jwks.json").write_text(json.dumps(Keys().jwks()))
    p = start_proxy(
        upstream, tmp, audit=NO_AUDIT,
        listen={"tls": {"mode": "optional", "cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}},
        auth={"oidc": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": "jwks.json"},
              "throttle": {"enabled": True, "identity": {"delay_after": 100, "lockout_after": 3},
                           "address": {"delay_after": 100, "lockout_after": 100}, "lockout": 60}},
    )
    try:
        wires = [Wire(p.port, "alice", tls=_tls_client()) for _ in range(5)]
        for w in wires:
            assert w.recv().code == be.AUTH_CLEARTEXT  # every one is past the first lockout check
        for w in wires[:3]:
            w.send(cstr("wrong-guess-wrong-guess"))
            assert "password authentication failed" in w.error()["M"]
        answers = []
        for w, secret in zip(wires[3:], (TOKENS["alice"], "wrong-again-wrong"), strict=True):
            w.send(cstr(secret))
            answers.append({k: re.sub(r"\d+", "N", v) if k == "M" else v for k, v in w.error().items()
                            if k in "SCMDH"})
        assert answers[0]["C"] == "28000" and "too many failed logins" in answers[0]["M"], answers
        assert answers[0] == answers[1]
        for w in wires:
            w.close()
    finally:
        p.stop()
