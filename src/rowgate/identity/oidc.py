"""OIDC: a JWT from the organisation's identity provider as the password.

Only asymmetric algorithms from the config are accepted (never ``none`` or HS*, so a
token "signed" with the public key as an HMAC secret fails); keys come from a JWKS
file or https URL, cached and fetched again, at most every ``jwks_min_refresh``,
when a token names an unknown ``kid``. Issuer, audience, expiry and not-before are
checked. Blocking (file and network reads): call ``verify`` from a worker thread."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import jwt

from rowgate.config import Oidc
from rowgate.errors import ConfigError, InvalidPassword
from rowgate.identity.principal import PRINCIPAL_KINDS, Principal, PrincipalKind

FETCH_TIMEOUT = 5.0
log = logging.getLogger("rowgate.auth")


def looks_like_jwt(password: str) -> bool:
    # a JWS compact serialisation: base64url header (a JSON object, so "eyJ"), payload, signature
    return password.startswith("eyJ") and password.count(".") == 2


@dataclass(frozen=True)
class OidcLogin:
    principal: Principal
    expires: float  # the token's exp (epoch seconds)


class JwksCache:
    def __init__(self, cfg: Oidc, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = cfg.jwks
        self.max_age = cfg.jwks_max_age
        self.min_refresh = cfg.jwks_min_refresh
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched = float("-inf")
        self._load()  # at start-up: a missing or broken JWKS is a config error, not a login failure
        self._attempted = self._fetched  # the last fetch, successful or not

    def _read(self) -> Mapping[str, Any]:
        if self.source.startswith("https://"):
            with urllib.request.urlopen(self.source, timeout=FETCH_TIMEOUT) as resp:  # https only (checked in config)
                data = json.loads(resp.read(1 << 20))
        else:
            data = json.loads(Path(self.source.removeprefix("file://")).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError("not a JWKS (expected an object with a 'keys' list)")
        return data

    def _load(self) -> None:
        try:
            data = self._read()
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise ConfigError(f"auth.oidc.jwks: cannot load {self.source}: {e}") from e
        keys: dict[str | None, jwt.PyJWK] = {}
        for k in data["keys"]:
            # a symmetric ("oct") key in a public JWKS would be a shared secret: never a signing key for us
            if not isinstance(k, dict) or k.get("use", "sig") != "sig" or k.get("kty") == "oct":
                continue
            try:
                keys[k.get("kid")] = jwt.PyJWK(k)
            except jwt.PyJWTError:
                continue  # a key type this build cannot use (or a symmetric one): not a signing key for us
        self._keys = keys
        self._fetched = self.clock()

    def key(self, kid: str | None) -> jwt.PyJWK | None:
        with self._lock:
            now = self.clock()
            stale = self.source.startswith("https://") and now - self._fetched > self.max_age
            # at most one fetch per jwks_min_refresh, failed ones included: neither a flood of
            # made-up kids nor every login while the provider is down may hammer the provider
            if (stale or kid not in self._keys) and now - self._attempted >= self.min_refresh:
                self._attempted = now
                try:
                    self._load()
                except ConfigError as e:  # keep the keys we have; the provider may be back later
                    log.warning("%s; keeping the %d keys fetched before", e.message, len(self._keys))
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            return self._keys.get(kid)


class OidcVerifier:
    def __init__(self, cfg: Oidc, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.jwks = JwksCache(cfg)

    def _refuse(self, user: str, why: str) -> InvalidPassword:
        return InvalidPassword(
            f'JWT authentication failed for user "{user}"',
            detail=why,
            hint="get a fresh token from your identity provider",
        )

    def verify(self, token: str, user: str) -> OidcLogin:
        cfg = self.cfg
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise self._refuse(user, f"malformed token: {e}") from None
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise self._refuse(user, f"algorithm {alg!r} is not accepted (auth.oidc.algorithms: {cfg.algorithms})")
        kid = header.get("kid")
        key = self.jwks.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise self._refuse(user, f"no key with kid {kid!r} in the JWKS")
        if key.algorithm_name != alg and not _same_family(key.algorithm_name, alg):
            raise self._refuse(user, f"the key {kid!r} is not a {alg} key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as e:
            raise self._refuse(user, str(e)) from None
        name = claims.get(cfg.name_claim)
        if not isinstance(name, str) or not name:
            raise self._refuse(user, f"the token has no {cfg.name_claim!r} claim")
        if name != user:
            raise self._refuse(user, f"the token is for {name!r}: connect with that user name")
        return OidcLogin(self._principal(name, claims, user), float(claims["exp"]))

    def _principal(self, name: str, claims: Mapping[str, Any], user: str) -> Principal:
        cfg = self.cfg
        raw = claims.get(cfg.groups_claim, [])
        if isinstance(raw, str):
            raw = raw.split()
        if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
            raise self._refuse(user, f"the {cfg.groups_claim!r} claim is not a list of strings")
        kind: str = cfg.kind
        if cfg.kind_claim is not None and cfg.kind_claim in claims:
            kind = str(claims[cfg.kind_claim])
            if kind not in PRINCIPAL_KINDS:
                raise self._refuse(user, f"the {cfg.kind_claim!r} claim must be one of {PRINCIPAL_KINDS}")
        attrs = {
            attr: str(claims[claim])
            for attr, claim in cfg.attribute_claims.items()
            if isinstance(claims.get(claim), str | int | float | bool)
        }
        return Principal(name, cast(PrincipalKind, kind), tuple(raw), MappingProxyType(attrs))


def _same_family(key_alg: str | None, alg: str) -> bool:
    # an RSA JWK without "alg" defaults to RS256 in PyJWT, but serves RS384/RS512/PS* as well
    return key_alg is not None and key_alg[:2] in ("RS", "PS") and alg[:2] in ("RS", "PS")
