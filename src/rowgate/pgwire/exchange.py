"""Which client request each result message answers, sans-IO.

PostgreSQL answers requests strictly in order, so a queue of outstanding requests is
enough to pair them, given three rules of the protocol: after an ErrorResponse in the
extended protocol the server skips every message up to the next Sync; a simple Query
is answered by one result per statement and a single ReadyForQuery; a Sync sent during
COPY FROM STDIN is ignored (no ReadyForQuery answers it).

Stages that need the pairing (masking: which RowDescription a DataRow belongs to;
audit: which statement a CommandComplete ends) share one ``Exchange`` per session.
It never needs DataRow or CopyData to keep its state, so sessions whose rows nobody
inspects keep the relay's fast path for them; and it decodes only what it needs to pair
(RowDescriptions and Binds wait until a stage asks for columns or parameters), since the
audit log runs it for every statement of every session.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rowgate.errors import ProtocolViolation
from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.framing import Frame

Column = be.FieldDescription

_Q, _P, _B, _D, _E, _C, _F, _S = (ord(c) for c in "QPBDECFS")  # the E of ErrorResponse, C of CommandComplete too
_COPY_DONE, _COPY_FAIL = ord("c"), ord("f")
_T, _n, _I, _Z, _G = (ord(c) for c in "TnIZG")
_PARSE_COMPLETE, _BIND_COMPLETE, _CLOSE_COMPLETE, _SUSPENDED = (ord(c) for c in "123s")
_ROW_TYPES = frozenset(b"Dd")  # DataRow, CopyData: they never change the state
_ASYNC = frozenset(b"NAS")  # notices, notifications and parameter changes come at any time
_RESULT_START = frozenset(b"TDCIGHWE")  # the first message of a statement's result (simple Query)
_KINDS = frozenset(b"SP")  # of Describe and Close


@dataclass(slots=True)
class _Columns:
    """Result columns, computed when a stage first asks (the audit log never does): from a
    RowDescription's payload, or from the statement's columns with a Bind's result formats."""

    payload: bytes = b""
    base: _Columns | None = None
    bind: bytes = b""  # the Bind payload whose result formats apply to ``base``
    value: tuple[Column, ...] | None = None

    def get(self) -> tuple[Column, ...]:
        if self.value is None:
            if self.base is None:
                msg = be.decode_backend(ord("T"), self.payload)
                assert isinstance(msg, be.RowDescription)
                self.value = msg.fields
            else:
                bind = fe.decode_frontend(_B, self.bind)
                assert isinstance(bind, fe.Bind)
                self.value = _with_formats(self.base.get(), bind.result_formats)
        return self.value


@dataclass(slots=True)
class Request:
    seq: int
    kind: str  # query, parse, bind, describe, execute, close, sync, function
    sql: str | None = None  # query: the message text; others: the prepared statement's text
    statement: str | None = None
    portal: str | None = None
    statement_index: int = 0  # query: which of its statements the current results belong to
    bind: fe.Bind | None = None  # bind: decoded on first use (most sessions never look at parameters)
    injected: bool = False
    meta: dict[str, object] = field(default_factory=dict)
    done: bool = False
    tag: str | None = None  # the last CommandComplete tag
    error: str | None = None  # SQLSTATE of its ErrorResponse, or "skipped"
    describe_kind: str | None = None  # describe: 'S' or 'P'
    _advance: bool = False  # query: the next result starts the next statement
    _bind_payload: bytes = b""
    _columns: _Columns | None = None

    @property
    def columns(self) -> tuple[Column, ...] | None:
        """The RowDescription in effect for this request's rows."""
        return self._columns.get() if self._columns is not None else None

    def _bind(self) -> fe.Bind | None:
        if self.bind is None and self._bind_payload:
            msg = fe.decode_frontend(ord("B"), self._bind_payload)
            assert isinstance(msg, fe.Bind)
            self.bind = msg
        return self.bind

    @property
    def parameters(self) -> tuple[bytes | None, ...]:
        """Bind and execute: the parameter values the client bound."""
        bind = self._bind()
        return bind.params if bind else ()

    @property
    def parameter_formats(self) -> tuple[int, ...]:
        bind = self._bind()
        return bind.param_formats if bind else ()


