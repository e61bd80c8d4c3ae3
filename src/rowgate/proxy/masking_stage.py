"""Masking on the wire: the pipeline stage that rewrites results for masked identities.

Sessions of identities that see raw values keep the relay's fast path: their rows are
never framed. For a masked session the stage watches DataRow and CopyData too; when a
result's RowDescription arrives (or, for an Execute, the description the Exchange knows
for its portal) it plans the result once, then rewrites each row with the compiled
plan (``masking.rewrite``). Errors, notices and notifications are scanned, and the
DETAIL, context and quoted values of errors raised by statements that touch sensitive
columns are redacted. Every failure raises: the relay then closes the connection
before any byte of the message that failed is sent (fail closed).

The catalog of each upstream is read and classified in a background thread
(``MaskingCatalogs``), again when its schema changes, and at once when a statement names
a relation it does not know.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pglast import ast, parse_sql, split
from pglast.parser import ParseError

from rowgate.config import Config
from rowgate.errors import MaskingError
from rowgate.masking.config import MaskProfile, masking_for
from rowgate.masking.copyrows import CopyRewriter
from rowgate.masking.inference import check_statements, copy_out_format, refuse
from rowgate.masking.plan import plan_result, sensitive_sources
from rowgate.masking.rewrite import Masker, RowRewriter
from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.exchange import Request
from rowgate.pgwire.framing import Frame
from rowgate.policy.engine import Decision
from rowgate.proxy.hooks import Action, SessionInfo
from rowgate.proxy.masking_catalogs import MaskingCatalogs, UpstreamMasking
from rowgate.sql.facts import Statement
from rowgate.sql.lineage import Lineage, statement_lineage

log = logging.getLogger("rowgate.masking")

_STATE = "masking"
_ROWS = frozenset(b"Dd")
_T, _D, _d, _E, _N, _A, _H, _n = (ord(c) for c in "TDdENAHn")
_NAMED = re.compile(r"(?i)\b(declare|prepare)\b")
# error fields that may carry values: message, detail, hint, context, internal query
_TEXT_FIELDS = frozenset("MDHWqp")
_REDACTED = "[redacted by rowgate: the statement reads masked columns]"


@dataclass
class _Session:
    profile: MaskProfile | None
    masker: Masker | None = None
    named: dict[str, Lineage | None] = field(default_factory=dict)  # cursors and SQL PREPAREs
    described: set[str] = field(default_factory=set)  # portals the client describes itself


def _counts(req: Request) -> dict[str, int]:
    """Masked values per output column, for every result of the request (the audit reads it)."""
    counts = req.meta.setdefault("masked", {})
    assert isinstance(counts, dict)
    return counts


def _search_path(session: SessionInfo) -> tuple[str, ...]:
    """The path the gate judges statements under (it follows SETs), else public."""
    path = getattr(session.stage_state.get("gate"), "search_path", None)
    return tuple(path) if path else ("public",)


class MaskingStage:
    uses_exchange = True
    takes_batches = True  # DataRows come as Batches: one call per run of rows read together
    frontend_types = frozenset(b"QPBDE")
    # everything else a masked session needs (rows) is watched per session
    backend_types = frozenset(b"TnENAH")

    def __init__(self, config: Config, catalogs: MaskingCatalogs | None = None) -> None:
        self.config = config
        self.catalogs = catalogs if catalogs is not None else MaskingCatalogs(config)
        self.checks = (InferenceCheck(self),)

    # --- per session ----------------------------------------------------------------

    def session_state(self, session: SessionInfo) -> _Session:
        st = session.stage_state.get(_STATE)
        if st is None:
            profile = None
            if session.principal is not None:
                profile = masking_for(session.principal, session.database_environment, self.config.masking)
            st = session.stage_state[_STATE] = _Session(profile)
            if profile is not None:
                st.masker = Masker(profile.strategy, self.catalogs.key, self.catalogs.detectors)
                session.watch(self, _ROWS)
        assert isinstance(st, _Session)
        return st

    def upstream(self, session: SessionInfo) -> UpstreamMasking:
        return self.catalogs.upstream(session.upstream)

    def lineages(self, session: SessionInfo, sql: str | None) -> list[Lineage | None]:
        um = self.upstream(session)
        if sql is None or um.catalog is None:
            return [None]
        return statement_lineage(sql, um.catalog, _search_path(session))

    # --- client messages ------------------------------------------------------------

    def on_frontend(self, session: SessionInfo, message: Frame) -> Action | None:
        st = self.session_state(session)
        if st.profile is None:
            return None
        exchange = session.exchange
        assert exchange is not None
        t = chr(message.type)
        if t in "QP":
            sql = exchange.current_client.sql if exchange.current_client else None
            if sql and _NAMED.search(sql):
                self._remember_named(session, st, sql)
        elif t == "D":
            msg = fe.decode_frontend(message.type, message.payload)
            if isinstance(msg, fe.Describe) and msg.kind == "P":
                st.described.add(msg.name)
        elif t == "B":
            req = exchange.current_client
            st.described.discard(req.portal or "" if req else "")
        elif t == "E":
            req = exchange.current_client
            if req is None:
                raise MaskingError("an Execute rowgate could not pair with its portal")
            if req.portal not in st.described and exchange.statement_columns(req.statement or "") is None:
                # rows without a known description cannot be masked: ask for it first
                describe = fe.Describe("P", req.portal or "").encode()
                injected = exchange.inject(Frame(ord("D"), describe))
                injected.meta["masking_injected"] = True
                return Action(to_upstream=describe + message.raw)
        return None

    def _remember_named(self, session: SessionInfo, st: _Session, sql: str) -> None:
        try:
            tree = parse_sql(sql)
        except ParseError:
            return
        lineages = self.lineages(session, sql)
        for i, raw in enumerate(tree):
            node = raw.stmt
            name = None
            if isinstance(node, ast.DeclareCursorStmt):
                name = node.portalname
            elif isinstance(node, ast.PrepareStmt):
                name = "prepare:" + str(node.name)
            if name is not None:
                st.named[name] = lineages[i] if i < len(lineages) else None

    # --- result messages ------------------------------------------------------------

    def on_backend(self, session: SessionInfo, message: Frame) -> bytes | None:
        st = session.stage_state.get(_STATE)
        if st is None or not isinstance(st, _Session) or st.profile is None:
            return None
        exchange = session.exchange
        assert exchange is not None and st.masker is not None
        req = exchange.current_server
        t = message.type
        if t == _D:
            rw = req.meta.get("masking_rows") if req is not None else None
            if rw is None:
                rw = self._plan(session, st, req)
            assert isinstance(rw, RowRewriter)
            return rw.rewrite(message.raw)
        if t == _d:
            cw = req.meta.get("masking_copy") if req is not None else None
            if not isinstance(cw, CopyRewriter):
                raise MaskingError("COPY data rowgate could not pair with its COPY statement")
            return cw.rewrite(message.raw)
        if req is not None and req.meta.get("masking_injected") and t in (_T, _n):
            return b""  # the answer to rowgate's own Describe
        if t == _T:
            if req is not None and req.kind in ("query", "execute"):
                self._plan(session, st, req)
            return None
        if t == _H:
            self._plan_copy(session, st, req, message)
            return None
        if t in (_E, _N):
            return self._error(session, st, req if t == _E else None, message)
        if t == _A:
            note = be.decode_backend(t, message.payload)
            assert isinstance(note, be.NotificationResponse)
            payload = st.masker.scan(note.payload)
            if payload is note.payload:
                return None
            return be.NotificationResponse(note.pid, note.channel, payload).encode()
        return None

    def _statement_lineage(self, session: SessionInfo, st: _Session, req: Request) -> Lineage | None:
        lineages = self.lineages(session, req.sql)
        i = req.statement_index if req.kind == "query" else 0
        lineage = lineages[i] if i < len(lineages) else None
        if lineage is None and req.sql:
            lineage = self._named_lineage(st, req.sql, i)
        return lineage

    @staticmethod
    def _named_lineage(st: _Session, sql: str, index: int) -> Lineage | None:
        """FETCH from a cursor and EXECUTE of a SQL PREPARE return what their DECLARE or
        PREPARE said."""
        try:
            tree = parse_sql(sql)
        except ParseError:
            return None
        if index >= len(tree):
            return None
        node = tree[index].stmt
        if isinstance(node, ast.FetchStmt):
            return st.named.get(node.portalname or "")
        if isinstance(node, ast.ExecuteStmt):
            return st.named.get("prepare:" + str(node.name))
        return None

    def _plan(self, session: SessionInfo, st: _Session, req: Request | None) -> RowRewriter:
        if req is None or req.columns is None:
            raise MaskingError("rows arrived without a description rowgate could plan masking for")
        assert st.masker is not None and st.profile is not None
        um = self.upstream(session)
        lineage = self._statement_lineage(session, st, req)
        treatments = plan_result(req.columns, lineage, um.classification, st.profile)
        rw = RowRewriter(req.columns, treatments, st.masker, counts=_counts(req))
        req.meta["masking_rows"] = rw
        return rw

    def _plan_copy(self, session: SessionInfo, st: _Session, req: Request | None, message: Frame) -> None:
        resp = be.decode_backend(message.type, message.payload)
        assert isinstance(resp, be.CopyResponse) and st.masker is not None and st.profile is not None
        if req is None or not req.sql:
            raise MaskingError("a COPY rowgate could not pair with its statement")
        texts = [s for s in split(req.sql)] if req.kind == "query" else [req.sql]
        i = req.statement_index if req.kind == "query" else 0
        fmt = copy_out_format(texts[i]) if i < len(texts) else None
        if resp.format != 0 or fmt is None or fmt[0] not in ("text", "csv"):
            raise MaskingError("a COPY in a format rowgate cannot mask")
        lineage = self._statement_lineage(session, st, req)
        n = len(resp.column_formats)
        columns = tuple(be.FieldDescription(f"column{k + 1}", 0, 0, 25, -1, -1, 0) for k in range(n))
        if lineage is not None and len(lineage.outputs) == n:
            columns = tuple(be.FieldDescription(o.name, 0, 0, 25, -1, -1, 0) for o in lineage.outputs)
        treatments = plan_result(columns, lineage, self.upstream(session).classification, st.profile)
        cw = CopyRewriter(columns, treatments, st.masker, csv=fmt[0] == "csv", counts=_counts(req))
        req.meta["masking_copy"] = cw

    def _touches_sensitive(self, session: SessionInfo, req: Request | None) -> bool:
        um = self.upstream(session)
        if req is None or um.classification is None:
            return True
        if req.sql is None:
            return req.kind not in ("sync", "close")
        for lineage in self.lineages(session, req.sql):
            if lineage is None or sensitive_sources(lineage, um.classification):
                return True
        return False

    def _error(self, session: SessionInfo, st: _Session, req: Request | None, message: Frame) -> bytes | None:
        err = be.decode_backend(message.type, message.payload)
        assert isinstance(err, be.ErrorResponse) and st.masker is not None
        code = err.sqlstate or ""
        touches = message.type == _E and code != "42501" and self._touches_sensitive(session, req)
        out: list[tuple[str, str]] = []
        changed = False
        for k, v in err.fields:
            new = v
            if k in _TEXT_FIELDS:
                if touches and k in "DWqp":
                    new = _REDACTED
                elif touches and k == "M":
                    new = _redact_quoted(v)
                new = st.masker.scan(new)
            changed = changed or new != v
            out.append((k, new))
        return be.ErrorResponse(tuple(out), err.kind).encode() if changed else None


def _redact_quoted(message: str) -> str:
    """Everything from the first double quote to the last. Errors of every class quote values
    (casts, constraints, but also ``'x'::regtype`` and ``current_setting(x)`` in class 42), and
    a value may itself hold quotes (a row or JSON document cast to int), so quotes cannot be
    paired; names the client wrote are lost too, but psql still points at the position."""
    first, last = message.find('"'), message.rfind('"')
    if first == last:
        return message if first < 0 else message[:first] + '"***"'
    return message[:first] + '"***"' + message[last + 1:]


class InferenceCheck:
    """The gate's check (``StatementGate(checks=...)``): the inference defence."""

    def __init__(self, stage: MaskingStage) -> None:
        self._stage = stage

    def check(self, session: SessionInfo, stmts: Sequence[Statement]) -> Decision | None:
        stage = self._stage
        st = stage.session_state(session)
        if st.profile is None or stage.config.masking.inference == "off":
            return None
        um = stage.upstream(session)
        catalog, classification = um.catalog, um.classification
        if catalog is None or classification is None:
            if any(not t.startswith(("pg_catalog.", "information_schema.")) for s in stmts for t in s.tables):
                return refuse(f"rowgate is still classifying database {session.upstream} for masking",
                              hint="try again in a few seconds")
            return None
        path = _search_path(session)
        lineages: list[Lineage | None] = []
        for s in stmts:
            found = statement_lineage(s.text, catalog, path)
            lineages.append(found[0] if len(found) == 1 else None)
            unknown = [t for t in s.tables if catalog.columns(t) is None
                       and not t.startswith(("pg_", "information_schema."))]
            if unknown:
                stage.catalogs.refresh_soon(session.upstream)
            # the content scanner alone misses names and addresses: a new table is read only
            # once it is classified
            for t in unknown:
                if t in s.tables_read and not stage.catalogs.read_since_named(session.upstream, t):
                    return refuse(f"rowgate has not classified {t} for masking yet (a new relation)",
                                  hint="try again in a few seconds")
        sensitive = classification.sensitive()
        return check_statements(stmts, lineages, classification, sensitive, st.profile)

