"""Bounds-checked reading of message payloads: every read past the end is a
ProtocolViolation, never an IndexError or a silent short value."""

from __future__ import annotations

import struct

from rowgate.errors import ProtocolViolation

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


class Reader:
    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _need(self, n: int) -> None:
        if n < 0 or self._pos + n > len(self._data):
            raise ProtocolViolation(f"invalid {self._what} message: truncated payload")

    def int16(self) -> int:
        self._need(2)
        (v,) = _I16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(v)

    def int32(self) -> int:
        self._need(4)
        (v,) = _I32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(v)

    def int16s(self, n: int) -> tuple[int, ...]:
        """``n`` int16s in one go (Bind's format codes come with every prepared execution)."""
        self._need(2 * n)
        v: tuple[int, ...] = struct.unpack_from(f"!{n}h", self._data, self._pos)
        self._pos += 2 * n
        return v

    def uint32(self) -> int:
        self._need(4)
        (v,) = _U32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(v)

    def byte(self) -> int:
        self._need(1)
        v = self._data[self._pos]
        self._pos += 1
        return v

    def raw(self, n: int) -> bytes:
        self._need(n)
        v = self._data[self._pos : self._pos + n]
        self._pos += n
        return v

    def nullable(self) -> bytes | None:
        """An int32 length then that many bytes; -1 means NULL."""
        n = self.int32()
        if n == -1:
            return None
        if n < -1:
            raise ProtocolViolation(f"invalid {self._what} message: negative length {n}")
        return self.raw(n)

    def cstring_bytes(self) -> bytes:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise ProtocolViolation(f"invalid {self._what} message: unterminated string")
        v = self._data[self._pos : end]
        self._pos = end + 1
        return v

    def cstring(self) -> str:
        return self.cstring_bytes().decode("utf-8", "surrogateescape")

    def rest(self) -> bytes:
        v = self._data[self._pos :]
        self._pos = len(self._data)
        return v

    def count(self, per_item_min: int) -> int:
        """An int16 item count, checked against what the payload can still hold."""
        n = self.int16()
        if n < 0 or n * per_item_min > len(self._data) - self._pos:
            raise ProtocolViolation(f"invalid {self._what} message: bad item count {n}")
        return n

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolViolation(f"invalid {self._what} message: {len(self._data) - self._pos} trailing bytes")


def cstr(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape") + b"\x00"


def i16(v: int) -> bytes:
    return _I16.pack(v)


def i32(v: int) -> bytes:
    return _I32.pack(v)


def u32(v: int) -> bytes:
    return _U32.pack(v)


def nullable(v: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if v is None else _I32.pack(len(v)) + v


def frame(type_byte: bytes, payload: bytes) -> bytes:
    return type_byte + _I32.pack(len(payload) + 4) + payload
