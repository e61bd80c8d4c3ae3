"""Splitting a byte stream into protocol messages, sans-IO.

Every length field is checked against a limit before anything is buffered for it.
Messages the relay does not need whole (a large DataRow or CopyData that no stage
inspects) pass through in pieces, so a 100 MB value never sits in memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from rowgate.errors import MessageTooLarge, ProtocolViolation

_LEN = struct.Struct("!i")


def _skip_py(data: bytes, pos: int, wanted: bytes, max_length: int) -> int:
    """The offset of the first message from ``pos`` on that is wanted (``wanted[type]``), has a
    bad header or is not whole, or where fewer than 5 bytes remain: the messages before it
    pass through untouched."""
    n, unpack = len(data), _LEN.unpack_from
    while n - pos >= 5:
        t = data[pos]
        (length,) = unpack(data, pos + 1)
        if wanted[t] or t == 0 or length < 4 or length - 4 > max_length or pos + 1 + length > n:
            break
        pos += 1 + length
    return pos


def _run_end_py(data: bytes, end: int, t: int, max_length: int) -> int:
    """The end of the run of whole, well-formed messages of type ``t`` that starts at ``end``."""
    n, unpack = len(data), _LEN.unpack_from
    while n - end >= 5 and data[end] == t:
        (length,) = unpack(data, end + 1)
        if length < 4 or length - 4 > max_length or end + 1 + length > n:
            break
        end += 1 + length
    return end


try:  # the same two walks compiled (``_walk.c``), where they were built
    from rowgate.pgwire._walk import run_end as _run_end
    from rowgate.pgwire._walk import skip as _skip
except ImportError:
    _skip, _run_end = _skip_py, _run_end_py


@lru_cache(maxsize=64)
def _table(wanted: frozenset[int]) -> bytes:
    return bytes(1 if t in wanted else 0 for t in range(256))

DEFAULT_MAX_MESSAGE = 1 << 30  # 1 GiB, as PostgreSQL's own MaxAllocSize
DEFAULT_MAX_STARTUP = 10_000  # PostgreSQL's MAX_STARTUP_PACKET_LENGTH


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
class Batch(Frame):
    """One or more consecutive whole messages of one type: ``raw`` is all their bytes (so
    ``payload`` means nothing). ``Framer.split`` hands over the types asked for in batches
    this way, so a result's rows cost one call, not one each."""


class Framer:
    """Bytes in, messages out. In startup mode it expects untyped packets (int32
    length first) and stops after one, leaving later bytes unparsed, because after an
    SSLRequest the next bytes belong to TLS, not to this protocol."""

    def __init__(
        self,
        *,
        max_length: int = DEFAULT_MAX_MESSAGE,
        max_startup_length: int = DEFAULT_MAX_STARTUP,
        startup: bool = False,
        peer: str = "client",
    ) -> None:
        self.max_length = max_length
        self.max_startup_length = max_startup_length
        self.startup = startup
        self._peer = peer
        self._buf = bytearray()
        self._need = 0  # total size of the buffered message once its header is known
        self._type = 0
        self._remaining = 0  # bytes of an unwanted message still to pass through (split)

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

    def _fill(self, data: bytes, pos: int, upto: int) -> int:
        """Move bytes from ``data[pos:]`` into the buffer until it holds ``upto``."""
        take = max(0, min(upto - len(self._buf), len(data) - pos))
        self._buf += data[pos : pos + take]
        return pos + take

    def _take_frame(self, batch: frozenset[int] = frozenset()) -> Frame:
        frame = (Batch if self._type in batch else Frame)(self._type, bytes(self._buf))
        self._buf.clear()
        self._need = 0
        return frame

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

    def split(self, data: bytes, wanted: frozenset[int], batch: frozenset[int] = frozenset()) -> list[bytes | Frame]:
        """The relay's framing: cut ``data`` into runs of bytes to forward untouched
        and whole messages of the ``wanted`` types, in stream order. A wanted message is
        held back until it is complete; all others pass through as they arrive, never
        buffered or copied beyond slicing, however large. Wanted messages of the ``batch``
        types come as ``Batch``es: each run of whole ones that were read together is one.
        Do not mix with ``feed``."""
        out: list[bytes | Frame] = []
        pos, n = 0, len(data)
        if self._remaining:  # the rest of an unwanted message passes through
            pos = min(self._remaining, n)
            self._remaining -= pos
        run = 0  # start of the bytes not yet emitted
        if self._buf:
            if self._need == 0:
                pos = self._fill(data, pos, 5)
                if len(self._buf) < 5:
                    return out
                self._type, self._need = self._header(self._buf, 0)
                if len(self._buf) > self._need:  # several messages kept from start-up
                    data = self.take_pending() + data[pos:]
                    pos, n = 0, len(data)
            if self._buf and self._type not in wanted:
                out.append(bytes(self._buf))
                self._remaining = self._need - len(self._buf)
                self._buf.clear()
                self._need = 0
                run = pos
                skip = min(self._remaining, n - pos)
                self._remaining -= skip
                pos += skip
            elif self._buf:
                pos = self._fill(data, pos, self._need)
                if len(self._buf) < self._need:
                    return out
                out.append(self._take_frame(batch))
                run = pos
        max_length = self.max_length
        unpack = _LEN.unpack_from
        table = _table(wanted)
        while n - pos >= 5:
            pos = _skip(data, pos, table, max_length)  # what passes through, at C speed where built
            if n - pos < 5:
                break
            t = data[pos]
            (length,) = unpack(data, pos + 1)
            if length < 4 or length - 4 > max_length or t == 0:
                self._header(data, pos)  # raises the precise error
            end = pos + 1 + length
            if t in wanted:
                if pos > run:
                    out.append(data[run:pos])
                if end > n:
                    self._buf += data[pos:]
                    self._type, self._need = t, end - pos
                    return out
                if t in batch:
                    end = _run_end(data, end, t, max_length)  # the next ones, if whole and well-formed
                    out.append(Batch(t, data[pos:end]))
                else:
                    out.append(Frame(t, data[pos:end]))
                run = pos = end
            else:  # not wanted and not whole (``_skip`` passed the whole ones): the rest streams
                self._remaining = end - n
                pos = n
        if pos < n:  # a header cut short: hold it back until its type is known
            self._buf += data[pos:]
        if pos > run:
            out.append(data[run:pos])
        return out

    def feed(self, data: bytes) -> list[Frame]:
        """Whole messages only, each buffered until complete (up to the limit): for the
        start-up phase and for tests; the relay uses ``split``."""
        out: list[Frame] = []
        pos, n = 0, len(data)
        hdr = 4 if self.startup else 5
        if self._buf and self._need == 0 and len(self._buf) >= hdr and self._header(self._buf, 0)[1] <= len(self._buf):
            # Bytes kept after a startup packet may hold whole messages (the buffered
            # path below assumes less than one): parse them afresh with the new data.
            data = self.take_pending() + data
            n = len(data)
        if self._buf:
            if self._need == 0:
                pos = self._fill(data, pos, hdr)
                if len(self._buf) < hdr:
                    return out
                self._type, self._need = self._header(self._buf, 0)
            pos = self._fill(data, pos, self._need)
            if len(self._buf) < self._need:
                return out
            out.append(self._take_frame())
            if self.startup:
                self._buf += data[pos:]
                return out
        while n - pos >= hdr:
            t, size = self._header(data, pos)
            end = pos + size
            if end > n:
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
