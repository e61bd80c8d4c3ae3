"""Token identities kept in the state store, managed with ``rowgate token``.

Only SCRAM-SHA-256 verifiers are stored, never a token: a copy of the store lets no
one log in. A counter in ``rowgate_meta`` changes with every create and revoke, so
a proxy notices revocations with one cheap query per poll.

Every change is also an event in ``rowgate_token_events`` (created, revoked, expired; when,
by whom), written in the same transaction as the change. The CLI that makes a change cannot
write the audit log (its journal has one writer, the proxy), so each proxy copies the events
into its audit chain and keeps how far it got in ``rowgate_meta`` (``audit.tokens``): a change
made while no proxy ran is recorded at the next start."""

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
_EVENTS = "token_events"  # set once the events table holds the tokens made before it existed
_CURSOR = "token_audit:"  # + replica: the last event that replica's audit log records
ACTIONS = ("created", "revoked", "expired")


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


@dataclass(frozen=True)
class TokenEvent:
    """A change of a token, without any secret: what the audit log records."""

    seq: int  # increases in commit order (every change first locks the version counter)
    token_id: str
    name: str
    action: str  # created | revoked | expired
    at: float
    actor: str | None  # who made it: the OS user and host of the CLI; None for expiry
    kind: str
    groups: tuple[str, ...]
    attributes: dict[str, str]
    on_behalf_of: str | None
    expires: float | None


_EVENT_COLUMNS = "seq, token_id, name, action, at, actor, kind, groups, attributes, on_behalf_of, expires"


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
            db.execute(
                f"""CREATE TABLE IF NOT EXISTS rowgate_token_events (
                    seq BIGINT PRIMARY KEY, token_id TEXT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL,
                    at {db.real} NOT NULL, actor TEXT, kind TEXT NOT NULL, groups TEXT NOT NULL,
                    attributes TEXT NOT NULL, on_behalf_of TEXT, expires {db.real}, UNIQUE (token_id, action))"""
            )
            if db.execute("INSERT INTO rowgate_meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO NOTHING",
                          (_EVENTS,)):
                # a store from before token events: its tokens' history, so the audit log misses none
                self._bump()
                for t in self.all():
                    self._event(t, "created", t.created, None)
                    if t.revoked is not None:
                        self._event(t, "revoked", t.revoked, None)

    def mock_key(self) -> bytes:
        """The key unknown names' SCRAM salts derive from: the same on every replica and
        after restarts, so a salt that changes never gives an unknown name away."""
        return bytes.fromhex(self.db.query("SELECT value FROM rowgate_meta WHERE key = ?", (_MOCK_KEY,))[0][0])

    def version(self) -> int:
        return int(self.db.query("SELECT value FROM rowgate_meta WHERE key = ?", (_VERSION,))[0][0])

    def _bump(self) -> None:
        # text arithmetic in SQL keeps concurrent writers (other replicas, the CLI) from losing updates;
        # called first in every changing transaction: its row lock orders them, so event seqs
        # (max + 1, taken later in the transaction) grow in commit order and no reader skips one
        self.db.execute(
            "UPDATE rowgate_meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = ?", (_VERSION,)
        )

    def _event(self, t: StoredToken, action: str, at: float, actor: str | None) -> bool:
        """Record a change (inside the changing transaction, after ``_bump``); False if that
        token already has an event of that action."""
        (last,) = self.db.query("SELECT COALESCE(MAX(seq), 0) FROM rowgate_token_events")[0]
        return bool(self.db.execute(
            f"INSERT INTO rowgate_token_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (token_id, action) DO NOTHING",  # a clash of seq is an error, never a lost event
            (int(last) + 1, t.id, t.name, action, at, actor, t.kind, json.dumps(list(t.groups)),
             json.dumps(t.attributes), t.on_behalf_of, t.expires),
        ))

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
        actor: str | None = None,
    ) -> tuple[str, StoredToken]:
        """Issue a token; returns it (shown once, never stored) and its record. A name
        whose token is revoked or expired may be issued again. ``actor``: who asked (the
        audit log records it)."""
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
            self._bump()
            old = self.get(name)
            if old is not None and old.status(now) == "active":
                raise ConfigError(
                    f'identity "{name}" already has an active token',
                    hint=f"revoke it first (rowgate token revoke {name}) or choose another name",
                )
            if old is not None and old.status(now) == "expired":
                # its row goes now: note the expiry, in case no proxy noticed it yet
                assert old.expires is not None
                self._event(old, "expired", old.expires, None)
            self.db.execute("DELETE FROM rowgate_tokens WHERE name = ?", (name,))
            self.db.execute(
                f"INSERT INTO rowgate_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id, name, kind, json.dumps(list(groups)), json.dumps(attributes), on_behalf_of, v.salt,
                    v.stored_key, v.server_key, v.iterations, now, expires, None,
                ),
            )
            self._event(rec, "created", now, actor)
        return token, rec

    def revoke(self, name: str, now: float, actor: str | None = None) -> StoredToken | None:
        """Revoke ``name``'s token; None if there is none. Revoking twice keeps the first time."""
        with self.db.transaction():
            if self.get(name) is None:
                return None
            self._bump()
            if self.db.execute("UPDATE rowgate_tokens SET revoked = ? WHERE name = ? AND revoked IS NULL",
                               (now, name)):
                revoked = self.get(name)
                assert revoked is not None
                self._event(revoked, "revoked", now, actor)
            return self.get(name)

    # --- the history of changes, for the audit log -------------------------------------

    def record_expired(self, now: float) -> int:
        """Expiry happens by time, not by a command: note every token past its expiry as an
        event (once; several proxies may race, the unique key keeps one). Returns how many."""
        if not self.db.query(
            "SELECT 1 FROM rowgate_tokens t WHERE t.revoked IS NULL AND t.expires IS NOT NULL AND t.expires <= ? "
            "AND NOT EXISTS (SELECT 1 FROM rowgate_token_events e WHERE e.token_id = t.id AND e.action = 'expired') "
            "LIMIT 1", (now,)
        ):
            return 0  # the common case: no write, no lock
        n = 0
        with self.db.transaction():
            self._bump()
            for t in self.all():
                if t.revoked is None and t.expires is not None and t.expires <= now:
                    n += self._event(t, "expired", t.expires, None)
        return n

    def next_expiry(self, now: float) -> float | None:
        """When the next token not revoked expires (after ``now``)."""
        (at,) = self.db.query(
            "SELECT MIN(expires) FROM rowgate_tokens WHERE revoked IS NULL AND expires > ?", (now,)
        )[0]
        return None if at is None else float(at)

    def events(self, after: int, limit: int = 1000) -> list[TokenEvent]:
        rows = self.db.query(
            f"SELECT {_EVENT_COLUMNS} FROM rowgate_token_events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [
            TokenEvent(int(r[0]), r[1], r[2], r[3], float(r[4]), r[5], r[6], tuple(json.loads(r[7])),
                       dict(json.loads(r[8])), r[9], None if r[10] is None else float(r[10]))
            for r in rows
        ]

    def audited_through(self, replica: str) -> int:
        """The last event ``replica``'s audit log records (0: none yet)."""
        rows = self.db.query("SELECT value FROM rowgate_meta WHERE key = ?", (_CURSOR + replica,))
        return int(rows[0][0]) if rows else 0

    def set_audited_through(self, replica: str, seq: int) -> None:
        self.db.execute(
            "INSERT INTO rowgate_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_CURSOR + replica, str(seq)),
        )

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
