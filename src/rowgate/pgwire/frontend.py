"""Frontend (client to server) messages of protocol 3.0, typed, with exact
round trips: ``decode_frontend(t, payload).encode() == frame(t, payload)``."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from rowgate.errors import ProtocolViolation
from rowgate.pgwire.buffer import Reader, cstr, frame, i16, i32, nullable, u32

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


# --- untyped startup-phase packets -------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage:
    protocol: int
    params: tuple[tuple[str, str], ...]

    @property
    def major(self) -> int:
        return self.protocol >> 16

    @property
    def minor(self) -> int:
        return self.protocol & 0xFFFF

    def get(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return default

    def encode(self) -> bytes:
        body = u32(self.protocol) + b"".join(cstr(k) + cstr(v) for k, v in self.params) + b"\x00"
        return i32(len(body) + 4) + body


@dataclass(frozen=True, slots=True)
class SSLRequest:
    def encode(self) -> bytes:
        return i32(8) + i32(SSL_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return i32(8) + i32(GSSENC_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: bytes  # 4 bytes in protocol 3.0, up to 256 in 3.2

    def encode(self) -> bytes:
        body = i32(CANCEL_REQUEST_CODE) + i32(self.pid) + self.secret
        return i32(len(body) + 4) + body


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def decode_startup(payload: bytes) -> StartupPacket:
    """Decode one startup-phase packet (the bytes after its int32 length)."""
    r = Reader(payload, "startup")
    code = r.uint32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = r.int32()
        secret = r.rest()
        if not 4 <= len(secret) <= 256:
            raise ProtocolViolation("invalid cancel request: bad secret key length")
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server supports 3.0"
        )
    params: list[tuple[str, str]] = []
    while True:
        name = r.cstring()
        if name == "":
            break
        params.append((name, r.cstring()))
    r.end()
    return StartupMessage(code, tuple(params))


def leading_names(payload: bytes, n: int) -> list[str]:
    """The first ``n`` NUL-terminated strings of a message (Bind's and Execute's names),
    without decoding the rest: the relay reads these on every prepared execution."""
    parts = payload.split(b"\x00", n)
    if len(parts) <= n:
        raise ProtocolViolation("malformed message: missing string terminator")
    return [p.decode("utf-8", "surrogateescape") for p in parts[:n]]


# --- typed messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    type: ClassVar[bytes] = b"Q"
    sql: str

    def encode(self) -> bytes:
        return frame(self.type, cstr(self.sql))


@dataclass(frozen=True, slots=True)
class Parse:
    type: ClassVar[bytes] = b"P"
    name: str
    sql: str
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = cstr(self.name) + cstr(self.sql) + i16(len(self.param_types))
        body += b"".join(u32(t) for t in self.param_types)
        return frame(self.type, body)


@dataclass(frozen=True, slots=True)
class Bind:
    type: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = cstr(self.portal) + cstr(self.statement)
        body += i16(len(self.param_formats)) + b"".join(i16(f) for f in self.param_formats)
        body += i16(len(self.params)) + b"".join(nullable(p) for p in self.params)
        body += i16(len(self.result_formats)) + b"".join(i16(f) for f in self.result_formats)
        return frame(self.type, body)


@dataclass(frozen=True, slots=True)
class Describe:
    type: ClassVar[bytes] = b"D"
    kind: str  # 'S' statement or 'P' portal
    name: str

    def encode(self) -> bytes:
        return frame(self.type, self.kind.encode() + cstr(self.name))


@dataclass(frozen=True, slots=True)
class Close:
    type: ClassVar[bytes] = b"C"
    kind: str
    name: str

    def encode(self) -> bytes:
        return frame(self.type, self.kind.encode() + cstr(self.name))


@dataclass(frozen=True, slots=True)
class Execute:
    type: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return frame(self.type, cstr(self.portal) + i32(self.max_rows))


@dataclass(frozen=True, slots=True)
class Sync:
    type: ClassVar[bytes] = b"S"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class Flush:
    type: ClassVar[bytes] = b"H"

    def encode(self) -> bytes:
        return frame(self.type, b"")


@dataclass(frozen=True, slots=True)
class Terminate:
    type: ClassVar[bytes] = b"X"

    def encode(self) -> bytes:
        return frame(self.type, b"")


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
class CopyFail:
    type: ClassVar[bytes] = b"f"
    message: str

    def encode(self) -> bytes:
        return frame(self.type, cstr(self.message))


@dataclass(frozen=True, slots=True)
class FunctionCall:
    type: ClassVar[bytes] = b"F"
    function_oid: int
    arg_formats: tuple[int, ...]
    args: tuple[bytes | None, ...]
    result_format: int

    def encode(self) -> bytes:
        body = u32(self.function_oid)
        body += i16(len(self.arg_formats)) + b"".join(i16(f) for f in self.arg_formats)
        body += i16(len(self.args)) + b"".join(nullable(a) for a in self.args)
        body += i16(self.result_format)
        return frame(self.type, body)


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """Any 'p' message: password, SASLInitialResponse, SASLResponse or GSS data.
    Which one it is depends on the authentication exchange, so the payload stays raw
    and the auth helpers interpret it."""

    type: ClassVar[bytes] = b"p"
    payload: bytes

    def encode(self) -> bytes:
        return frame(self.type, self.payload)


FrontendMessage = (
    Query | Parse | Bind | Describe | Close | Execute | Sync | Flush | Terminate | CopyData | CopyDone
    | CopyFail | FunctionCall | PasswordMessage
)


def _describe_kind(r: Reader, what: str) -> str:
    k = r.byte()
    if k not in (ord("S"), ord("P")):
        raise ProtocolViolation(f"invalid {what} message: kind must be 'S' or 'P'")
    return chr(k)


_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_B = ord("B")


def _bad_bind(why: str) -> ProtocolViolation:
    return ProtocolViolation(f"invalid 'B' message: {why}")


def _int16s(payload: bytes, pos: int) -> tuple[tuple[int, ...], int]:
    """A count, then that many int16s: (them, the position after them)."""
    (n,) = _I16.unpack_from(payload, pos)
    pos += 2
    if n < 0 or 2 * n > len(payload) - pos:
        raise _bad_bind(f"bad item count {n}")
    values: tuple[int, ...] = struct.unpack_from(f"!{n}h", payload, pos)
    return values, pos + 2 * n


def _decode_bind(payload: bytes) -> Bind:
    """Bind comes with every prepared execution (and the audit log reads its parameters):
    read with slices and one struct call per field group instead of a Reader call per
    field, with the same checks."""
    first = payload.find(b"\x00")
    second = payload.find(b"\x00", first + 1) if first >= 0 else -1
    if second < 0:
        raise _bad_bind("unterminated string")
    size, pos = len(payload), second + 1
    params: list[bytes | None] = []
    try:
        param_formats, pos = _int16s(payload, pos)
        (n,) = _I16.unpack_from(payload, pos)
        pos += 2
        if n < 0 or 4 * n > size - pos:
            raise _bad_bind(f"bad item count {n}")
        for _ in range(n):
            (length,) = _I32.unpack_from(payload, pos)
            pos += 4
            if length == -1:
                params.append(None)
                continue
            if length < -1:
                raise _bad_bind(f"negative length {length}")
            if pos + length > size:
                raise _bad_bind("truncated payload")
            params.append(payload[pos : pos + length])
            pos += length
        result_formats, pos = _int16s(payload, pos)
    except struct.error:
        raise _bad_bind("truncated payload") from None
    if pos != size:
        raise _bad_bind(f"{size - pos} trailing bytes")
    return Bind(payload[:first].decode("utf-8", "surrogateescape"),
                payload[first + 1 : second].decode("utf-8", "surrogateescape"),
                param_formats, tuple(params), result_formats)


def decode_frontend(type_byte: int, payload: bytes) -> FrontendMessage:
    if type_byte == _B:
        return _decode_bind(payload)
    t = chr(type_byte)
    r = Reader(payload, repr(t))
    msg: FrontendMessage
    if t == "Q":
        msg = Query(r.cstring())
    elif t == "P":
        name, sql = r.cstring(), r.cstring()
        n = r.count(4)
        msg = Parse(name, sql, tuple(r.uint32() for _ in range(n)))
    elif t == "D":
        msg = Describe(_describe_kind(r, "Describe"), r.cstring())
    elif t == "C":
        msg = Close(_describe_kind(r, "Close"), r.cstring())
    elif t == "E":
        msg = Execute(r.cstring(), r.int32())
    elif t == "S":
        msg = Sync()
    elif t == "H":
        msg = Flush()
    elif t == "X":
        msg = Terminate()
    elif t == "d":
        msg = CopyData(r.rest())
    elif t == "c":
        msg = CopyDone()
    elif t == "f":
        msg = CopyFail(r.cstring())
    elif t == "F":
        oid = r.uint32()
        af = r.int16s(r.count(2))
        args = tuple(r.nullable() for _ in range(r.count(4)))
        msg = FunctionCall(oid, af, args, r.int16())
    elif t == "p":
        msg = PasswordMessage(r.rest())
    else:
        raise ProtocolViolation(f"invalid frontend message type {type_byte!r}")
    r.end()
    return msg
