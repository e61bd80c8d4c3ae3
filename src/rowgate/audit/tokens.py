"""Token changes in the audit log.

``rowgate token create|revoke`` runs in a process of its own and writes only the state store;
the audit journal has a single writer, the proxy. So the store keeps every change as an event
(``TokenStore.events``, written with the change), and each proxy copies the events it has not
recorded yet into its own chain as ``token_change`` records: when the store's change counter
moves (polled with the revocations), when a token reaches its expiry, and at start, which
covers changes made while no proxy ran. How far a replica got is kept in the state store
after each record is in the journal, so a crash in between records that change twice (with
the same ``change``), never not at all.

The records carry no secret: the token is never stored, and its SCRAM verifier is not copied.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from rowgate.audit import records as rec
from rowgate.audit.recorder import AuditRecorder
from rowgate.identity.tokenstore import TokenEvent, TokenStore

log = logging.getLogger("rowgate.audit")


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")


def token_change_fields(e: TokenEvent) -> dict[str, Any]:
    return {
        "identity": e.name, "action": e.action, "token_id": e.token_id, "kind": e.kind, "groups": list(e.groups),
        "attributes": e.attributes, "on_behalf_of": e.on_behalf_of, "expires": _iso(e.expires), "at": _iso(e.at),
        "by": e.actor if e.actor is not None else ("rowgate (expiry)" if e.action == "expired" else None),
        "change": e.seq,
    }


class TokenAudit:
    """Blocking (the proxy runs ``sync`` in a worker thread)."""

    def __init__(self, store: TokenStore, recorder: AuditRecorder) -> None:
        self.store = store
        self.recorder = recorder
        self.replica = recorder.writer.replica
        self._due = True  # at start: what changed while this proxy did not run
        self._next_expiry: float | None = None

    def changed(self) -> None:
        """The store's change counter moved."""
        self._due = True

    def due(self, now: float) -> bool:
        return self._due or (self._next_expiry is not None and now >= self._next_expiry)

    def sync(self, now: float, batch: int = 200) -> int:
        """Record the events after this replica's cursor, up to ``batch`` (a long history, at
        a first start, is recorded over several polls); returns how many. Raises when the store
        or the log is unavailable: the same events are tried again at the next poll."""
        self._due = True  # until every event is recorded
        self.store.record_expired(now)
        events = self.store.events(self.store.audited_through(self.replica), limit=batch)
        for e in events:
            if self.recorder.event(rec.TOKEN_CHANGE, token_change_fields(e)) is None:
                # not written (audit.fail_closed is off and the journal failed): keep the cursor
                raise RuntimeError(f"token change {e.seq} ({e.action} {e.name}) not recorded")
            self.store.set_audited_through(self.replica, e.seq)
            log.info("audit: token of %r %s (change %d)", e.name, e.action, e.seq)
        self._next_expiry = self.store.next_expiry(now)
        self._due = len(events) == batch
        return len(events)
