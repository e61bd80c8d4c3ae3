"""The relay phase of a session, on plain asyncio protocols.

Once start-up is over, both sockets get a small Protocol whose ``data_received``
forwards straight to the other transport: no coroutine, future or drain per read,
which is most of what a proxy costs per round trip. Flow control is the transports'
own: when one side's write buffer fills, reading from the other side pauses.

The framer (``Framer.split``) cuts what was read into runs of bytes that go on
untouched and whole messages of the few types the session tracks or some stage asked
for. Whatever no stage replaced is forwarded as it was read, in the batch it arrived in,
with one write: a write per message costs a system call's worth of work in the transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from rowgate.errors import RowgateError
from rowgate.pgwire.framing import Frame
from rowgate.proxy.hooks import BATCHED

if TYPE_CHECKING:
    from rowgate.proxy.session import ClientSession

log = logging.getLogger("rowgate.session")

# message types the session tracks: Query, Execute, Sync, FunctionCall, Terminate,
# CopyDone, CopyFail; ReadyForQuery, ParameterStatus, CopyInResponse
TRACKED_FRONTEND = frozenset(b"QESFXcf")
TRACKED_BACKEND = frozenset(b"ZSG")


def stream_buffer(reader: asyncio.StreamReader) -> bytearray:
    """Bytes a StreamReader has received but nobody read yet. It has no public API for
    them; they matter when its transport changes hands (TLS upgrade, relay phase)."""
    buffer: bytearray = vars(reader)["_buffer"]
    return buffer


def take_buffered(reader: asyncio.StreamReader) -> bytes:
    buffer = stream_buffer(reader)
    data = bytes(buffer)
    buffer.clear()
    return data


class _Side(asyncio.Protocol):
    def __init__(self, relay: Relay, from_client: bool) -> None:
        self._relay = relay
        self._from_client = from_client

    def data_received(self, data: bytes) -> None:
        relay = self._relay
        if relay.done.done():
            return
        try:
            if self._from_client:
                relay.from_client(data)
            else:
                relay.from_upstream(data)
        except Exception as e:  # any failure ends the session; nothing more is forwarded
            relay.finish(e)

    def eof_received(self) -> bool | None:
        self._relay.finish(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.finish(exc)

    def pause_writing(self) -> None:
        other = self._relay.upstream if self._from_client else self._relay.client
        other.pause_reading()

    def resume_writing(self) -> None:
        other = self._relay.upstream if self._from_client else self._relay.client
        if not other.is_closing():
            other.resume_reading()


class Relay:
    def __init__(self, session: ClientSession, client: asyncio.Transport, upstream: asyncio.Transport) -> None:
        self.session = session
        self.client = client
        self.upstream = upstream
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pipeline = session.server.pipeline
        self._pipeline = pipeline
        self._front_hooked = pipeline.frontend_types
        self._front_wanted = TRACKED_FRONTEND | pipeline.frontend_types
        self._back_hooked = pipeline.backend_types
        self._back_looks_only = pipeline.backend_looks_only

    async def run(self, client_backlog: list[Frame], client_bytes: bytes, upstream_bytes: bytes) -> None:
        """Relay until either side closes or ``finish`` is called; raise what ended it."""
        self.client.set_protocol(_Side(self, from_client=True))
        self.upstream.set_protocol(_Side(self, from_client=False))
        if client_backlog:
            self._client_parts(list[bytes | Frame](client_backlog))
        if client_bytes and not self.done.done():
            self.from_client(client_bytes)
        if upstream_bytes and not self.done.done():
            self.from_upstream(upstream_bytes)
        for t in (self.client, self.upstream):
            if not t.is_closing():
                t.resume_reading()
        try:
            await self.done
        finally:
            for t in (self.client, self.upstream):
                if not t.is_closing():
                    t.pause_reading()

    def finish(self, exc: BaseException | None) -> None:
        if self.done.done():
            return
        if exc is None or isinstance(exc, ConnectionError | OSError):
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)

    # --- client to upstream ------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        s = self.session
        s.last_activity = time.monotonic()
        framer = s.framer
        held_before = framer.pending
        parts = framer.split(data, self._front_wanted)
        whole = held_before == 0 and framer.pending == 0  # ``data`` is whole messages
        if not self._front_hooked:
            bye = s.track_frontend(parts)
            if whole:
                self.upstream.write(data)  # the common case: every byte read goes on as it is
            else:
                self.upstream.writelines(raw_bytes(parts))
            if bye:
                self.finish(None)
            return
        self._client_parts(parts, data if whole else None)

    def _client_parts(self, parts: list[bytes | Frame], data: bytes | None = None) -> None:
        """``data``: the bytes ``parts`` were cut from, if they are whole messages (written as
        they are when no stage replaced any)."""
        s = self.session
        hooked = self._front_hooked
        out: list[bytes] = []
        bye = replaced = False
        for part in parts:
            if type(part) is bytes:
                out.append(part)
                continue
            assert type(part) is Frame
            if part.type in hooked:
                try:
                    action = self._pipeline.frontend(s.info, part)
                except Exception as e:
                    raise self._stage_failed(self.upstream, out, "check a statement, so it was refused") from e
                if action is not None:
                    replaced = True
                    if action.to_upstream:
                        out.append(action.to_upstream)
                    s.track_frontend([part])  # a replacement answers like the message it replaces
                    continue
            out.append(part.raw)
            if s.track_frontend([part]):
                bye = True  # nothing after a Terminate goes on
                break
        if data is not None and not (replaced or bye):
            self.upstream.write(data)
        else:
            self.upstream.writelines(out)
        if bye:
            self.finish(None)

    def _stage_failed(self, transport: asyncio.Transport, done: list[bytes], what: str) -> RowgateError:
        """A stage error denies: what was ready before it goes on, nothing after it."""
        log.exception("session %d: a pipeline stage failed", self.session.info.id)
        transport.writelines(done)
        return RowgateError(f"rowgate could not {what}; the connection is closed")

    # --- upstream to client ------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        s = self.session
        assert s.upstream is not None
        framer = s.upstream.framer
        watched = s.info.watched_backend
        hooked = self._back_hooked | watched if watched else self._back_hooked
        held_before = framer.pending
        if hooked:
            # rows come in batches (one pipeline call per run of DataRows read together)
            parts = framer.split(data, TRACKED_BACKEND | hooked, BATCHED & hooked)
        else:
            parts = framer.split(data, TRACKED_BACKEND)
        s.track_backend(parts)
        whole = held_before == 0 and framer.pending == 0  # ``data`` is whole messages
        if not hooked or (self._back_looks_only and not watched):
            if whole:
                self.client.write(data)
            else:
                self.client.writelines(raw_bytes(parts))
            if hooked:
                # the stages only look (the audit log): the client gets the results first, and
                # their work (pairing, the completion record) runs while it reads them
                for part in parts:
                    if isinstance(part, Frame) and part.type in hooked:
                        try:
                            self._pipeline.backend(s.info, part)
                        except Exception as e:
                            raise self._stage_failed(self.client, [], "process a result message") from e
        else:
            out: list[bytes] = []
            changed = False
            for part in parts:
                if not isinstance(part, Frame):
                    out.append(part)
                elif part.type in hooked:
                    try:
                        replaced = self._pipeline.backend(s.info, part)
                    except Exception as e:
                        raise self._stage_failed(self.client, out, "process a result message") from e
                    if replaced is None:
                        out.append(part.raw)
                    else:
                        out.append(replaced)
                        changed = True
                else:
                    out.append(part.raw)
            if whole and not changed:
                self.client.write(data)
            else:
                self.client.writelines(out)
        if s.info.pending == 0 and s.draining and framer.at_boundary:
            s.terminate(s.server.shutdown_error())


def raw_bytes(parts: list[bytes | Frame]) -> list[bytes]:
    return [p.raw if isinstance(p, Frame) else p for p in parts]
