"""Authentication math: SCRAM-SHA-256 server and client exchanges, MD5, checked
against each other, against an independent RFC 5802 implementation written here
with hashlib/hmac, and against a real PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowgate.errors import InvalidPassword, ProtocolViolation, RowgateError, UpstreamUnavailable
from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.auth import (
    SCRAM,
    ScramClientExchange,
    ScramServerExchange,
    ScramVerifier,
    make_verifier,
    md5_response,
    parse_sasl_initial,
)
from rowgate.pgwire.framing import Frame, Framer

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ITER = 4096


def _over_the_wire_p(payload: bytes) -> bytes:
    """Send a 'p' payload through encode, Framer and decode, as the proxy receives it."""
    (f,) = Framer().feed(fe.PasswordMessage(payload).encode())
    assert isinstance(f, Frame)
    msg = fe.decode_frontend(f.type, f.payload)
    assert isinstance(msg, fe.PasswordMessage)
    return msg.payload


def _over_the_wire_r(msg: be.Authentication) -> be.Authentication:
    (f,) = Framer().feed(msg.encode())
    assert isinstance(f, Frame)
    out = be.decode_backend(f.type, f.payload)
    assert isinstance(out, be.Authentication)
    return out


def _attrs(msg: bytes) -> dict[str, str]:
    return dict(item.split("=", 1) for item in msg.decode().split(","))


# --- verifier ------------------------------------------------------------------------


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def test_make_verifier_matches_rfc5802_math() -> None:
    v = make_verifier("correct horse", iterations=ITER)
    assert v.iterations == ITER
    assert len(v.salt) >= 16
    salted = _salted("correct horse", v.salt, ITER)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert v.stored_key == hashlib.sha256(client_key).digest()
    assert v.server_key == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert make_verifier("correct horse").salt != v.salt  # a fresh salt every time


# --- ScramClientExchange against ScramServerExchange ----------------------------------


def _run_exchange(verifier: ScramVerifier | None, password: str) -> tuple[ScramClientExchange, be.Authentication]:
    server = ScramServerExchange(verifier)
    request = _over_the_wire_r(server.request())
    assert request.code == be.AUTH_SASL
    assert request.mechanisms() == [SCRAM]
    client = ScramClientExchange(request.mechanisms(), "alice", password)
    cont = _over_the_wire_r(server.step(_over_the_wire_p(client.initial())))
    assert cont.code == be.AUTH_SASL_CONTINUE
    final = _over_the_wire_r(server.step(_over_the_wire_p(client.respond(cont.data))))
    return client, final


def test_scram_exchange_succeeds_with_the_right_secret() -> None:
    client, final = _run_exchange(make_verifier("s3cret-token"), "s3cret-token")
    assert final.code == be.AUTH_SASL_FINAL
    assert final.data.startswith(b"v=")
    client.finish(final.data)  # the client checks the server signature


def test_scram_exchange_fails_with_a_wrong_secret() -> None:
    with pytest.raises(InvalidPassword):
        _run_exchange(make_verifier("s3cret-token"), "s3cret-tokeN")


def test_scram_exchange_fails_for_an_unknown_identity_only_at_the_end() -> None:
    server = ScramServerExchange(None)
    client = ScramClientExchange([SCRAM], "nobody", "anything")
    cont = server.step(client.initial())
    # the challenge looks like any other: nonce, salt, iteration count
    attrs = _attrs(cont.data)
    assert set(attrs) == {"r", "s", "i"}
    assert len(base64.b64decode(attrs["s"])) >= 16
    assert attrs["i"] == str(ITER)
    final = client.respond(cont.data)
    with pytest.raises(InvalidPassword):
        server.step(final)


def test_unknown_identity_with_a_mock_salt_shows_the_same_salt_every_time() -> None:
    mock_salt = b"\x07" * 16
    salts = set()
    for _ in range(2):
        server = ScramServerExchange(None, mock_salt=mock_salt)
        salts.add(_attrs(server.step(RfcClient("x").initial()).data)["s"])
    assert salts == {base64.b64encode(mock_salt).decode()}


def test_client_rejects_a_server_that_does_not_know_the_verifier() -> None:
    client, final = _run_exchange(make_verifier("pw"), "pw")
    sig = bytearray(base64.b64decode(final.data[2:]))
    sig[0] ^= 1
    with pytest.raises(UpstreamUnavailable):
        client.finish(b"v=" + base64.b64encode(bytes(sig)))


def test_client_refuses_upstream_without_scram() -> None:
    with pytest.raises(UpstreamUnavailable):
        ScramClientExchange(["SCRAM-SHA-256-PLUS-ONLY"], "u", "p")


def test_client_initial_is_a_sasl_initial_response() -> None:
    mechanism, data = parse_sasl_initial(ScramClientExchange([SCRAM], "u", "p").initial())
    assert mechanism == SCRAM
    assert data.startswith(b"n,,n=")
    assert "r" in _attrs(data[3:])


# --- ScramServerExchange against an independent client, as libpq speaks ---------------


class RfcClient:
    """A minimal SCRAM-SHA-256 client written from RFC 5802, sending what libpq sends:
    gs2 header 'n,,' and an empty user name (PostgreSQL takes it from the startup
    packet)."""

    def __init__(self, password: str, gs2: str = "n,,") -> None:
        self.password = password
        self.gs2 = gs2
        self.bare = "n=,r=" + base64.b64encode(os.urandom(18)).decode()

    def initial(self) -> bytes:
        first = (self.gs2 + self.bare).encode()
        return b"SCRAM-SHA-256\x00" + struct.pack("!i", len(first)) + first

    def final(self, server_first: bytes) -> bytes:
        attrs = _attrs(server_first)
        assert attrs["r"].startswith(self.bare.split("r=", 1)[1])
        salted = _salted(self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(self.gs2.encode()).decode()},r={attrs['r']}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


@pytest.mark.parametrize("gs2", ["n,,", "y,,"])
def test_server_accepts_libpq_style_client(gs2: str) -> None:
    client = RfcClient("tok-123", gs2)
    server = ScramServerExchange(make_verifier("tok-123"))
    cont = server.step(client.initial())
    final = server.step(client.final(cont.data))
    assert final.code == be.AUTH_SASL_FINAL
    assert final.data == b"v=" + base64.b64encode(client.expected_server_signature)


def test_server_rejects_libpq_style_client_with_wrong_password() -> None:
    client = RfcClient("tok-124")
    server = ScramServerExchange(make_verifier("tok-123"))
    cont = server.step(client.initial())
    with pytest.raises(InvalidPassword):
        server.step(client.final(cont.data))


def test_server_rejects_a_replayed_proof_for_a_new_nonce() -> None:
    client = RfcClient("tok")
    verifier = make_verifier("tok")
    first_server = ScramServerExchange(verifier)
    proof = client.final(first_server.step(client.initial()).data)
    second_server = ScramServerExchange(verifier)
    second_server.step(client.initial())  # a fresh server nonce
    with pytest.raises(RowgateError):
        second_server.step(proof)


@pytest.mark.parametrize(
    "initial",
    [
        b"PLAIN\x00" + struct.pack("!i", 3) + b"abc",  # another mechanism
        b"SCRAM-SHA-256\x00" + struct.pack("!i", 10) + b"n,,",  # truncated
        b"SCRAM-SHA-256\x00" + struct.pack("!i", 9) + b"n,,n=,r=x" + b"junk",  # trailing bytes
        b"SCRAM-SHA-256",  # unterminated mechanism
        b"SCRAM-SHA-256\x00" + struct.pack("!i", 17) + b"p=tls-unique,,n=,r=x"[:17],  # channel binding
        b"SCRAM-SHA-256\x00" + struct.pack("!i", 10) + b"n,a=u,n=,r",  # authzid, bad attrs
        b"SCRAM-SHA-256\x00" + struct.pack("!i", 5) + b"n,,n=",  # no nonce
        b"SCRAM-SHA-256\x00" + struct.pack("!i", 4) + b"\xff\xfe\xfd\xfc",  # not UTF-8
    ],
)
def test_server_rejects_malformed_client_first(initial: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        ScramServerExchange(make_verifier("x")).step(initial)


def test_server_rejects_messages_after_the_exchange() -> None:
    client = RfcClient("tok")
    server = ScramServerExchange(make_verifier("tok"))
    final = client.final(server.step(client.initial()).data)
    server.step(final)
    with pytest.raises(ProtocolViolation):
        server.step(final)


@FUZZ
@given(first=st.binary(max_size=120), second=st.binary(max_size=120), valid_first=st.booleans())
def test_fuzz_server_exchange_only_raises_rowgate_errors(first: bytes, second: bytes, valid_first: bool) -> None:
    server = ScramServerExchange(_FUZZ_VERIFIER)
    try:
        server.step(RfcClient("x").initial() if valid_first else first)
        server.step(second)
    except (ProtocolViolation, InvalidPassword):
        pass


@FUZZ
@given(server_first=st.binary(max_size=120), server_final=st.binary(max_size=60), data=st.data())
def test_fuzz_client_exchange_only_raises_upstream_unavailable(
    server_first: bytes, server_final: bytes, data: Any
) -> None:
    client = ScramClientExchange([SCRAM], "u", "p")
    nonce = _attrs(parse_sasl_initial(client.initial())[1][3:])["r"].encode()
    if data.draw(st.booleans()):  # something that gets past the nonce check
        server_first = b"r=" + nonce + server_first
    try:
        client.respond(server_first)
        client.finish(server_final)
    except UpstreamUnavailable:
        pass


_FUZZ_VERIFIER = make_verifier("fuzz", iterations=ITER)


# --- MD5 -----------------------------------------------------------------------------


def test_md5_response_matches_postgresql_formula() -> None:
    user, password, salt = "alice", "pässword", b"\x01\x02\xfe\xff"
    inner = hashlib.md5(password.encode("utf-8") + user.encode("utf-8")).hexdigest()
    expected = "md5" + hashlib.md5(inner.encode("ascii") + salt).hexdigest()
    assert md5_response(user, password, salt) == expected.encode("ascii") + b"\x00"


def test_md5_inner_hash_is_what_postgresql_stores() -> None:
    # PostgreSQL stores 'md5' || md5(password || user); for postgres/postgres that is
    # the widely published md53175bce1d3201d16594cebf9d7eb3f9d
    salt = b"\x00\x00\x00\x00"
    expected = b"md5" + hashlib.md5(b"3175bce1d3201d16594cebf9d7eb3f9d" + salt).hexdigest().encode() + b"\x00"
    assert md5_response("postgres", "postgres", salt) == expected
    response = md5_response("postgres", "postgres", b"abcd")
    assert len(response) == 3 + 32 + 1
    assert response != expected  # the salt matters


# --- against a real PostgreSQL --------------------------------------------------------


def _login(host: str, port: int, user: str, password: str, database: str) -> list[Any]:
    """Log in with nothing but the sans-IO codec and a blocking socket; return the
    backend messages up to ReadyForQuery or the first ErrorResponse."""
    got: list[Any] = []
    scram: ScramClientExchange | None = None
    framer = Framer(peer="server")
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(fe.StartupMessage(fe.PROTOCOL_3_0, (("user", user), ("database", database))).encode())
        while True:
            data = sock.recv(65536)
            assert data, "server closed the connection"
            for ev in framer.feed(data):
                assert isinstance(ev, Frame)
                msg = be.decode_backend(ev.type, ev.payload)
                got.append(msg)
                if isinstance(msg, be.Authentication) and msg.code == be.AUTH_MD5:
                    sock.sendall(fe.PasswordMessage(md5_response(user, password, msg.data)).encode())
                elif isinstance(msg, be.Authentication) and msg.code == be.AUTH_SASL:
                    scram = ScramClientExchange(msg.mechanisms(), user, password)
                    sock.sendall(fe.PasswordMessage(scram.initial()).encode())
                elif isinstance(msg, be.Authentication) and msg.code == be.AUTH_SASL_CONTINUE:
                    assert scram is not None
                    sock.sendall(fe.PasswordMessage(scram.respond(msg.data)).encode())
                elif isinstance(msg, be.Authentication) and msg.code == be.AUTH_SASL_FINAL:
                    assert scram is not None
                    scram.finish(msg.data)
                elif isinstance(msg, be.ReadyForQuery | be.ErrorResponse):
                    sock.sendall(fe.Terminate().encode())
                    return got


@pytest.fixture(scope="module")
def auth_upstream(upstream: Any) -> Any:
    if not upstream.embedded:
        pytest.skip("needs the embedded upstream with md5/scram roles")
    return upstream


@pytest.mark.parametrize(("role", "code"), [("rg_md5", be.AUTH_MD5), ("rg_scram", be.AUTH_SASL)])
def test_real_postgresql_accepts_our_client_auth(auth_upstream: Any, role: str, code: int) -> None:
    from conftest import AUTH_PASSWORD  # type: ignore[import-not-found]

    got = _login(auth_upstream.host, auth_upstream.port, role, AUTH_PASSWORD, "postgres")
    assert got[0].code == code
    assert be.Authentication(be.AUTH_OK) in got
    assert isinstance(got[-1], be.ReadyForQuery)


@pytest.mark.parametrize("role", ["rg_md5", "rg_scram"])
def test_real_postgresql_rejects_a_wrong_password(auth_upstream: Any, role: str) -> None:
    got = _login(auth_upstream.host, auth_upstream.port, role, "not-the-password", "postgres")
    assert isinstance(got[-1], be.ErrorResponse)
    assert got[-1].sqlstate == "28P01"