@dataclass(slots=True)
class _Prepared:
    sql: str
    columns: _Columns | None = None  # from Describe statement: formats not yet chosen


@dataclass(slots=True)
class _Portal:
    statement: str | None
    sql: str | None
    columns: _Columns | None
    bind_payload: bytes  # of the Bind that created it, for its parameters


def _with_formats(columns: tuple[Column, ...], formats: tuple[int, ...]) -> tuple[Column, ...]:
    """Bind's result format codes: none means text, one applies to all, else one each."""
    if not formats:
        formats = (0,)
    if len(formats) == 1:
        return tuple(replace(c, format=formats[0]) for c in columns)
    return tuple(replace(c, format=formats[i]) if i < len(formats) else c for i, c in enumerate(columns))


class Exchange:
    # Flush needs no tracking; CopyDone and CopyFail end COPY FROM STDIN
    FRONTEND_TYPES = frozenset(b"QPBDECFScf")
    # never DataRow or CopyData: rows stay on the fast path unless a stage watches them
    BACKEND_TYPES = frozenset(b"123tTnCIsEZGHWV")

    def __init__(self) -> None:
        self._queue: deque[Request] = deque()
        self._statements: dict[str, _Prepared] = {}
        self._portals: dict[str, _Portal] = {}
        self._seq = 0
        self._copy_in = False
        self.current_client: Request | None = None  # opened by the client message being handled
        self.current_server: Request | None = None  # what the backend message being handled answers
        self.on_done: list[Callable[[Request], None]] = []

    # --- client side ---------------------------------------------------------------

    def _new(self, kind: str, **kw: Any) -> Request:
        self._seq += 1
        return Request(self._seq, kind, **kw)

    def _open(self, frame: Frame) -> Request | None:
        t = frame.type
        if t in (_COPY_DONE, _COPY_FAIL):
            self._copy_in = False
            return None
        if t == _S:
            # PostgreSQL ignores a Sync during COPY FROM STDIN: nothing will answer it
            return None if self._copy_in else self._new("sync")
        if t == _B:  # the most frequent message: read only its names here
            portal_name, statement_name = fe.leading_names(frame.payload, 2)
            prepared = self._statements.get(statement_name)
            sql = prepared.sql if prepared else None
            bind = self._new("bind", sql=sql, statement=statement_name, portal=portal_name,
                             _bind_payload=frame.payload)
            # the portal exists for messages pipelined behind; its columns once BindComplete says so
            self._portals[portal_name] = _Portal(statement_name, sql, None, frame.payload)
            return bind
        if t == _E:
            (portal_name,) = fe.leading_names(frame.payload, 1)
            portal = self._portals.get(portal_name)
            if portal is None:
                return self._new("execute", portal=portal_name)
            return self._new("execute", portal=portal_name, sql=portal.sql, statement=portal.statement,
                             _bind_payload=portal.bind_payload)
        if t == _Q:
            return self._new("query", sql=_text(frame.payload, 0, "Query"))
        if t == _D:
            kind, name = _kind_and_name(frame.payload)
            if kind == "S":
                prepared = self._statements.get(name)
                return self._new("describe", sql=prepared.sql if prepared else None, statement=name,
                                 describe_kind="S")
            portal = self._portals.get(name)
            return self._new("describe", sql=portal.sql if portal else None, portal=name,
                             statement=portal.statement if portal else None, describe_kind="P")
        if t == _C:
            kind, name = _kind_and_name(frame.payload)
            return self._new("close", describe_kind=kind, statement=name if kind == "S" else None,
                             portal=name if kind == "P" else None)
        if t == _P:
            msg = fe.decode_frontend(t, frame.payload)
            assert isinstance(msg, fe.Parse)
            self._statements[msg.name] = _Prepared(msg.sql)
            return self._new("parse", sql=msg.sql, statement=msg.name)
        if t == _F:
            return self._new("function")
        return None

    def client(self, frame: Frame, *, injected: bool = False) -> Request | None:
        """Record a client message on its way upstream; the request it opens, if any."""
        req = self._open(frame)
        if req is not None:
            req.injected = injected
            self._queue.append(req)
        self.current_client = req
        return req

    def inject(self, frame: Frame) -> Request:
        """A stage sends ``frame`` upstream right before the client message being handled."""
        req = self._open(frame)
        if req is None:
            raise ValueError(f"cannot inject a message of type {chr(frame.type)!r}")
        req.injected = True
        current = self.current_client
        if current is not None and self._queue and self._queue[-1] is current:
            self._queue.insert(len(self._queue) - 1, req)
        else:
            self._queue.append(req)
        return req

    def statement_columns(self, name: str) -> tuple[Column, ...] | None:
        prepared = self._statements.get(name)
        return prepared.columns.get() if prepared is not None and prepared.columns is not None else None

    # --- server side ---------------------------------------------------------------

    def _finish(self, req: Request) -> None:
        req.done = True
        if self._queue and self._queue[0] is req:
            self._queue.popleft()
        for callback in self.on_done:
            callback(req)

    def _skip_to_sync(self) -> None:
        while self._queue and self._queue[0].kind != "sync":
            skipped = self._queue[0]
            skipped.error = "skipped"
            self._finish(skipped)

    def server(self, frame: Frame) -> Request | None:
        """The request a backend message answers (None for asynchronous messages)."""
        req = self._queue[0] if self._queue else None
        t = frame.type
        if t in _ROW_TYPES and req is not None and not (
            req._advance or (req._columns is None and req.kind == "execute")
        ):
            self.current_server = req  # the hot path: a row of the result being read
            return req
        self.current_server = None
        if req is None or t in _ASYNC:
            return None
        self.current_server = req
        kind = req.kind
        if kind == "execute" and req._columns is None and (portal := self._portals.get(req.portal or "")):
            req._columns = portal.columns
        elif kind == "query" and req._advance and t in _RESULT_START:
            req._advance = False
            req.statement_index += 1
            req._columns = None
        if t in (_C, _I):
            req.tag = be.command_tag(frame.payload) if t == _C else None
            if kind == "query":
                req._advance = True
            else:
                self._finish(req)
        elif t == _Z:
            self._copy_in = False
            self._finish(req)
        elif t in (_T, _n):
            columns = _Columns(frame.payload) if t == _T else None
            req._columns = columns
            if kind == "describe":
                if req.describe_kind == "S":
                    if (prepared := self._statements.get(req.statement or "")) is not None:
                        prepared.columns = columns
                elif (portal := self._portals.get(req.portal or "")) is not None:
                    portal.columns = columns
                self._finish(req)
        elif t == _BIND_COMPLETE:
            prepared = self._statements.get(req.statement or "")
            portal = self._portals.get(req.portal or "")
            if portal is not None and prepared is not None and prepared.columns is not None:
                portal.columns = _Columns(base=prepared.columns, bind=req._bind_payload)
            self._finish(req)
        elif t in (_PARSE_COMPLETE, _SUSPENDED):
            self._finish(req)
        elif t == _CLOSE_COMPLETE:
            if req.describe_kind == "S":
                self._statements.pop(req.statement or "", None)
            else:
                self._portals.pop(req.portal or "", None)
            self._finish(req)
        elif t == _E:
            self._error(req, frame)
        elif t == _G:
            self._copy_in = True
        return req

    def _error(self, req: Request, frame: Frame) -> None:
        err = be.decode_backend(frame.type, frame.payload)
        assert isinstance(err, be.ErrorResponse)
        req.error = err.sqlstate or "XX000"
        self._copy_in = False
        if req.kind in ("query", "function", "sync"):
            return  # a ReadyForQuery still ends it
        if req.kind == "parse":
            self._statements.pop(req.statement or "", None)
        self._finish(req)
        self._skip_to_sync()


def _text(payload: bytes, start: int, what: str) -> str:
    """The one NUL-terminated string a message's payload ends with, from ``start``."""
    if payload.find(b"\x00", start) != len(payload) - 1 or len(payload) <= start:
        raise ProtocolViolation(f"invalid {what} message: not one NUL-terminated string")
    return payload[start:-1].decode("utf-8", "surrogateescape")


def _kind_and_name(payload: bytes) -> tuple[str, str]:
    """Describe's or Close's kind and name, read without building the message."""
    if not payload or payload[0] not in _KINDS:
        raise ProtocolViolation("invalid Describe or Close message: kind must be 'S' or 'P'")
    return chr(payload[0]), _text(payload, 1, "Describe or Close")
