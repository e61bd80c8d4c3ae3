"""The audit pipeline stage: collects each request's CommandComplete tags (a simple Query of
several statements has several) for its completion record. The completion itself is
written when the session's Exchange reports the request done (``AuditRecorder.completed``)."""

from __future__ import annotations

from rowgate.audit.recorder import AuditRecorder
from rowgate.pgwire.framing import Frame
from rowgate.proxy.hooks import Action, SessionInfo

_C = ord("C")


class AuditStage:
    uses_exchange = True  # the session pairs every result with its request for us
    replaces_results = False  # so the client gets results before the completion is recorded
    frontend_types: frozenset[int] = frozenset()
    backend_types = frozenset(b"C")

    def __init__(self, recorder: AuditRecorder) -> None:
        self.recorder = recorder

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        exchange = getattr(session, "exchange", None)
        req = getattr(exchange, "current_server", None)
        if message.type == _C and req is not None and "audit" in req.meta:
            tags = req.meta.setdefault("tags", [])
            assert isinstance(tags, list)
            tags.append(req.tag)  # the Exchange saw this CommandComplete first and decoded its tag
        return None
