"""Backend (server to client) messages of protocol 3.0, typed, with exact round
trips: ``decode_backend(t, payload).encode() == frame(t, payload)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rowgate.errors import ProtocolViolation
from rowgate.pgwire.buffer import Reader, cstr, frame, i16, i32, nullable, u32

AUTH_OK = 0
AUTH_KERBEROS_V5 = 2
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True, slots=True)
class Authentication:
    """Every 'R' message: ``code`` picks the request, ``data`` holds its payload
    (the MD5 salt, the SASL mechanism list or exchange data)."""

    type: ClassVar[bytes] = b"R"
    code: int
    data: bytes = b""

    @classmethod
    def sasl(cls, mechanisms: list[str]) -> Authentication:
        return cls(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\x00")

    def mechanisms(self) -> list[str]:
        r = Reader(self.data, "AuthenticationSASL")
        out = []
        while (m := r.cstring()) != "":
            out.append(m)
        return out

    def encode(self) -> bytes:
        return frame(self.type, i32(self.code) + self.data)


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    type: ClassVar[bytes] = b"K"
    pid: int
    secret: bytes

    def encode(self) -> bytes:
        return frame(self.type, i32(self.pid) + self.secret)


@dataclass(frozen=True, slots=True)
class ParseComplete:
    type: ClassVar[bytes] = b"1"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class BindComplete:
    type: ClassVar[bytes] = b"2"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class CloseComplete:
    type: ClassVar[bytes] = b"3"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class NoData:
    type: ClassVar[bytes] = b"n"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse:
    type: ClassVar[bytes] = b"I"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class PortalSuspended:
    type: ClassVar[bytes] = b"s"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class CommandComplete:
    type: ClassVar[bytes] = b"C"
    tag: str

    def encode(self) -> bytes:
        return frame(self.type, cstr(self.tag))


@dataclass(frozen=True, slots=True)
class CopyResponse:
    """CopyInResponse ('G'), CopyOutResponse ('H') or CopyBothResponse ('W')."""

    kind: bytes
    format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        body = bytes([self.format]) + i16(len(self.column_formats))
        body += b"".join(i16(f) for f in self.column_formats)
        return frame(self.kind, body)


@dataclass(frozen=True, slots=True)
class CopyData:
    type: ClassVar[bytes] = b"d"
    data: bytes

    def encode(self) -> bytes:
        return frame(self.type, self.data)


@dataclass(frozen=True, slots=True)
class CopyDone:
    type: ClassVar[bytes] = b"c"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class DataRow:
    type: ClassVar[bytes] = b"D"
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        return frame(self.type, i16(len(self.values)) + b"".join(nullable(v) for v in self.values))


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """ErrorResponse ('E') or NoticeResponse ('N'): ordered (field code, value) pairs,
    e.g. ('S', 'ERROR'), ('C', '42501'), ('M', 'message')."""

    fields: tuple[tuple[str, str], ...]
    kind: bytes = b"E"

    def get(self, code: str) -> str | None:
        for c, v in self.fields:
            if c == code:
                return v
        return None

    @property
    def sqlstate(self) -> str | None:
        return self.get("C")

    @property
    def message(self) -> str | None:
        return self.get("M")

    def encode(self) -> bytes:
        body = b"".join(c.encode("latin-1") + cstr(v) for c, v in self.fields) + b"\x00"
        return frame(self.kind, body)


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    type: ClassVar[bytes] = b"V"
    value: bytes | None

    def encode(self) -> bytes:
        return frame(self.type, nullable(self.value))


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    type: ClassVar[bytes] = b"v"
    newest_minor: int
    unrecognized: tuple[str, ...]

    def encode(self) -> bytes:
        body = i32(self.newest_minor) + i32(len(self.unrecognized))
        body += b"".join(cstr(o) for o in self.unrecognized)
        return frame(self.type, body)


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    type: ClassVar[bytes] = b"A"
    pid: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return frame(self.type, i32(self.pid) + cstr(self.channel) + cstr(self.payload))


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    type: ClassVar[bytes] = b"t"
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(self.type, i16(len(self.type_oids)) + b"".join(u32(o) for o in self.type_oids))


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    type: ClassVar[bytes] = b"S"
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(self.type, cstr(self.name) + cstr(self.value))


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    """status: 'I' idle, 'T' in a transaction block, 'E' in a failed transaction."""

    type: ClassVar[bytes] = b"Z"
    status: str

    def encode(self) -> bytes:
        return frame(self.type, self.status.encode("latin-1"))


@dataclass(frozen=True, slots=True)
class FieldDescription:
    name: str
    table_oid: int
    column: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int


@dataclass(frozen=True, slots=True)
class RowDescription:
    type: ClassVar[bytes] = b"T"
    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        body = i16(len(self.fields))
        for f in self.fields:
            body += cstr(f.name) + u32(f.table_oid) + i16(f.column) + u32(f.type_oid)
            body += i16(f.type_size) + i32(f.type_modifier) + i16(f.format)
        return frame(self.type, body)


BackendMessage = (
    Authentication | BackendKeyData | ParseComplete | BindComplete | CloseComplete | NoData
    | EmptyQueryResponse | PortalSuspended | CommandComplete | CopyResponse | CopyData | CopyDone
    | DataRow | ErrorResponse | FunctionCallResponse | NegotiateProtocolVersion | NotificationResponse
    | ParameterDescription | ParameterStatus | ReadyForQuery | RowDescription
)

_EMPTY: dict[str, BackendMessage] = {
    "1": ParseComplete(),
    "2": BindComplete(),
    "3": CloseComplete(),
    "n": NoData(),
    "I": EmptyQueryResponse(),
    "s": PortalSuspended(),
    "c": CopyDone(),
}


def _fields(r: Reader) -> tuple[tuple[str, str], ...]:
    out = []
    while (code := r.byte()) != 0:
        out.append((chr(code), r.cstring()))
    return tuple(out)


def command_tag(payload: bytes) -> str:
    """A CommandComplete's tag, read without building the message (the audit log reads one
    per statement)."""
    if not payload or payload.find(b"\x00") != len(payload) - 1:
        raise ProtocolViolation("invalid CommandComplete message: not one NUL-terminated tag")
    return payload[:-1].decode("utf-8", "surrogateescape")


def decode_backend(type_byte: int, payload: bytes) -> BackendMessage:
    t = chr(type_byte)
    r = Reader(payload, repr(t))
    msg: BackendMessage
    if t in _EMPTY:
        msg = _EMPTY[t]
    elif t == "R":
        msg = Authentication(r.int32(), r.rest())
    elif t == "K":
        pid = r.int32()
        secret = r.rest()
        if not 4 <= len(secret) <= 256:
            raise ProtocolViolation("invalid BackendKeyData message: bad secret key length")
        msg = BackendKeyData(pid, secret)
    elif t == "C":
        msg = CommandComplete(r.cstring())
    elif t in "GHW":
        fmt = r.byte()
        msg = CopyResponse(t.encode(), fmt, tuple(r.int16() for _ in range(r.count(2))))
    elif t == "d":
        msg = CopyData(r.rest())
    elif t == "D":
        msg = DataRow(tuple(r.nullable() for _ in range(r.count(4))))
    elif t in "EN":
        msg = ErrorResponse(_fields(r), t.encode())
    elif t == "V":
        msg = FunctionCallResponse(r.nullable())
    elif t == "v":
        newest = r.int32()
        n = r.int32()
        if n < 0 or n > len(payload):
            raise ProtocolViolation("invalid NegotiateProtocolVersion message: bad option count")
        msg = NegotiateProtocolVersion(newest, tuple(r.cstring() for _ in range(n)))
    elif t == "A":
        msg = NotificationResponse(r.int32(), r.cstring(), r.cstring())
    elif t == "t":
        msg = ParameterDescription(tuple(r.uint32() for _ in range(r.count(4))))
    elif t == "S":
        msg = ParameterStatus(r.cstring(), r.cstring())
    elif t == "Z":
        status = chr(r.byte())
        if status not in "ITE":
            raise ProtocolViolation(f"invalid ReadyForQuery status {status!r}")
        msg = ReadyForQuery(status)
    elif t == "T":
        fields = []
        for _ in range(r.count(19)):
            fields.append(
                FieldDescription(r.cstring(), r.uint32(), r.int16(), r.uint32(), r.int16(), r.int32(), r.int16())
            )
        msg = RowDescription(tuple(fields))
    else:
        raise ProtocolViolation(f"invalid backend message type {type_byte!r}")
    r.end()
    return msg


def error_response(
    sqlstate: str,
    message: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
    notice: bool = False,
) -> ErrorResponse:
    """An ErrorResponse (or NoticeResponse) as PostgreSQL itself would shape it."""
    fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
    if detail:
        fields.append(("D", detail))
    if hint:
        fields.append(("H", hint))
    return ErrorResponse(tuple(fields), b"N" if notice else b"E")
