"""Authentication math, sans-IO: SCRAM-SHA-256 as server (clients proving a rowgate
token) and as client (rowgate proving itself upstream), plus MD5 and cleartext.
The SCRAM primitives come from ``scramp``; this module maps them onto the
protocol's Authentication and 'p' messages."""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import scramp

from rowgate.errors import InvalidPassword, ProtocolViolation, UpstreamUnavailable
from rowgate.pgwire.backend import AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, Authentication
from rowgate.pgwire.buffer import Reader, cstr, i32

SCRAM = "SCRAM-SHA-256"
_MECH = scramp.ScramMechanism(SCRAM)


class ScramVerifier(NamedTuple):
    """What is stored instead of a secret: enough to check a proof, useless to log in."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def make_verifier(secret: str, iterations: int = 4096) -> ScramVerifier:
    salt, stored, server, i = _MECH.make_auth_info(secret, iteration_count=iterations)
    return ScramVerifier(salt, stored, server, i)


def parse_sasl_initial(payload: bytes) -> tuple[str, bytes]:
    r = Reader(payload, "SASLInitialResponse")
    mechanism = r.cstring()
    data = r.nullable()
    r.end()
    return mechanism, data or b""


class ScramServerExchange:
    """One server-side SCRAM-SHA-256 exchange. With ``verifier=None`` (unknown
    identity) it runs the exchange against a random verifier and fails at the end,
    so a client cannot tell an unknown name from a wrong secret."""

    def __init__(self, verifier: ScramVerifier | None) -> None:
        v = verifier or make_verifier(os.urandom(16).hex())
        self._known = verifier is not None
        self._server = _MECH.make_server(lambda _user: tuple(v))
        self._stage = 0

    @staticmethod
    def request() -> Authentication:
        return Authentication.sasl([SCRAM])

    def step(self, payload: bytes) -> Authentication:
        """Feed one 'p' payload; return the next Authentication message to send.
        Raises InvalidPassword when the proof is wrong."""
        try:
            if self._stage == 0:
                mechanism, data = parse_sasl_initial(payload)
                if mechanism != SCRAM:
                    raise ProtocolViolation(f"unsupported SASL mechanism {mechanism!r}; use {SCRAM}")
                self._server.set_client_first(data.decode("utf-8"))
                self._stage = 1
                return Authentication(AUTH_SASL_CONTINUE, self._server.get_server_first().encode())
            if self._stage == 1:
                self._stage = 2
                self._server.set_client_final(payload.decode("utf-8"))
                if not self._known:
                    raise InvalidPassword("password authentication failed")
                return Authentication(AUTH_SASL_FINAL, self._server.get_server_final().encode())
        except scramp.ScramException as e:
            raise InvalidPassword("password authentication failed") from e
        except UnicodeDecodeError as e:
            raise ProtocolViolation("malformed SCRAM message") from e
        raise ProtocolViolation("unexpected SASL message after the exchange finished")


class ScramClientExchange:
    """The client side, for rowgate's own login to an upstream."""

    def __init__(self, mechanisms: list[str], user: str, password: str) -> None:
        if SCRAM not in mechanisms:
            raise UpstreamUnavailable(f"upstream offers SASL mechanisms {mechanisms}, rowgate needs {SCRAM}")
        self._client = scramp.ScramClient([SCRAM], user, password)

    def initial(self) -> bytes:
        first_text: str = self._client.get_client_first()
        first = first_text.encode()
        return cstr(SCRAM) + i32(len(first)) + first

    def respond(self, server_first: bytes) -> bytes:
        try:
            self._client.set_server_first(server_first.decode())
            final: str = self._client.get_client_final()
            return final.encode()
        except scramp.ScramException as e:
            raise UpstreamUnavailable(f"upstream SCRAM exchange failed: {e}") from e

    def finish(self, server_final: bytes) -> None:
        try:
            self._client.set_server_final(server_final.decode())
        except scramp.ScramException as e:
            raise UpstreamUnavailable("upstream server signature is invalid (not the server we expect?)") from e


def md5_response(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\x00"
