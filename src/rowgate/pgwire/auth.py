"""Authentication math, sans-IO: SCRAM-SHA-256 as server (clients proving a rowgate
token) and as client (rowgate proving itself upstream), plus MD5 and cleartext.
The SCRAM primitives come from ``scramp``; this module maps them onto the
protocol's Authentication and 'p' messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import NamedTuple

import scramp

from rowgate.errors import InvalidPassword, ProtocolViolation, UpstreamUnavailable
from rowgate.pgwire.backend import AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, Authentication
from rowgate.pgwire.buffer import Reader, cstr, i32

SCRAM = "SCRAM-SHA-256"
_MECH = scramp.ScramMechanism(SCRAM)
# PostgreSQL's SCRAM_DEFAULT_SALT_LEN. Every verifier rowgate makes, and every mock salt an
# unknown name is shown, has this length: a different one would tell which names exist.
SALT_LENGTH = 16


class ScramVerifier(NamedTuple):
    """What is stored instead of a secret: enough to check a proof, useless to log in."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def make_verifier(secret: str, iterations: int = 4096) -> ScramVerifier:
    salt, stored, server, i = _MECH.make_auth_info(secret, iteration_count=iterations, salt=os.urandom(SALT_LENGTH))
    return ScramVerifier(salt, stored, server, i)


def parse_sasl_initial(payload: bytes) -> tuple[str, bytes]:
    r = Reader(payload, "SASLInitialResponse")
    mechanism = r.cstring()
    data = r.nullable()
    r.end()
    return mechanism, data or b""


class ScramServerExchange:
    """One server-side SCRAM-SHA-256 exchange (RFC 5802/7677) as PostgreSQL runs it:
    the user name inside the SCRAM messages is empty (it came in the startup packet),
    which ``scramp``'s server refuses, so the server half is done here.

    With ``verifier=None`` (unknown identity) the exchange runs against a random
    verifier and fails at the end, so a client cannot tell an unknown name from a
    wrong secret. Pass ``mock_salt`` (stable per name, see ``IdentityDirectory.mock_salt``):
    a salt that changed on every attempt would give the unknown name away."""

    def __init__(self, verifier: ScramVerifier | None, *, mock_salt: bytes | None = None) -> None:
        # an unknown name costs no key derivation either: its timing matches a known one
        self._verifier = verifier or ScramVerifier(
            mock_salt or os.urandom(SALT_LENGTH), os.urandom(32), os.urandom(32), 4096
        )
        self._known = verifier is not None
        self._stage = 0
        self._nonce = ""
        self._auth_prefix = ""
        self._gs2 = ""

    @staticmethod
    def request() -> Authentication:
        return Authentication.sasl([SCRAM])

    def step(self, payload: bytes) -> Authentication:
        """Feed one 'p' payload; return the next Authentication message to send.
        Raises InvalidPassword when the proof is wrong."""
        try:
            if self._stage == 0:
                self._stage = 1
                mechanism, data = parse_sasl_initial(payload)
                if mechanism != SCRAM:
                    raise ProtocolViolation(f"unsupported SASL mechanism {mechanism!r}; use {SCRAM}")
                return Authentication(AUTH_SASL_CONTINUE, self._client_first(data.decode("utf-8")).encode())
            if self._stage == 1:
                self._stage = 2
                return Authentication(AUTH_SASL_FINAL, self._client_final(payload.decode("utf-8")).encode())
        except UnicodeDecodeError as e:
            raise ProtocolViolation("malformed SCRAM message: not UTF-8") from e
        raise ProtocolViolation("unexpected SASL message after the exchange finished")

    def _client_first(self, msg: str) -> str:
        # gs2-header: 'n' (no channel binding) or 'y' (client could, server did not offer)
        parts = msg.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y") or parts[1]:
            raise ProtocolViolation("malformed SCRAM client-first message (channel binding is not offered)")
        self._gs2 = f"{parts[0]},,"
        bare = parts[2]
        attrs = _attributes(bare)
        cnonce = attrs.get("r", "")
        if "n" not in attrs or not cnonce or "m" in attrs or not cnonce.isprintable() or "," in cnonce:
            raise ProtocolViolation("malformed SCRAM client-first message")
        v = self._verifier
        self._nonce = cnonce + base64.b64encode(os.urandom(18)).decode()
        server_first = f"r={self._nonce},s={base64.b64encode(v.salt).decode()},i={v.iterations}"
        self._auth_prefix = f"{bare},{server_first},"
        return server_first

    def _client_final(self, msg: str) -> str:
        without_proof, sep, proof_attr = msg.rpartition(",p=")
        attrs = _attributes(without_proof)
        if not sep or attrs.get("r") != self._nonce:
            raise ProtocolViolation("malformed SCRAM client-final message")
        if attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            raise ProtocolViolation("SCRAM channel binding mismatch")
        try:
            proof = base64.b64decode(proof_attr, validate=True)
        except ValueError as e:
            raise ProtocolViolation("malformed SCRAM proof") from e
        v = self._verifier
        auth_message = (self._auth_prefix + without_proof).encode()
        signature = hmac.new(v.stored_key, auth_message, hashlib.sha256).digest()
        if len(proof) != len(signature):
            raise InvalidPassword("password authentication failed")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key)
        if not ok or not self._known:
            raise InvalidPassword("password authentication failed")
        server_signature = hmac.new(v.server_key, auth_message, hashlib.sha256).digest()
        return "v=" + base64.b64encode(server_signature).decode()


def _attributes(msg: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in msg.split(","):
        key, eq, value = item.partition("=")
        if len(key) != 1 or not eq:
            raise ProtocolViolation("malformed SCRAM message attribute")
        out[key] = value
    return out


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
        except (scramp.ScramException, UnicodeDecodeError) as e:
            raise UpstreamUnavailable(f"upstream SCRAM exchange failed: {e}") from e

    def finish(self, server_final: bytes) -> None:
        try:
            self._client.set_server_final(server_final.decode())
        except (scramp.ScramException, UnicodeDecodeError) as e:
            raise UpstreamUnavailable("upstream server signature is invalid (not the server we expect?)") from e


def md5_response(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\x00"
