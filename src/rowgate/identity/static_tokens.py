"""Static token identities from the config file. Only SCRAM verifiers are kept in
memory after start-up, so a heap dump does not reveal the tokens."""

from __future__ import annotations

import hashlib
import hmac
import os

from rowgate.config import Identity
from rowgate.errors import ConfigError
from rowgate.identity.principal import Principal
from rowgate.pgwire.auth import ScramVerifier, make_verifier


class TokenDirectory:
    def __init__(self, identities: dict[str, Identity]) -> None:
        self._entries: dict[str, tuple[Principal, ScramVerifier]] = {}
        self._mock_key = os.urandom(32)
        for name, ident in identities.items():
            secret = ident.token.resolve(f"identities.{name}.token")
            if not secret:
                raise ConfigError(f"identities.{name}.token: the token is empty")
            principal = Principal(name, ident.kind, tuple(ident.groups))
            self._entries[name] = (principal, make_verifier(secret))

    def lookup(self, name: str) -> tuple[Principal, ScramVerifier] | None:
        return self._entries.get(name)

    def mock_salt(self, name: str) -> bytes:
        """The SCRAM salt shown to an unknown name: like a real identity's, the same on
        every attempt (and as long), so repeated attempts do not reveal the name is unknown."""
        salt = hmac.new(self._mock_key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        real = next(iter(self._entries.values()), None)
        return salt[: len(real[1].salt)] if real else salt

    def __len__(self) -> int:
        return len(self._entries)
