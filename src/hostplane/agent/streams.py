"""Byte streams between the agent and the panel, with credit-based flow control.

A request that moves a body (a file read or write, a backup download, a
transfer) names a stream id. Data travels in binary frames
(:func:`hostplane.protocol.encode_chunk`); the receiver grants credit in bytes
(``stream_credit``) and the sender never has more than that in flight, so a
slow reader slows the writer instead of filling memory anywhere between them.
``stream_end`` carries the total size and sha256; ``stream_error`` stops the
other side.

Stream control frames are handled in the order they arrive on the socket
(never in a task), so a ``stream_end`` cannot overtake the last chunk.

The panel grants a download's first credit as soon as its request reaches
this agent, while the handler that opens the stream may still be in a thread
opening the file. Credit (or a ``stream_error``) for a stream id the hub does
not know yet is therefore kept for a while, bounded in number and age, and
handed to the stream when it opens: dropping it would leave both sides
waiting for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

from hostplane.agent.runtime import AgentRuntimeError
from hostplane.protocol import (
    StreamCredit,
    StreamEnd,
    StreamError,
    WireModel,
    decode_chunk,
    encode_chunk,
)

CHUNK_SIZE = 256 * 1024
WINDOW = 8 * CHUNK_SIZE
# A sender that gets no credit for this long assumes the reader is gone.
STALL_TIMEOUT = 120.0
# The panel grants the first credit right after handing the request over, so
# a stream that never gets any has lost its handshake: fail it well before
# the panel's own wait for the first chunk ends.
FIRST_CREDIT_TIMEOUT = 10.0
# Control frames for streams not opened yet: at most this many ids, each kept
# this long (a request whose handler never opens its stream must not leak).
EARLY_LIMIT = 1024
EARLY_TTL = 60.0


def _clock() -> float:
    return time.monotonic()


class StreamAborted(AgentRuntimeError):
    code = "STREAM_ABORTED"


class StreamHandshakeLost(StreamAborted):
    code = "STREAM_HANDSHAKE_LOST"


class OutgoingStream:
    """The agent sends; the panel grants credit."""

    def __init__(self, stream_id: str, send_bytes: Callable[[bytes], Awaitable[None]]) -> None:
        self.stream_id = stream_id
        self._send_bytes = send_bytes
        self._credit = 0
        self._changed = asyncio.Event()
        self._error: StreamError | None = None
        self.size = 0
        self._hash = hashlib.sha256()
        self._granted = False

    def grant(self, amount: int) -> None:
        self._credit += max(0, amount)
        self._granted = True
        self._changed.set()

    def fail(self, error: StreamError) -> None:
        self._error = error
        self._changed.set()

    async def _wait_for_credit(self) -> None:
        while self._credit <= 0:
            if self._error is not None:
                raise StreamAborted(self._error.message)
            self._changed.clear()
            first = not self._granted
            try:
                await asyncio.wait_for(
                    self._changed.wait(), FIRST_CREDIT_TIMEOUT if first else STALL_TIMEOUT
                )
            except TimeoutError as exc:
                if first:
                    raise StreamHandshakeLost(
                        "the panel never opened this stream (no credit arrived)"
                    ) from exc
                raise StreamAborted("the reader stopped taking data") from exc
        if self._error is not None:
            raise StreamAborted(self._error.message)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            await self._wait_for_credit()
            piece = bytes(view[: min(CHUNK_SIZE, self._credit)])
            view = view[len(piece) :]
            self._credit -= len(piece)
            self._hash.update(piece)
            self.size += len(piece)
            await self._send_bytes(encode_chunk(self.stream_id, piece))

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class IncomingStream:
    """The panel sends; the agent grants credit as it consumes."""

    def __init__(self, stream_id: str, send: Callable[[WireModel], Awaitable[None]]) -> None:
        self.stream_id = stream_id
        self._send = send
        self._queue: asyncio.Queue[bytes | StreamEnd | StreamError] = asyncio.Queue()
        self.end: StreamEnd | None = None
        self.size = 0
        self._hash = hashlib.sha256()

    def feed(self, item: bytes | StreamEnd | StreamError) -> None:
        self._queue.put_nowait(item)

    async def open(self) -> None:
        await self._send(StreamCredit(stream_id=self.stream_id, bytes=WINDOW))

    async def chunks(self) -> AsyncIterator[bytes]:
        """The stream's data until ``stream_end``; :class:`StreamAborted` on
        ``stream_error`` or when the panel goes quiet."""
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), STALL_TIMEOUT)
            except TimeoutError as exc:
                raise StreamAborted("the sender stopped sending") from exc
            if isinstance(item, StreamEnd):
                self.end = item
                return
            if isinstance(item, StreamError):
                raise StreamAborted(item.message)
            self._hash.update(item)
            self.size += len(item)
            yield item
            # Consumed: let the sender replace it.
            await self._send(StreamCredit(stream_id=self.stream_id, bytes=len(item)))

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class _Early:
    """Control frames for a stream that has not opened yet."""

    __slots__ = ("at", "credit", "error")

    def __init__(self, at: float) -> None:
        self.at = at
        self.credit = 0
        self.error: StreamError | None = None


class StreamHub:
    """Every open stream of one agent, keyed by stream id."""

    def __init__(
        self,
        send: Callable[[WireModel], Awaitable[None]],
        send_bytes: Callable[[bytes], Awaitable[None]],
    ) -> None:
        self._send = send
        self._send_bytes = send_bytes
        self._outgoing: dict[str, OutgoingStream] = {}
        self._incoming: dict[str, IncomingStream] = {}
        self._early: OrderedDict[str, _Early] = OrderedDict()

    def _remember(self, stream_id: str) -> _Early:
        now = _clock()
        while self._early:
            sid, oldest = next(iter(self._early.items()))
            if now - oldest.at < EARLY_TTL and len(self._early) < EARLY_LIMIT:
                break
            del self._early[sid]
        early = self._early.get(stream_id)
        if early is None:
            early = self._early[stream_id] = _Early(now)
        return early

    def _claim_early(self, stream_id: str) -> _Early | None:
        early = self._early.pop(stream_id, None)
        if early is None or _clock() - early.at >= EARLY_TTL:
            return None
        return early

    @contextlib.asynccontextmanager
    async def outgoing(self, stream_id: str) -> AsyncIterator[OutgoingStream]:
        """Send on ``stream_id``; ends with ``stream_end`` or, on error, ``stream_error``."""
        stream = OutgoingStream(stream_id, self._send_bytes)
        self._outgoing[stream_id] = stream
        if (early := self._claim_early(stream_id)) is not None:
            if early.credit:
                stream.grant(early.credit)
            if early.error is not None:
                stream.fail(early.error)
        try:
            yield stream
        except BaseException as exc:
            code = exc.code if isinstance(exc, AgentRuntimeError) else "STREAM_ABORTED"
            with contextlib.suppress(Exception):
                await self._send(StreamError(stream_id=stream_id, code=code, message=str(exc)))
            raise
        else:
            await self._send(StreamEnd(stream_id=stream_id, size=stream.size, sha256=stream.sha256))
        finally:
            self._outgoing.pop(stream_id, None)

    @contextlib.asynccontextmanager
    async def incoming(self, stream_id: str) -> AsyncIterator[IncomingStream]:
        """Receive on ``stream_id``; the first credit is granted on entry."""
        stream = IncomingStream(stream_id, self._send)
        self._incoming[stream_id] = stream
        if (early := self._claim_early(stream_id)) is not None and early.error is not None:
            # The panel gave up before the handler got here.
            stream.feed(early.error)
        try:
            await stream.open()
            yield stream
        except BaseException as exc:
            if not isinstance(exc, StreamAborted):
                code = exc.code if isinstance(exc, AgentRuntimeError) else "STREAM_ABORTED"
                with contextlib.suppress(Exception):
                    await self._send(StreamError(stream_id=stream_id, code=code, message=str(exc)))
            raise
        finally:
            self._incoming.pop(stream_id, None)

    def on_frame(self, frame: bytes) -> None:
        """A binary frame from the panel: a chunk of an incoming stream."""
        stream_id, payload = decode_chunk(frame)
        stream = self._incoming.get(stream_id)
        if stream is not None:
            stream.feed(payload)

    def on_control(self, message: StreamCredit | StreamEnd | StreamError) -> None:
        sid = message.stream_id
        out = self._outgoing.get(sid)
        inc = self._incoming.get(sid)
        if out is None and inc is None:
            # Not opened yet (its handler is still starting): keep it for then.
            if isinstance(message, StreamCredit):
                self._remember(sid).credit += max(0, message.bytes)
            elif isinstance(message, StreamError):
                self._remember(sid).error = message
            return
        if isinstance(message, StreamCredit):
            if out is not None:
                out.grant(message.bytes)
            return
        if isinstance(message, StreamError) and out is not None:
            out.fail(message)
        if inc is not None:
            inc.feed(message)

    @property
    def open_streams(self) -> int:
        """Streams whose handler is sending or receiving now."""
        return len(self._outgoing) + len(self._incoming)

    @property
    def pending_early(self) -> int:
        """How many not-yet-opened streams have control frames waiting."""
        return len(self._early)

    def abort_all(self, reason: str) -> None:
        """The socket dropped: every stream fails (the panel has given up on them too)."""
        for sid, out in list(self._outgoing.items()):
            out.fail(StreamError(stream_id=sid, message=reason))
        for sid, inc in list(self._incoming.items()):
            inc.feed(StreamError(stream_id=sid, message=reason))
        # Credit granted on the old connection means nothing on the next one.
        self._early.clear()
