"""What the proxy records, and when: the gate's write-ahead calls (every decided message and
every Execute, before it is forwarded), completions, session and login events.

A record that cannot be written raises AuditUnavailable, and the gate refuses the
statement; for an upstream configured with ``audit.databases.<name>.fail_closed: false``
the failure is logged and the statement goes on.

Every record of a session says whether its principal sees masked or raw values and why
(``masking``: the unmask rule's reason, "masking disabled", ...): a raw read is never
recorded without the reason it was allowed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rowgate.audit import records as rec
from rowgate.audit.writer import AuditWriter
from rowgate.errors import AuditUnavailable
from rowgate.masking.config import MaskingConfig, masking_decision
from rowgate.policy.engine import Decision
from rowgate.proxy.hooks import SessionInfo
from rowgate.sql.facts import Statement

if TYPE_CHECKING:
    from rowgate.audit.lineage import LineageEmitter
    from rowgate.config import Audit, Config

log = logging.getLogger("rowgate.audit")

_STATE = "audit"


@dataclass
class _Session:
    # Parse name -> (text, facts of its statements, seq of the record that judged it)
    statements: dict[str, tuple[str, list[dict[str, Any]], int]] = field(default_factory=dict)
    listening: bool = False  # on_done of the session's Exchange calls us
    started: bool = False  # its session_start is recorded
    fields: dict[str, Any] | None = None  # who and where, the same in each of its records


def _session_state(session: SessionInfo) -> _Session:
    st = session.stage_state.get(_STATE)
    if st is None:
        st = session.stage_state[_STATE] = _Session()
    assert isinstance(st, _Session)
    return st


def _session_fields(session: SessionInfo, masking: MaskingConfig) -> dict[str, Any]:
    st = _session_state(session)
    if st.fields is None or st.fields["identity"] is None:
        st.fields = {"session": session.id, **rec.principal_fields(session.principal), "database": session.upstream,
                     "application_name": session.application_name}
        if session.principal is not None:
            # the same pure decision the masking stage takes for the session (masking_for), so
            # the log cannot say "masked" for a session that saw raw values
            decision = masking_decision(session.principal, session.database_environment, masking)
            st.fields["masking"] = decision.audit_fields()
    return st.fields


def _current_request(session: SessionInfo) -> Any:
    """The Exchange request the client message being handled opened (None before the
    session has an Exchange)."""
    exchange = getattr(session, "exchange", None)
    return getattr(exchange, "current_client", None) if exchange is not None else None


class AuditRecorder:
    def __init__(self, writer: AuditWriter, config: Audit, lineage: LineageEmitter | None = None, *,
                 masking: MaskingConfig) -> None:
        self.writer = writer
        self._config = config
        self._masking = masking
        self.lineage = lineage

    def _fields(self, session: SessionInfo) -> dict[str, Any]:
        return _session_fields(session, self._masking)

    def fail_closed(self, database: str) -> bool:
        per = self._config.databases.get(database)
        return per.fail_closed if per is not None else self._config.fail_closed

    def _write(self, database: str, type_: str, fields: Mapping[str, Any], durable: bool = True) -> rec.Record | None:
        strict = self.fail_closed(database)
        try:
            return self.writer.append(type_, fields, durable=durable, strict=strict)
        except AuditUnavailable:
            if strict:
                raise
            log.exception("audit: record lost (%s on %s); audit.fail_closed is off for it", type_, database)
            return None

    # --- the gate's write-ahead calls --------------------------------------------------

    def decided(self, session: SessionInfo, stmts: Sequence[Statement], decision: Decision,
                message: str, prepared: str | None = None) -> None:
        """A Query, Parse, Bind (judged again), FunctionCall or unknown name was decided."""
        text = "; ".join(s.text for s in stmts) if len(stmts) != 1 else stmts[0].text
        facts = [rec.statement_facts(s) for s in stmts]
        record = self._write(session.upstream, rec.STATEMENT, {
            **self._fields(session), "message": message, "prepared": prepared, "text": text,
            "statements": facts, "decision": rec.decision_fields(decision),
        })
        if record is None:
            return
        if message in ("parse", "bind") and prepared is not None and not decision.refused:
            _session_state(session).statements[prepared] = (text, facts, record["seq"])
        self._await_completion(session, record, decision.refused)

    def execute(self, session: SessionInfo, portal: str) -> None:
        """An Execute of a portal: what runs is the statement judged at its Parse, with the
        parameters of the portal's Bind (from the session's Exchange)."""
        req = _current_request(session)
        statement = str(getattr(req, "statement", None) or "")
        params = rec.summarize_parameters(req.parameters, req.parameter_formats) if req is not None else []
        text, facts, judged = _session_state(session).statements.get(statement, ("", [], None))
        text = text or str(getattr(req, "sql", None) or "")
        record = self._write(session.upstream, rec.STATEMENT, {
            **self._fields(session), "message": "execute", "prepared": statement, "portal": portal,
            "text": text, "parameters": params, "statements": facts, "judged_by": judged,
            "decision": {"action": "allow", "rule": "prepared", "reason": f"judged when prepared (record {judged})",
                         "enforced": True, "would_have": None, "statement_index": None, "relaxed": []},
        })
        if record is not None:
            self._await_completion(session, record, refused=False)

    def _await_completion(self, session: SessionInfo, record: rec.Record, refused: bool) -> None:
        req = _current_request(session)
        if req is None or record["message"] not in ("query", "execute", "function"):
            return
        state = _session_state(session)
        if not state.listening:
            session.exchange.on_done.append(lambda done: self._done(session, done))  # type: ignore[union-attr]
            state.listening = True
        req.meta["audit"] = (record, time.monotonic(), refused)
        if self.lineage is not None and not refused:
            self.lineage.statement_started(record)

    # --- completion (from the audit stage) -------------------------------------------

    def _done(self, session: SessionInfo, req: Any) -> None:
        if "audit" in req.meta:
            self.completed(session, req)

    def completed(self, session: SessionInfo, req: Any) -> None:
        record, started, refused = req.meta["audit"]
        tags = list(req.meta.get("tags") or ([req.tag] if req.tag else []))
        counts = [n for n in (rec.rows_from_tag(t) for t in tags) if n is not None]
        masked = req.meta.get("masked") or {}
        error = "42501" if refused else req.error
        fields = {
            **self._fields(session), "ref": record["seq"], "tags": tags,
            "rows": sum(counts) if counts else None, "error": error,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
            "masked": dict(masked) if isinstance(masked, Mapping) else {},
        }
        completion = self._write(session.upstream, rec.COMPLETION, fields, durable=False)
        if self.lineage is not None and not refused and completion is not None:
            self.lineage.statement_completed(record, completion)

    # --- sessions, logins, configuration ---------------------------------------------------

    def session_start(self, session: SessionInfo) -> None:
        record = self._write(session.upstream, rec.SESSION_START, {
            **self._fields(session), "client": session.client_addr, "tls": session.tls,
            "environment": session.database_environment,
        })
        _session_state(session).started = True
        if record is not None and self.lineage is not None:
            self.lineage.session_started(record)

    def session_end(self, session: SessionInfo, duration_s: float, reason: str | None) -> None:
        if not _session_state(session).started:
            return
        record = self._write(session.upstream, rec.SESSION_END, {
            **self._fields(session), "statements": session.statements,
            "duration_s": round(duration_s, 3), "reason": reason,
        }, durable=False)
        if record is not None and self.lineage is not None:
            self.lineage.session_ended(record)

    def login_refused(self, user: str, client_addr: str, reason: str = "authentication failed") -> None:
        try:
            self.writer.append(rec.LOGIN_REFUSED, {"identity": user, "client": client_addr, "reason": reason},
                               durable=False)
        except AuditUnavailable:  # the login is refused anyway
            log.exception("audit: could not record a refused login of %r", user)

    def event(self, type_: str, fields: Mapping[str, Any]) -> rec.Record | None:
        """Other events (token changes, approvals) from the rest of rowgate, written to the
        journal before this returns. None: not recorded (logged; ``audit.fail_closed`` is off);
        with it on, AuditUnavailable."""
        return self._write("", type_, fields)

    def policy_loaded(self, config: Config) -> None:
        """What governs the sessions from now on: hashes to compare configurations by, and the
        parts an auditor asks about first (who may see raw values, which rules decide)."""
        masking = config.masking
        self._write("", rec.POLICY_CHANGE, {
            "event": "loaded",
            "config_hash": _digest(config.model_dump_json()),
            "policy_hash": _digest(config.policy.model_dump_json()),
            "masking_hash": _digest(masking.model_dump_json()),
            "policy": {"mode": config.policy.mode, "default": config.policy.default,
                       "rules": [r.id for r in config.policy.rules]},
            "masking": {"enabled": masking.enabled, "rules": len(masking.rules),
                        "unmask": [{"rule": i, "identities": list(r.identities), "groups": list(r.groups),
                                    "principal_kinds": list(r.principal_kinds),
                                    "environments": list(r.environments), "reason": r.reason}
                                   for i, r in enumerate(masking.rules) if r.unmask]},
        })

    def close(self) -> None:
        if self.lineage is not None:
            self.lineage.close()
        self.writer.close()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
