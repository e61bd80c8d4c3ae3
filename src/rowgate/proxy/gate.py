"""The statement gate: the pipeline stage that analyses every statement a client sends
and enforces the policy's decision before anything reaches the upstream.

A refused message is not answered by rowgate itself: it is replaced by a statement
that fails in the upstream during parse analysis (a call of a function that cannot
exist, named with a one-time nonce), and the upstream's error is rewritten on its way
back into rowgate's 42501. The upstream thereby does exactly what PostgreSQL does after
any error: the transaction is aborted, pipelined messages are skipped up to the next
Sync, and the answer keeps its place among the answers to earlier pipelined messages.
Nothing of the refused statement runs, and no prepared statement or portal of the
client is touched.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol

from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.framing import Frame
from rowgate.policy.engine import Context, Decision, decide_message
from rowgate.policy.matching import CompiledPolicy, compile_policy
from rowgate.policy.model import Policy
from rowgate.proxy.hooks import Action, SessionInfo
from rowgate.sql import facts
from rowgate.sql.analyzer import analyze
from rowgate.sql.facts import Kind, Statement
from rowgate.sql.names import parse_search_path

log = logging.getLogger("rowgate.policy")

_STATE = "gate"
_MARKER = re.compile(r"rowgate_deny_([0-9a-f]{16})")
_WATCHED = frozenset(b"EZ")  # ErrorResponse to rewrite, ReadyForQuery to expire denials


@dataclass
class _Denial:
    error: bytes
    syncs_left: int  # ReadyForQuery messages still to come before its error must have passed


@dataclass
class _State:
    search_path: tuple[str, ...] = ("public",)
    # Parse name -> (text, search path it was judged under)
    statements: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # SQL PREPARE name -> (body facts, search path they were judged under)
    sql_prepared: dict[str, tuple[Statement, tuple[str, ...]]] = field(default_factory=dict)
    portals: set[str] = field(default_factory=set)
    denials: dict[str, _Denial] = field(default_factory=dict)


def _state(session: SessionInfo) -> _State:
    st = session.stage_state.get(_STATE)
    if st is None:
        st = session.stage_state[_STATE] = _State(search_path=_search_path(session.parameters.get("search_path")))
    assert isinstance(st, _State)
    return st


def _search_path(value: str | None) -> tuple[str, ...]:
    """The schemas unqualified names may resolve to ("$user" has no meaning without a catalog)."""
    names = parse_search_path(value) if value is not None else ()
    return tuple(n for n in names if n != "$user") or ("public",)


def _merge(variants: list[list[Statement]]) -> list[Statement]:
    """Unqualified names resolve to the first schema of the search path that has the
    relation; rowgate cannot see which, so a statement is judged as touching every
    candidate: a rule on app.payments must not be dodged by SET search_path. Flags are
    merged too (a variant may see a user function shadowing a built-in), and the kind is
    that of the variant with the most flags."""
    merged = []
    for stmts in zip(*variants, strict=True):
        first = max(stmts, key=lambda s: len(s.flags))
        columns: dict[str, frozenset[str]] = {}
        for s in stmts:
            for clause, cols in s.columns.items():
                columns[clause] = columns.get(clause, frozenset()) | cols
        merged.append(
            dataclasses.replace(
                first,
                tables_read=frozenset().union(*(s.tables_read for s in stmts)),
                tables_written=frozenset().union(*(s.tables_written for s in stmts)),
                columns=MappingProxyType(columns),
                functions=frozenset().union(*(s.functions for s in stmts)),
                flags=frozenset().union(*(s.flags for s in stmts)),
            )
        )
    return merged


# Client encodings in which a quote or backslash byte can be the second byte of a
# character: PostgreSQL reads such text differently from rowgate's UTF-8 parser.
_UNSAFE_ENCODINGS = frozenset({"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "GB18030", "JOHAB", "UHC", "WIN932", "WIN936"})


def _lexing_hazard(parameters: dict[str, str]) -> str | None:
    """Why rowgate cannot read statements the way this upstream session will, if so."""
    if parameters.get("standard_conforming_strings", "on") != "on":
        return "standard_conforming_strings is off: backslashes in strings would be read differently"
    encoding = parameters.get("client_encoding", "UTF8").upper().replace("-", "_")
    if encoding in _UNSAFE_ENCODINGS:
        return f"client_encoding {encoding} can hide quotes inside characters"
    return None


# PostgreSQL's names (encnames.c, compared without case and non-alphanumerics) of the
# encodings in _UNSAFE_ENCODINGS
_UNSAFE_ENCODING_NAMES = frozenset({
    "sjis", "mskanji", "shiftjis", "win932", "windows932", "shiftjis2004", "big5", "win950", "windows950",
    "gbk", "win936", "windows936", "cp936", "gb18030", "johab", "uhc", "win949", "windows949", "cp949",
})


def _setting_hazard(name: str, value: str | None) -> str | None:
    """Why SET name = value would make the session lex statements differently from
    rowgate. The upstream reports the new value only after the SET ran, too late for a
    statement pipelined right behind it, so such a SET is refused itself. RESET and
    DEFAULT return to the value the session started with, which was reported."""
    if value is None:
        return None
    v = value.strip().lower()
    if name == "standard_conforming_strings":
        if v in ("on", "1") or (v and ("true".startswith(v) or "yes".startswith(v))):
            return None
        return f"standard_conforming_strings = {value}: rowgate could not read later statements as PostgreSQL does"
    if name == "client_encoding" and re.sub(r"[^a-z0-9]", "", v) in _UNSAFE_ENCODING_NAMES:
        return f"client_encoding {value} can hide quotes inside characters"
    return None


def _unparseable(text: str, why: str) -> Statement:
    return Statement(text=text, kind=Kind.UNPARSEABLE, command="UNPARSEABLE",
                     flags=frozenset({facts.UNPARSEABLE}), error=why)


def analyze_for_session(sql: str, search_path: tuple[str, ...], parameters: dict[str, str]) -> list[Statement]:
    """The analysis the gate acts on, for a session's search path and reported
    parameters (shared with ``rowgate check``)."""
    hazard = _lexing_hazard(parameters)
    if hazard is not None:  # fail closed: judge nothing we might misread
        return [_unparseable(sql, hazard)]
    if len(search_path) == 1:
        stmts = analyze(sql, search_path)
    else:
        # each variant resolves unqualified relations to its first schema, and keeps the whole
        # path behind it so a schema searched before pg_catalog still shadows the built-ins
        stmts = _merge([analyze(sql, (schema, *search_path)) for schema in search_path])
    for i, s in enumerate(stmts):
        if s.setting is not None and (why := _setting_hazard(*s.setting)) is not None:
            stmts[i] = _unparseable(s.text, why)
    return stmts


def _widen(path: tuple[str, ...], setting: tuple[str, str | None] | None) -> tuple[str, ...]:
    """The schemas a session may search after ``setting`` ran: a SET may be LOCAL, rolled
    back or fail, so judge against every schema the session may be using, never fewer."""
    if setting is None or setting[0] != "search_path":
        return path
    new = _search_path(setting[1])
    return new + tuple(x for x in path if x not in new)


_BIND, _EXECUTE = ord("B"), ord("E")


def _unknown(text: str, command: str, why: str) -> Statement:
    return Statement(
        text=text, kind=Kind.PROCEDURAL, command=command, flags=frozenset({facts.UNKNOWN_EFFECT}), error=why
    )


class Check(Protocol):
    """A further check of statements the policy allows (e.g. masking's inference
    defence). A refused Decision refuses the message like a policy denial; an exception
    refuses it too, and closes the connection."""

    def check(self, session: SessionInfo, stmts: Sequence[Statement]) -> Decision | None: ...


class Recorder(Protocol):
    """The audit log's write-ahead hook (``rowgate.audit.recorder``): called for every
    decided message and every Execute before it is forwarded. An exception refuses the
    statement: nothing runs unaudited."""

    def decided(self, session: SessionInfo, stmts: Sequence[Statement], decision: Decision,
                message: str, prepared: str | None = None) -> None: ...

    def execute(self, session: SessionInfo, portal: str) -> None: ...


def _audit_failed(session: SessionInfo, e: Exception) -> Decision:
    log.error("session %d: audit log unavailable, statement refused: %s", session.id, e)
    reason = str(e) if str(e).startswith("audit log unavailable") else f"audit log unavailable: {e}"
    return Decision("deny", "audit_log", reason + "; the statement was not run",
                    hint="rowgate refuses statements it cannot record; tell your rowgate administrator")


class StatementGate:
    # Query, Parse, Bind, Describe, Execute, Close, FunctionCall
    frontend_types = frozenset(b"QPBDECF")
    backend_types: frozenset[int] = frozenset()

    def __init__(
        self,
        policy: Policy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        checks: Iterable[Check] = (),
        recorder: Recorder | None = None,
    ) -> None:
        self._policy: CompiledPolicy = compile_policy(policy)
        self._clock = clock
        self._checks = tuple(checks)
        self._recorder = recorder

    # --- analysis and decision -------------------------------------------------------

    def _analyze(self, sql: str, st: _State, session: SessionInfo) -> list[Statement]:
        stmts = analyze_for_session(sql, st.search_path, session.parameters)
        out = []
        path = st.search_path  # as widened by the SETs earlier in the message
        for s in stmts:
            out.append(self._resolve_execute(s, st, path, session))
            path = _widen(path, s.setting)
        return out

    @staticmethod
    def _prepared_body(name: str, st: _State, path: tuple[str, ...], session: SessionInfo) -> Statement | None:
        """The facts of SQL prepared statement ``name`` when run under ``path``.
        PostgreSQL analyses a prepared statement again when the search_path changed since
        it was prepared (an unqualified lower() may now be a user function), so must we."""
        entry = st.sql_prepared.get(name)
        if entry is None:
            return None
        body, judged = entry
        if judged != path:
            again = [s for s in analyze_for_session(body.text, path, session.parameters) if s.prepare_name == name]
            body = again[0] if len(again) == 1 else _unknown(body.text, "PREPARE", "prepared statement changed")
        return body

    def _resolve_execute(self, s: Statement, st: _State, path: tuple[str, ...], session: SessionInfo) -> Statement:
        """EXECUTE runs what its PREPARE said; an EXECUTE whose PREPARE rowgate did not
        see stays unknown procedural code."""
        if s.execute_name is not None:
            body = self._prepared_body(s.execute_name, st, path, session)
            if body is not None:
                return dataclasses.replace(body, text=s.text, command="EXECUTE", prepare_name=None,
                                           execute_name=s.execute_name)
        return s

    def _decide(self, session: SessionInfo, stmts: Sequence[Statement], message: str = "unknown",
                prepared: str | None = None) -> Decision:
        assert session.principal is not None
        ctx = Context(session.principal, session.upstream, session.database_environment, self._clock())
        decision = decide_message(stmts, ctx, self._policy)
        if not decision.refused:
            for check in self._checks:
                found = check.check(session, stmts)
                if found is not None and found.refused:
                    decision = found
                    break
        if decision.refused or not decision.enforced:
            who = session.principal.name
            i = decision.statement_index or 0
            text = stmts[i].text if stmts else ""
            log.warning("session %d identity=%s: %s; statement: %.200s", session.id, who, decision.message(), text)
        if self._recorder is not None:
            try:
                self._recorder.decided(session, stmts, decision, message, prepared)
            except Exception as e:
                return _audit_failed(session, e)
        return decision

    @staticmethod
    def _remember(stmts: Sequence[Statement], st: _State) -> None:
        for s in stmts:
            if s.prepare_name is not None:
                st.sql_prepared[s.prepare_name] = (s, st.search_path)
            if s.deallocate_name is not None:
                if s.deallocate_name == "*":
                    st.sql_prepared.clear()
                else:
                    st.sql_prepared.pop(s.deallocate_name, None)
            st.search_path = _widen(st.search_path, s.setting)

    # --- refusal -----------------------------------------------------------------------

    def _refuse(self, session: SessionInfo, st: _State, decision: Decision, simple: bool) -> Action:
        nonce = secrets.token_hex(8)
        hint = decision.hint
        if decision.action == "require_approval":
            hint = (hint + " " if hint else "") + "Approvals are not available in this version of rowgate yet."
        error = be.error_response("42501", decision.message(), hint=hint).encode()
        # its error arrives before the ReadyForQuery of every Sync now outstanding, and of its own
        st.denials[nonce] = _Denial(error, session.pending + 1)
        session.watch(self, _WATCHED)
        failing = f'SELECT "rowgate_deny_{nonce}"()'
        if simple:
            return Action(to_upstream=fe.Query(failing).encode())
        return Action(to_upstream=fe.Parse(f"rowgate_deny_{nonce}", failing).encode())

    def _refuse_unknown(self, session: SessionInfo, st: _State, what: str) -> Action | None:
        stmt = _unknown(what, "EXECUTE", f"{what} was never prepared through rowgate on this session")
        decision = self._decide(session, [stmt])
        if not decision.refused:
            return None  # unknown_effect relaxed for this identity: PostgreSQL answers
        return self._refuse(session, st, decision, simple=False)

    def _rejudge(self, session: SessionInfo, st: _State, name: str) -> Action | None:
        """A Bind plans its statement under the session's current search_path: judge the
        statement again if the path changed since it was judged."""
        if name in st.statements:
            sql, judged = st.statements[name]
            if judged == st.search_path:
                return None
            stmts = self._analyze(sql, st, session)
        else:
            if st.sql_prepared[name][1] == st.search_path:
                return None
            body = self._prepared_body(name, st, st.search_path, session)
            assert body is not None
            stmts = [body]
        decision = self._decide(session, stmts, "bind", name)
        if decision.refused:
            return self._refuse(session, st, decision, simple=False)
        if name in st.statements:
            st.statements[name] = (st.statements[name][0], st.search_path)
        else:
            st.sql_prepared[name] = (stmts[0], st.search_path)
        return None

    # --- the stage -----------------------------------------------------------------------

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        st = _state(session)
        t = message.type
        # Bind and Execute come with every prepared execution: read just their names,
        # not the parameters
        if t == _BIND:
            portal, statement = fe.leading_names(message.payload, 2)
            if statement not in st.statements and statement not in st.sql_prepared:
                return self._refuse_unknown(session, st, f'prepared statement "{statement}"')
            refusal = self._rejudge(session, st, statement)
            if refusal is not None:
                return refusal
            st.portals.add(portal)
            return None
        if t == _EXECUTE:
            (portal,) = fe.leading_names(message.payload, 1)
            if portal not in st.portals:
                return self._refuse_unknown(session, st, f'portal "{portal}"')
            if self._recorder is not None:
                try:
                    self._recorder.execute(session, portal)
                except Exception as e:
                    return self._refuse(session, st, _audit_failed(session, e), simple=False)
            return None
        msg = fe.decode_frontend(t, message.payload)
        if isinstance(msg, fe.Query | fe.Parse):
            stmts = self._analyze(msg.sql, st, session)
            if isinstance(msg, fe.Query):
                decision = self._decide(session, stmts, "query")
            else:
                decision = self._decide(session, stmts, "parse", msg.name)
            if decision.refused:
                return self._refuse(session, st, decision, simple=isinstance(msg, fe.Query))
            self._remember(stmts, st)
            if isinstance(msg, fe.Parse):
                st.statements[msg.name] = (msg.sql, st.search_path)
            return None
        if isinstance(msg, fe.Describe):
            known = st.statements.keys() | st.sql_prepared.keys() if msg.kind == "S" else st.portals
            if msg.name not in known:
                kind = "prepared statement" if msg.kind == "S" else "portal"
                return self._refuse_unknown(session, st, f'{kind} "{msg.name}"')
            return None
        if isinstance(msg, fe.Close):
            if msg.kind == "S":
                st.statements.pop(msg.name, None)
            else:
                st.portals.discard(msg.name)
            return None
        if isinstance(msg, fe.FunctionCall):
            stmt = _unknown(f"<function call, oid {msg.function_oid}>", "FUNCTION CALL", "fast-path function call")
            stmt = dataclasses.replace(stmt, functions=frozenset({f"oid:{msg.function_oid}"}))
            decision = self._decide(session, [stmt], "function")
            if decision.refused:
                return self._refuse(session, st, decision, simple=True)
            return None
        return None

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        st = _state(session)
        if message.type == ord("E") and st.denials:
            err = be.decode_backend(message.type, message.payload)
            assert isinstance(err, be.ErrorResponse)
            found = _MARKER.search(err.message or "")
            if found and (denial := st.denials.pop(found.group(1), None)) is not None:
                return denial.error
        elif message.type == ord("Z"):
            for nonce, denial in list(st.denials.items()):
                denial.syncs_left -= 1
                if denial.syncs_left <= 0:  # skipped after an earlier error: nothing will come
                    del st.denials[nonce]
            if not st.denials:
                session.watch(self, frozenset())
        return None
