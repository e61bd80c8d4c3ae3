"""Static token identities from the config file. Only SCRAM verifiers are kept in
memory after start-up, so a heap dump does not reveal the tokens."""

from __future__ import annotations

from rowgate.config import Identity
from rowgate.errors import ConfigError
from rowgate.identity.principal import Principal
from rowgate.pgwire.auth import ScramVerifier, make_verifier


class TokenDirectory:
    def __init__(self, identities: dict[str, Identity]) -> None:
        self._entries: dict[str, tuple[Principal, ScramVerifier]] = {}
        for name, ident in identities.items():
            secret = ident.token.resolve(f"identities.{name}.token")
            if not secret:
                raise ConfigError(f"identities.{name}.token: the token is empty")
            principal = Principal(name, ident.kind, tuple(ident.groups))
            self._entries[name] = (principal, make_verifier(secret))

    def lookup(self, name: str) -> tuple[Principal, ScramVerifier] | None:
        return self._entries.get(name)

    def __len__(self) -> int:
        return len(self._entries)
