"""The hook point where pipeline stages (analysis, policy, masking, audit) see every
client message before it is forwarded and every result message before the client
gets it.

A stage declares the message types it wants; the session hands it only those, and
forwards everything else as the same bytes without decoding it. An exception in a
stage denies: the client message is refused, or the connection is closed, never
passed through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from rowgate.identity.principal import Principal
from rowgate.pgwire.exchange import Exchange
from rowgate.pgwire.framing import Batch, Frame

BATCHED = frozenset(b"D")  # result types the relay hands to the pipeline in batches (DataRow)


@dataclass
class SessionInfo:
    """What the proxy knows about one client session; stages read it, the control
    plane lists it."""

    id: int
    principal: Principal | None
    client_addr: str
    upstream: str = ""
    database_environment: str = ""
    application_name: str = ""
    tls: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    statements: int = 0
    transaction_status: str = "I"  # from the last ReadyForQuery: I, T or E
    pending: int = 0  # Query, Sync and FunctionCall messages still awaiting their ReadyForQuery
    parameters: dict[str, str] = field(default_factory=dict)  # ParameterStatus as the client sees it
    # result message types stages want to see for now, on top of their static ones (set
    # with ``watch``): per stage, and all of them, which the relay reads; while non-empty
    # the relay leaves its fast path for this session's results
    watched: dict[object, frozenset[int]] = field(default_factory=dict)
    watched_backend: frozenset[int] = frozenset()
    stage_state: dict[str, object] = field(default_factory=dict)  # per-session state of each stage
    # which request each result answers; kept only when some stage has ``uses_exchange``
    exchange: Exchange | None = None

    def watch(self, stage: object, types: frozenset[int]) -> None:
        """From now on ``stage`` also sees result messages of ``types`` (replacing what it
        watched before; empty: nothing more than its static ``backend_types``)."""
        if types:
            self.watched[stage] = types
        else:
            self.watched.pop(stage, None)
        self.watched_backend = frozenset().union(*self.watched.values())


@dataclass(frozen=True, slots=True)
class Action:
    """What a stage sends upstream instead of a client message (b'' drops it). There
    is deliberately no way to answer the client directly: every answer comes from the
    upstream, so it keeps its place after the answers to earlier pipelined messages. A
    stage refuses by sending something that fails there (see ``gate``)."""

    to_upstream: bytes = b""


class Stage(Protocol):
    """A stage may also set ``uses_exchange = True`` (class attribute): the pipeline then
    keeps ``SessionInfo.exchange`` up to date before the stage sees a message;
    ``takes_batches = True``: its ``on_backend`` then gets the DataRows read together as
    one ``Batch`` (returning the bytes of all of them), other stages get them one by one;
    and ``replaces_results = False``: its ``on_backend`` only looks (always returns None),
    so the relay may forward results before the stage sees them."""

    frontend_types: frozenset[int]  # client message type bytes this stage inspects
    backend_types: frozenset[int]  # result message type bytes this stage inspects

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        """None forwards the message unchanged."""

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        """None forwards the message unchanged; bytes replace it (b'' drops it)."""


class Pipeline:
    def __init__(self, stages: list[Stage] | None = None) -> None:
        self.stages: list[Stage] = list(stages or [])
        self.uses_exchange = any(getattr(s, "uses_exchange", False) for s in self.stages)
        extra_front = Exchange.FRONTEND_TYPES if self.uses_exchange else frozenset()
        extra_back = Exchange.BACKEND_TYPES if self.uses_exchange else frozenset()
        self.frontend_types = frozenset().union(extra_front, *(s.frontend_types for s in self.stages))
        self.backend_types = frozenset().union(extra_back, *(s.backend_types for s in self.stages))
        # no stage replaces the result messages it asked for (types a stage ``watch``es for a
        # while are not covered: the relay hands those over before forwarding)
        self.backend_looks_only = not any(s.backend_types and getattr(s, "replaces_results", True)
                                          for s in self.stages)

    def _exchange(self, session: SessionInfo) -> Exchange | None:
        if self.uses_exchange and session.exchange is None:
            session.exchange = Exchange()
        return session.exchange

    def frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        if (exchange := self._exchange(session)) is not None and message.type in Exchange.FRONTEND_TYPES:
            exchange.client(message)
        for stage in self.stages:
            if message.type in stage.frontend_types:
                action = stage.on_frontend(session, message)
                if action is not None:
                    return action
        return None

    def backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        """``message`` may be a ``Batch`` of messages of one of the ``BATCHED`` types: the
        Exchange sees it once, as they never change its state."""
        t = message.type
        if (exchange := self._exchange(session)) is not None:
            exchange.server(message)
        raw: bytes | None = None
        watched = session.watched
        for stage in self.stages:
            if t in stage.backend_types or (watched and t in watched.get(stage, ())):
                if type(message) is Batch and not getattr(stage, "takes_batches", False):
                    out = _one_by_one(stage, session, message)
                else:
                    out = stage.on_backend(session, message)
                if out is not None:
                    if not out:
                        return b""
                    raw = out
                    message = Batch(t, out) if type(message) is Batch else Frame(out[0], out)
        return raw


def _one_by_one(stage: Stage, session: SessionInfo, batch: Batch) -> bytes | None:
    raw, pos, changed = batch.raw, 0, False
    out: list[bytes] = []
    while pos < len(raw):
        end = pos + 1 + int.from_bytes(raw[pos + 1 : pos + 5], "big")
        new = stage.on_backend(session, Frame(raw[pos], raw[pos:end]))
        out.append(raw[pos:end] if new is None else new)
        changed = changed or new is not None
        pos = end
    return b"".join(out) if changed else None
