"""Where token identities come from: the config file's ``identities`` and the state
store's tokens, side by side. A name defined in both is refused at login (and at
``token create``) instead of silently picking one.

Verifiers of config identities are salted from the store's persisted key (random
per process without a store), exactly like the mock salt an unknown name gets: the
salt a client sees never tells a known name from an unknown one."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import scramp

from rowgate.config import Identity
from rowgate.errors import ConfigError, InvalidAuthorization
from rowgate.identity.principal import Principal
from rowgate.identity.tokenstore import TokenStore
from rowgate.pgwire.auth import SALT_LENGTH, ScramVerifier

ITERATIONS = 4096
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Credential:
    principal: Principal
    verifier: ScramVerifier
    source: Literal["config", "store"]
    token_id: str | None = None  # store tokens: which issue of the name
    expires: float | None = None  # epoch seconds
    revoked: bool = False


def verifier_for(secret: str, salt: bytes, iterations: int = ITERATIONS) -> ScramVerifier:
    s, stored, server, i = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        secret, iteration_count=iterations, salt=salt
    )
    return ScramVerifier(s, stored, server, i)


def check_cleartext(verifier: ScramVerifier, password: str) -> bool:
    """Whether ``password`` is the secret behind ``verifier`` (for cleartext password
    authentication inside TLS): the SCRAM key derivation, compared in constant time."""
    try:
        normalized = scramp.utils.saslprep(password)
    except Exception:  # scramp raises for prohibited characters: not any token of ours
        normalized = password
    salted = hashlib.pbkdf2_hmac("sha256", normalized.encode(), verifier.salt, verifier.iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key)


class IdentityDirectory:
    def __init__(self, identities: Mapping[str, Identity], store: TokenStore | None) -> None:
        self.store = store
        self._mock_key = store.mock_key() if store is not None else os.urandom(32)
        self._config: dict[str, Credential] = {}
        for name, ident in identities.items():
            secret = ident.token.resolve(f"identities.{name}.token")
            if not secret:
                raise ConfigError(f"identities.{name}.token: the token is empty")
            if len(secret) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"identities.{name}.token: the token is too short ({len(secret)} characters)",
                    hint=f"use at least {MIN_TOKEN_LENGTH} random characters, e.g. from: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                )
            principal = Principal(name, ident.kind, tuple(ident.groups))
            self._config[name] = Credential(principal, verifier_for(secret, self.mock_salt(name)), "config")

    def mock_salt(self, name: str) -> bytes:
        """The SCRAM salt shown to an unknown name: the same on every attempt, replica and
        restart (with a state store), so repeated attempts do not reveal the name is unknown."""
        return hmac.new(self._mock_key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:SALT_LENGTH]

    def in_config(self, name: str) -> bool:
        return name in self._config

    def lookup(self, name: str) -> Credential | None:
        """Blocking with a store (one indexed query): call it from a worker thread."""
        configured = self._config.get(name)
        stored = self.store.get(name) if self.store is not None else None
        if configured is not None and stored is not None:
            raise InvalidAuthorization(
                f'identity "{name}" is defined both in the config file and in the token store',
                hint="ask your administrator to remove one of them",
            )
        if stored is None:
            return configured
        return Credential(
            stored.principal(), stored.verifier, "store", stored.id, stored.expires, stored.revoked is not None
        )
