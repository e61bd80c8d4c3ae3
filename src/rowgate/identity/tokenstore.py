"""Token identities kept in the state store, managed with ``rowgate token``.

Only SCRAM-SHA-256 verifiers are stored, never a token: a copy of the store lets no
one log in. A counter in ``rowgate_meta`` changes with every create and revoke, so
a proxy notices revocations with one cheap query per poll."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rowgate.errors import ConfigError
from rowgate.identity.principal import PRINCIPAL_KINDS, Principal, PrincipalKind
from rowgate.pgwire.auth import ScramVerifier, make_verifier
from rowgate.statestore import Database

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,62}$")
_VERSION = "tokens_version"
_MOCK_KEY = "mock_salt_key"


@dataclass(frozen=True)
class StoredToken:
    id: str  # changes when a name is issued again: sessions of the old token still end on revocation
    name: str
    kind: PrincipalKind
    groups: tuple[str, ...]
    attributes: dict[str, str]
    on_behalf_of: str | None
    verifier: ScramVerifier = field(repr=False)
    created: float
    expires: float | None
    revoked: float | None

    def principal(self) -> Principal:
        return Principal(self.name, self.kind, self.groups, MappingProxyType(dict(self.attributes)), self.on_behalf_of)

    def status(self, now: float) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


_COLUMNS = (
    "id, name, kind, groups, attributes, on_behalf_of, salt, stored_key, server_key, iterations, created, expires, "
    "revoked"
)


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction():
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS rowgate_tokens (
                    name TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, groups TEXT NOT NULL,
                    attributes TEXT NOT NULL, on_behalf_of TEXT, salt {db.blob} NOT NULL,
                    stored_key {db.blob} NOT NULL, server_key {db.blob} NOT NULL, iterations INTEGER NOT NULL,
                    created {db.real} NOT NULL, expires {db.real}, revoked {db.real})"""
            )
            db.execute("CREATE TABLE IF NOT EXISTS rowgate_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "INSERT INTO rowgate_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (_MOCK_KEY, secrets.token_hex(32)),
            )
            db.execute(
                "INSERT INTO rowgate_meta (key, value) VALUES (?, '0') ON CONFLICT (key) DO NOTHING", (_VERSION,)
            )

    def mock_key(self) -> bytes:
        """The key unknown names' SCRAM salts derive from: the same on every replica and
        after restarts, so a salt that changes never gives an unknown name away."""
        return bytes.fromhex(self.db.query("SELECT value FROM rowgate_meta WHERE key = ?", (_MOCK_KEY,))[0][0])

    def version(self) -> int:
        return int(self.db.query("SELECT value FROM rowgate_meta WHERE key = ?", (_VERSION,))[0][0])

    def _bump(self) -> None:
        # text arithmetic in SQL keeps concurrent writers (other replicas, the CLI) from losing updates
        self.db.execute(
            "UPDATE rowgate_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = ?", (_VERSION,)
        )

    def create(
        self,
        name: str,
        *,
        kind: str,
        groups: tuple[str, ...],
        attributes: dict[str, str],
        on_behalf_of: str | None,
        expires: float | None,
        now: float,
    ) -> tuple[str, StoredToken]:
        """Issue a token; returns it (shown once, never stored) and its record. A name
        whose token is revoked or expired may be issued again."""
        if not NAME.match(name):
            raise ConfigError(
                f"invalid identity name {name!r}",
                hint="use letters, digits and _ . @ + - (at most 63 characters, not starting with a symbol)",
            )
        if kind not in PRINCIPAL_KINDS:
            raise ConfigError(f"invalid kind {kind!r}; use one of {', '.join(PRINCIPAL_KINDS)}")
        if on_behalf_of is not None and kind != "agent":
            raise ConfigError("--on-behalf-of is for agents (--kind agent)")
        token = secrets.token_urlsafe(32)
        v = make_verifier(token)
        rec = StoredToken(
            secrets.token_hex(8), name, kind, groups, attributes, on_behalf_of, v, now, expires,
            None,
        )
        with self.db.transaction():
            old = self.get(name)
            if old is not None and old.status(now) == "active":
                raise ConfigError(
                    f'identity "{name}" already has an active token',
                    hint=f"revoke it first (rowgate token revoke {name}) or choose another name",
                )
            self.db.execute("DELETE FROM rowgate_tokens WHERE name = ?", (name,))
            self.db.execute(
                f"INSERT INTO rowgate_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id, name, kind, json.dumps(list(groups)), json.dumps(attributes), on_behalf_of, v.salt,
                    v.stored_key, v.server_key, v.iterations, now, expires, None,
                ),
            )
            self._bump()
        return token, rec

    def revoke(self, name: str, now: float) -> StoredToken | None:
        """Revoke ``name``'s token; None if there is none. Revoking twice keeps the first time."""
        with self.db.transaction():
            if self.get(name) is None:
                return None
            self.db.execute("UPDATE rowgate_tokens SET revoked = ? WHERE name = ? AND revoked IS NULL", (now, name))
            self._bump()
            return self.get(name)

    def get(self, name: str) -> StoredToken | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM rowgate_tokens WHERE name = ?", (name,))
        return _record(rows[0]) if rows else None

    def all(self) -> list[StoredToken]:
        return [_record(r) for r in self.db.query(f"SELECT {_COLUMNS} FROM rowgate_tokens ORDER BY name")]

    def live_ids(self) -> set[str]:
        """Ids of tokens not revoked (expiry is checked by time, not here)."""
        return {r[0] for r in self.db.query("SELECT id FROM rowgate_tokens WHERE revoked IS NULL")}


def _record(r: tuple[Any, ...]) -> StoredToken:
    verifier = ScramVerifier(bytes(r[6]), bytes(r[7]), bytes(r[8]), int(r[9]))
    return StoredToken(
        r[0], r[1], r[2], tuple(json.loads(r[3])), dict(json.loads(r[4])), r[5], verifier, float(r[10]),
        None if r[11] is None else float(r[11]), None if r[12] is None else float(r[12]),
    )
