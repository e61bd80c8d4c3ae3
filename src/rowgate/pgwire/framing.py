"""Splitting a byte stream into protocol messages, sans-IO.

Every length field is checked against a limit before anything is buffered for it.
Messages the caller does not need whole (large DataRow or CopyData that no stage
inspects) may be passed through in pieces, so a 100 MB value never sits in memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rowgate.errors import MessageTooLarge, ProtocolViolation

_LEN = struct.Struct("!i")

DEFAULT_MAX_MESSAGE = 1 << 30  # 1 GiB, as PostgreSQL's own MaxAllocSize
DEFAULT_MAX_STARTUP = 10_000  # PostgreSQL's MAX_STARTUP_PACKET_LENGTH
DEFAULT_STREAM_THRESHOLD = 1 << 20


@dataclass(slots=True)
class Frame:
    """A whole message. ``raw`` is its exact bytes, header included, so a message
    nobody changed is forwarded byte for byte."""

    type: int  # the type byte; 0 for an untyped startup-phase packet
    raw: bytes

    @property
    def payload(self) -> bytes:
        return self.raw[4:] if self.type == 0 else self.raw[5:]


@dataclass(slots=True)
class StreamStart:
    """The head of a large message that is passed through in pieces."""

    type: int
    length: int  # payload length
    head: bytes  # header plus the first payload bytes


@dataclass(slots=True)
class StreamChunk:
    data: bytes
    last: bool


Event = Frame | StreamStart | StreamChunk


class Framer:
    """Feed bytes, get events. In startup mode it expects untyped packets (int32
    length first) and stops after one, leaving later bytes unparsed, because after an
    SSLRequest the next bytes belong to TLS, not to this protocol."""

    def __init__(
        self,
        *,
        max_length: int = DEFAULT_MAX_MESSAGE,
        max_startup_length: int = DEFAULT_MAX_STARTUP,
        stream_threshold: int = DEFAULT_STREAM_THRESHOLD,
        startup: bool = False,
        peer: str = "client",
    ) -> None:
        self.max_length = max_length
        self.max_startup_length = max_startup_length
        self.stream_threshold = stream_threshold
        self.streamable: frozenset[int] = frozenset()
        self.startup = startup
        self._peer = peer
        self._buf = bytearray()
        self._need = 0  # total size of the buffered message once its header is known
        self._type = 0
        self._remaining = 0  # bytes still to pass through of a streamed message

    @property
    def pending(self) -> int:
        """Bytes received but not yet emitted."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """True between messages: something may be inserted into the stream here."""
        return not self._buf and not self._remaining

    def take_pending(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        self._need = 0
        return data

    def _header(self, data: bytes | bytearray, pos: int) -> tuple[int, int]:
        """Validate the header at pos; return (type byte, total message size)."""
        if self.startup:
            (length,) = _LEN.unpack_from(data, pos)
            if length < 8:
                raise ProtocolViolation(f"invalid startup packet length {length} from {self._peer}")
            if length > self.max_startup_length:
                raise MessageTooLarge(
                    f"startup packet of {length} bytes exceeds the limit of {self.max_startup_length}"
                )
            return 0, length
        t = data[pos]
        if t == 0:  # no message type is 0; Frame.type 0 means an untyped startup packet
            raise ProtocolViolation(f"invalid message type 0 from {self._peer}")
        (length,) = _LEN.unpack_from(data, pos + 1)
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length} from {self._peer}")
        if length - 4 > self.max_length:
            raise MessageTooLarge(
                f"message of {length - 4} bytes from {self._peer} exceeds the limit of {self.max_length}"
            )
        return t, length + 1

    def scan(self, data: bytes, wanted: frozenset[int]) -> list[Frame]:
        """The relay's fast path, for a caller that forwards ``data`` itself: only
        messages of the ``wanted`` types come back; all others are skipped without
        being copied or buffered, however large. Do not mix with ``feed`` mid-stream."""
        out: list[Frame] = []
        pos, n = 0, len(data)
        if self._remaining:
            pos = min(self._remaining, n)
            self._remaining -= pos
        if self._buf and self._need == 0 and len(self._buf) >= 5 and self._header(self._buf, 0)[1] < len(self._buf):
            # more than one message kept from the start-up phase: parse it afresh
            data = self.take_pending() + data[pos:]
            pos, n = 0, len(data)
        if self._buf:
            if self._need == 0:
                take = max(0, min(5 - len(self._buf), n - pos))
                self._buf += data[pos : pos + take]
                pos += take
                if len(self._buf) < 5:
                    return out
                self._type, self._need = self._header(self._buf, 0)
            if self._type not in wanted:
                self._remaining = self._need - len(self._buf)
                self._buf.clear()
                self._need = 0
                skip = min(self._remaining, n - pos)
                self._remaining -= skip
                pos += skip
            else:
                take = min(self._need - len(self._buf), n - pos)
                self._buf += data[pos : pos + take]
                pos += take
                if len(self._buf) < self._need:
                    return out
                out.append(Frame(self._type, bytes(self._buf)))
                self._buf.clear()
                self._need = 0
        max_length = self.max_length
        unpack = _LEN.unpack_from
        while n - pos >= 5:
            t = data[pos]
            (length,) = unpack(data, pos + 1)
            if length < 4 or length - 4 > max_length or t == 0:
                self._header(data, pos)  # raises the precise error
            end = pos + 1 + length
            if t in wanted:
                if end > n:
                    break
                out.append(Frame(t, data[pos:end]))
            elif end > n:
                self._remaining = end - n
                return out
            pos = end
        if pos < n:
            self._buf += data[pos:]
            self._check_buffered_header(5)
        return out

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        pos, n = 0, len(data)
        if self._remaining:
            take = min(self._remaining, n)
            self._remaining -= take
            out.append(StreamChunk(data[:take], self._remaining == 0))
            pos = take
        hdr = 4 if self.startup else 5
        if self._buf and self._need == 0 and len(self._buf) >= hdr and self._header(self._buf, 0)[1] <= len(self._buf):
            # Bytes kept after a startup packet may hold whole messages (the buffered
            # path below assumes less than one): parse them afresh with the new data.
            data = self.take_pending() + data[pos:]
            pos, n = 0, len(data)
        if self._buf:
            if self._need == 0:
                take = max(0, min(hdr - len(self._buf), n - pos))
                self._buf += data[pos : pos + take]
                pos += take
                if len(self._buf) < hdr:
                    return out
                self._type, self._need = self._header(self._buf, 0)
                if self._need - hdr > self.stream_threshold and self._type in self.streamable:
                    head = bytes(self._buf)
                    self._buf.clear()
                    self._remaining = self._need - len(head)
                    self._need = 0
                    out.append(StreamStart(self._type, self._remaining + len(head) - hdr, head))
                    if pos < n:
                        out.extend(self.feed(data[pos:]))
                    return out
            take = min(self._need - len(self._buf), n - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) < self._need:
                return out
            out.append(Frame(self._type, bytes(self._buf)))
            self._buf.clear()
            self._need = 0
            if self.startup:
                self._buf += data[pos:]
                return out
        while n - pos >= hdr:
            t, size = self._header(data, pos)
            end = pos + size
            if end > n:
                if size - hdr > self.stream_threshold and t in self.streamable:
                    self._remaining = end - n
                    out.append(StreamStart(t, size - hdr, data[pos:]))
                    return out
                break
            out.append(Frame(t, data[pos:end]))
            pos = end
            if self.startup:
                break
        if pos < n:
            self._buf += data[pos:]
            if not out or not self.startup:
                # validate a buffered header now, before more bytes are kept for it
                self._check_buffered_header(hdr)
        return out

    def _check_buffered_header(self, hdr: int) -> None:
        if len(self._buf) >= hdr:
            self._header(self._buf, 0)
