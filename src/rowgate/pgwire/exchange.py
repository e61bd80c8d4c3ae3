"""Which client request each result message answers, sans-IO.

PostgreSQL answers requests strictly in order, so a queue of outstanding requests is
enough to pair them, given three rules of the protocol: after an ErrorResponse in the
extended protocol the server skips every message up to the next Sync; a simple Query
is answered by one result per statement and a single ReadyForQuery; a Sync sent during
COPY FROM STDIN is ignored (no ReadyForQuery answers it).

Stages that need the pairing (masking: which RowDescription a DataRow belongs to;
audit: which statement a CommandComplete ends) share one ``Exchange`` per session.
It never needs DataRow or CopyData to keep its state, so sessions whose rows nobody
inspects keep the relay's fast path for them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rowgate.pgwire import backend as be
from rowgate.pgwire import frontend as fe
from rowgate.pgwire.framing import Frame

Column = be.FieldDescription

_Q, _P, _B, _D, _E, _C, _F, _S = (ord(c) for c in "QPBDECFS")
_COPY_DONE, _COPY_FAIL = ord("c"), ord("f")
_ROW_TYPES = frozenset(b"Dd")  # DataRow, CopyData: they never change the state


@dataclass(slots=True)
class Request:
    seq: int
    kind: str  # query, parse, bind, describe, execute, close, sync, function
    sql: str | None = None  # query: the message text; others: the prepared statement's text
    statement: str | None = None
    portal: str | None = None
    columns: tuple[Column, ...] | None = None  # the RowDescription in effect for this request's rows
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
    columns: tuple[Column, ...] | None = None  # from Describe statement: formats not yet chosen


@dataclass(slots=True)
class _Portal:
    statement: str | None
    sql: str | None
    columns: tuple[Column, ...] | None
    bind_payload: bytes  # of the Bind that created it, for its parameters


def _with_formats(columns: tuple[Column, ...] | None, formats: tuple[int, ...]) -> tuple[Column, ...] | None:
    """Bind's result format codes: none means text, one applies to all, else one each."""
    if columns is None:
        return None
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
        msg = fe.decode_frontend(t, frame.payload)
        if isinstance(msg, fe.Query):
            return self._new("query", sql=msg.sql)
        if isinstance(msg, fe.Parse):
            self._statements[msg.name] = _Prepared(msg.sql)
            return self._new("parse", sql=msg.sql, statement=msg.name)
        if isinstance(msg, fe.Describe):
            if msg.kind == "S":
                prepared = self._statements.get(msg.name)
                return self._new("describe", sql=prepared.sql if prepared else None, statement=msg.name,
                                 describe_kind="S")
            portal = self._portals.get(msg.name)
            return self._new("describe", sql=portal.sql if portal else None, portal=msg.name,
                             statement=portal.statement if portal else None, describe_kind="P")
        if isinstance(msg, fe.Close):
            return self._new("close", describe_kind=msg.kind,
                             statement=msg.name if msg.kind == "S" else None,
                             portal=msg.name if msg.kind == "P" else None)
        if isinstance(msg, fe.FunctionCall):
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
        return prepared.columns if prepared else None

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
        if frame.type in _ROW_TYPES and req is not None and not (
            req._advance or (req.columns is None and req.kind == "execute")
        ):
            self.current_server = req  # the hot path: a row of the result being read
            return req
        self.current_server = None
        if req is None:
            return None
        t = chr(frame.type)
        if t in "NAS":  # notices, notifications and parameter changes come at any time
            return None
        self.current_server = req
        if req.kind == "execute" and req.columns is None and (portal := self._portals.get(req.portal or "")):
            req.columns = portal.columns
        if req.kind == "query" and req._advance and t in "TDCIGHWE":
            req._advance = False
            req.statement_index += 1
            req.columns = None
        if t == "1":
            self._finish(req)
        elif t == "2":
            prepared = self._statements.get(req.statement or "")
            portal = self._portals.get(req.portal or "")
            if portal is not None and prepared is not None and prepared.columns is not None:
                bind = req._bind()
                portal.columns = _with_formats(prepared.columns, bind.result_formats if bind else ())
            self._finish(req)
        elif t == "3":
            if req.describe_kind == "S":
                self._statements.pop(req.statement or "", None)
            else:
                self._portals.pop(req.portal or "", None)
            self._finish(req)
        elif t == "T" or t == "n":
            columns = self._row_description(frame) if t == "T" else None
            if req.kind == "describe":
                req.columns = columns
                if req.describe_kind == "S":
                    if (prepared := self._statements.get(req.statement or "")) is not None:
                        prepared.columns = columns
                elif (portal := self._portals.get(req.portal or "")) is not None:
                    portal.columns = columns
                self._finish(req)
            else:
                req.columns = columns
        elif t in "CI":
            req.tag = self._tag(frame) if t == "C" else None
            if req.kind == "query":
                req._advance = True
            else:
                self._finish(req)
        elif t == "s":
            self._finish(req)
        elif t == "E":
            self._error(req, frame)
        elif t == "Z":
            self._copy_in = False
            self._finish(req)
        elif t == "G":
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

    @staticmethod
    def _tag(frame: Frame) -> str:
        msg = be.decode_backend(frame.type, frame.payload)
        assert isinstance(msg, be.CommandComplete)
        return msg.tag

    @staticmethod
    def _row_description(frame: Frame) -> tuple[Column, ...]:
        msg = be.decode_backend(frame.type, frame.payload)
        assert isinstance(msg, be.RowDescription)
        return msg.fields
