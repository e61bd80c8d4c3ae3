"""OIDC JWTs as passwords, over TLS only, with keys and a JWKS made by the test:
RS256, ES256 and EdDSA tokens log in; expired, not-yet-valid, wrong audience or
issuer, bad signature, unknown kid, ``alg: none`` and HS256 signed with the public
key are all refused; without TLS a JWT never works; a session ends when its JWT does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from certs import make_certs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from proxyutil import TOKENS, RunningProxy, UpstreamDB, start_proxy

ISSUER = "https://idp.example.test"
AUDIENCE = "rowgate"


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.by_alg: dict[str, tuple[str, Any]] = {"RS256": ("rsa-1", self.rsa), "ES256": ("ec-1", self.ec),
                                                   "EdDSA": ("ed-1", self.ed)}

    def jwks(self) -> dict[str, Any]:
        keys = []
        for alg, (kid, key) in self.by_alg.items():
            algo = jwt.get_algorithm_by_name(alg)
            jwk = json.loads(algo.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, alg: str = "RS256", sub: str = "carol", **claims: Any) -> str:
        kid, key = self.by_alg[alg]
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300, "groups": ["analysts"],
                "team": "risk", **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand: 'alg: none' (key None) or HS256 keyed with ``key``."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def oidc_proxy(upstream: UpstreamDB, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    tmp = tmp_path_factory.mktemp("oidc")
    certs = make_certs(tmp / "certs")
    (tmp / "jwks.json").write_text(json.dumps(keys.jwks()))
    p = start_proxy(
        upstream,
        tmp,
        listen={"tls": {"mode": "optional", "cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}},
        auth={
            "oidc": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": "jwks.json", "leeway": 0, "expiry_grace": "1s",
                     "attribute_claims": {"team": "team"}, "kind_claim": "rowgate_kind"},
            "throttle": {"enabled": False},
        },
    )
    yield p
    p.stop()


def _connect(p: RunningProxy, user: str, password: str, sslmode: str = "require") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=p.port, user=user, password=password, dbname="app",
                           sslmode=sslmode, autocommit=True, connect_timeout=10)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_valid_jwt_logs_in_over_tls(oidc_proxy: RunningProxy, keys: Keys, alg: str) -> None:
    with _connect(oidc_proxy, "carol", keys.token(alg, rowgate_kind="service")) as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("rowgate:carol",)
        s = next(s for s in oidc_proxy.server.sessions.values() if s.info.principal and
                 s.info.principal.name == "carol")
        p = s.info.principal
        assert p is not None and p.groups == ("analysts",) and p.kind == "service"
        assert dict(p.attributes) == {"team": "risk"}
        assert s.login is not None and s.login.method == "jwt" and s.login.deadline is not None


def test_tokens_still_work_over_tls_as_cleartext_inside_tls(oidc_proxy: RunningProxy) -> None:
    with _connect(oidc_proxy, "alice", TOKENS["alice"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(oidc_proxy, "alice", TOKENS["bob"])
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(oidc_proxy, "nobody-here", TOKENS["bob"])


def _bad_tokens(keys: Keys) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "exp": now + 300}
    public_pem = keys.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    good = keys.token()
    head, _, signature = good.split(".")
    forged = jwt.encode(claims, keys.other_rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    return {
        "expired": keys.token(exp=now - 60, iat=now - 600),
        "not yet valid": keys.token(nbf=now + 600),
        "wrong audience": keys.token(aud="someone-else"),
        "wrong issuer": keys.token(iss="https://evil.example.test"),
        "no expiry": keys.token(exp=None),
        "bad signature": forged,
        "tampered claims": f"{head}.{_b64(json.dumps({**claims, 'groups': ['admins']}).encode())}.{signature}",
        "unknown kid": jwt.encode(claims, keys.rsa, algorithm="RS256", headers={"kid": "rsa-unknown"}),
        "alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims, None),
        "HS256 with the public key": _unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims, public_pem),
        "another user's token": keys.token(sub="dave"),
    }


WHY = {
    "expired": "Signature has expired",
    "not yet valid": "not yet valid",
    "wrong audience": "Audience doesn't match",
    "wrong issuer": "Invalid issuer",
    "no expiry": 'missing the "exp" claim',
    "bad signature": "Signature verification failed",
    "tampered claims": "Signature verification failed",
    "unknown kid": "no key with kid",
    "alg none": "algorithm 'none' is not accepted",
    "HS256 with the public key": "algorithm 'HS256' is not accepted",
    "another user's token": "the token is for 'dave'",
}


def test_bad_jwts_are_refused(oidc_proxy: RunningProxy, keys: Keys) -> None:
    for case, token in _bad_tokens(keys).items():
        with pytest.raises(psycopg.OperationalError) as e:
            _connect(oidc_proxy, "carol", token).close()
        assert "JWT authentication failed" in str(e.value), case
        assert WHY[case] in str(e.value), (case, str(e.value))


def test_jwt_without_tls_is_refused(oidc_proxy: RunningProxy, keys: Keys) -> None:
    """Without TLS the login is SCRAM, where a JWT is just a wrong password."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as e:
        _connect(oidc_proxy, "carol", keys.token(), sslmode="disable")
    assert "only over TLS" in str(e.value)
    with _connect(oidc_proxy, "alice", TOKENS["alice"], sslmode="disable") as conn:  # tokens do work
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_session_ends_when_its_jwt_expires(oidc_proxy: RunningProxy, keys: Keys) -> None:
    exp = time.time() + 3
    with _connect(oidc_proxy, "carol", keys.token("ES256", exp=int(exp))) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError, match="JWT of identity \"carol\" expired") as e:
            while time.time() < exp + 10:
                conn.execute("SELECT 1")
                time.sleep(0.2)
        # grace 1s plus a poll interval
        assert time.time() < exp + 1 + 2.5, e.value


def test_oidc_needs_tls_in_config(upstream: UpstreamDB, tmp: Path) -> None:
    from rowgate.errors import ConfigError

    with pytest.raises(ConfigError, match="JWTs are accepted only over TLS"):
        start_proxy(upstream, tmp, auth={"oidc": {"issuer": ISSUER, "audience": AUDIENCE, "jwks": "x.json"}})


def test_jwks_refetched_on_unknown_kid_rate_limited(keys: Keys, tmp: Path) -> None:
    from rowgate.config import Oidc
    from rowgate.identity.oidc import JwksCache

    path = tmp / "jwks.json"
    doc = keys.jwks()
    path.write_text(json.dumps({"keys": doc["keys"][:1]}))
    now = [1000.0]
    cache = JwksCache(Oidc(issuer=ISSUER, audience=AUDIENCE, jwks=str(path), jwks_min_refresh=30), lambda: now[0])
    assert cache.key("rsa-1") is not None and cache.key("ec-1") is None
    path.write_text(json.dumps(doc))  # the provider rotates in a new key
    now[0] += 10
    assert cache.key("ec-1") is None  # refetching for every unknown kid would let clients hammer the provider
    now[0] += 25
    assert cache.key("ec-1") is not None
