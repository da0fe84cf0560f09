"""Requests to a node's agent that expect an answer, and byte streams to and from it.

The agent's socket lives on whichever panel replica it dialled, so nothing
here touches a socket: a request is published on the node's command topic
(the gateway holding the agent forwards it), and the gateway publishes what
the agent answers on topics under the node's name
(``node.<id>.reply.<request id>``, ``node.<id>.stream.<stream id>``) — so an
agent can only ever answer requests addressed to its own node.

Streams use credit-based flow control end to end: a sender never has more
bytes in flight than the receiver granted (see :mod:`hostplane.agent.streams`
for the agent's half). Chunks cross the event bus base64-encoded, because the
Redis bus carries JSON.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from hostplane.core.errors import HostplaneError, ServiceUnavailable
from hostplane.core.events.bus import Event, EventBus, Subscription
from hostplane.core.ids import new_id
from hostplane.protocol import (
    Error,
    Response,
    StreamCredit,
    StreamEnd,
    StreamError,
    WireModel,
    dump,
    parse_message,
)

CALL_TIMEOUT = 30.0
# The gateway acknowledges a forwarded request at once; without that, no
# replica holds the node's agent.
ACCEPT_TIMEOUT = 2.0
# How long a stream may go without a chunk or credit before the other side is
# considered gone (a dead agent, a crashed replica).
STALL_TIMEOUT = 60.0
CHUNK_SIZE = 256 * 1024
WINDOW = 8 * CHUNK_SIZE

# Agent error codes -> (HTTP status, client code). Unlisted codes are a 502:
# the node failed, not the caller.
_AGENT_ERRORS: dict[str, tuple[int, str]] = {
    "INVALID_PATH": (400, "INVALID_PATH"),
    "INVALID_MODE": (400, "VALIDATION_ERROR"),
    "NOT_A_DIRECTORY": (400, "NOT_A_DIRECTORY"),
    "IS_A_DIRECTORY": (400, "IS_A_DIRECTORY"),
    "ARCHIVE_REJECTED": (400, "ARCHIVE_REJECTED"),
    "UNSUPPORTED_ARCHIVE": (400, "UNSUPPORTED_ARCHIVE"),
    "URL_REJECTED": (400, "URL_REJECTED"),
    "INVALID_BACKUP_ID": (400, "VALIDATION_ERROR"),
    "INVALID_SERVER_ID": (400, "VALIDATION_ERROR"),
    "NOT_FOUND": (404, "NOT_FOUND"),
    "BACKUP_NOT_FOUND": (404, "NOT_FOUND"),
    "ALREADY_EXISTS": (409, "CONFLICT"),
    "ALREADY_RUNNING": (409, "CONFLICT"),
    "NOT_RUNNING": (409, "CONFLICT"),
    "SERVER_BUSY": (409, "CONFLICT"),
    "PORT_IN_USE": (409, "PORT_IN_USE"),
    "IMAGE_UNAVAILABLE": (409, "IMAGE_UNAVAILABLE"),
    "TOO_LARGE": (413, "TOO_LARGE"),
    "DISK_LIMIT_EXCEEDED": (413, "DISK_LIMIT_EXCEEDED"),
    "CHECKSUM_MISMATCH": (502, "CHECKSUM_MISMATCH"),
    "DOWNLOAD_FAILED": (502, "DOWNLOAD_FAILED"),
    # The agent never got the stream's first credit: the path between us lost it.
    "STREAM_HANDSHAKE_LOST": (503, "NODE_UNAVAILABLE"),
}


class NodeUnavailable(ServiceUnavailable):
    """The node's agent is not connected or stopped answering."""

    code = "NODE_UNAVAILABLE"


class AnswerOverdue(NodeUnavailable):
    """The agent took the request but did not answer in time (or hung up
    before answering): it may still carry it out."""


class AgentFailed(HostplaneError):
    """The agent answered with an error; ``agent_code`` is its own code."""

    def __init__(self, agent_code: str, message: str) -> None:
        status, code = _AGENT_ERRORS.get(agent_code, (502, "AGENT_ERROR"))
        super().__init__(message, status=status, code=code)
        self.agent_code = agent_code


def commands_topic(node_id: str) -> str:
    return f"node.{node_id}.commands"


def reply_topic(node_id: str, request_id: str) -> str:
    return f"node.{node_id}.reply.{request_id}"


def stream_topic(node_id: str, stream_id: str) -> str:
    return f"node.{node_id}.stream.{stream_id}"


def presence_topic(node_id: str) -> str:
    """``node.disconnected`` when the node's agent socket closes (on any replica)."""
    return f"node.{node_id}.presence"


def chunk_event(stream_id: str, data: bytes, *, tenant_id: str | None = None) -> Event:
    return Event(
        "stream.chunk",
        {"streamId": stream_id, "data": base64.b64encode(data).decode("ascii")},
        tenant_id=tenant_id,
    )


def chunk_of(event: Event) -> bytes | None:
    """The bytes of a ``stream.chunk`` event, else ``None``."""
    if event.type != "stream.chunk":
        return None
    raw = event.data.get("data")
    return base64.b64decode(raw) if isinstance(raw, str) else None


def message_of(event: Event) -> Any:
    """The protocol message inside a reply or stream-control event, else ``None``."""
    raw = event.data.get("message")
    if not isinstance(raw, dict):
        return None
    try:
        return parse_message(raw)
    except ValueError:
        return None


class _Exchange:
    """One request's subscription: its reply and, if any, its stream."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._held: list[Event] = []

    async def _get(self, within: float) -> Event:
        if self._held:
            return self._held.pop(0)
        try:
            async with asyncio.timeout(within):
                event = await self.subscription.get()
        except TimeoutError as exc:
            raise NodeUnavailable(
                "the node did not answer in time; is its agent connected?"
            ) from exc
        if event.type == "node.disconnected":
            raise NodeUnavailable("the node's agent disconnected")
        return event

    async def accepted(self) -> None:
        """Wait until the gateway holding the node's agent has handed the request
        over, so a node without a connected agent fails in about a second
        instead of at the request's full timeout."""
        event = await self._get(ACCEPT_TIMEOUT)
        if event.type != "agent.accepted":
            # The answer overtook the acknowledgement: the agent has it.
            self._held.append(event)

    async def next(self, within: float) -> Event:
        while True:
            event = await self._get(within)
            if event.type != "agent.accepted":
                return event


def _reply_data(message: Any) -> Any:
    if isinstance(message, Error):
        raise AgentFailed(message.code, message.message)
    if isinstance(message, Response):
        return message.data
    return None


class Download:
    """Chunks of a stream the agent sends; credit is granted as they are consumed."""

    def __init__(self, rpc: AgentRpc, node_id: str, stream_id: str, exchange: _Exchange) -> None:
        self._rpc = rpc
        self._node_id = node_id
        self.stream_id = stream_id
        self._exchange = exchange
        self._first: bytes | None = None
        self._ended = False
        self.end: StreamEnd | None = None
        self.result: Any = None
        self.size = 0
        self._stopped = False

    async def _next(self) -> bytes | None:
        """The next chunk, or ``None`` at the end; raises the agent's error."""
        while True:
            item = await self._exchange.next(STALL_TIMEOUT)
            data = chunk_of(item)
            if data is not None:
                return data
            message = message_of(item)
            if isinstance(message, StreamEnd):
                self.end = message
                return None
            if isinstance(message, StreamError):
                raise AgentFailed(message.code, message.message)
            if isinstance(message, Error | Response):
                # An answer before the end: an error (or an agent that had
                # nothing to stream).
                self.result = _reply_data(message)
                return None

    @property
    def finished(self) -> bool:
        """The stream ended, or its reader already told the agent it gave up."""
        return self._ended or self._stopped

    async def start(self) -> None:
        """Wait for the first chunk, so an error (a missing file) raises before
        any byte reaches the client."""
        self._first = await self._next()
        if self._first is None:
            self._ended = True

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                self.size += len(first)
                yield first
                await self._rpc._grant(self._node_id, self.stream_id, len(first))
            while not self._ended:
                data = await self._next()
                if data is None:
                    self._ended = True
                    break
                self.size += len(data)
                yield data
                await self._rpc._grant(self._node_id, self.stream_id, len(data))
        except BaseException:
            if not self._ended:
                # The reader went away (a client disconnected): stop the agent.
                self._stopped = True
                with contextlib.suppress(Exception):
                    await self._rpc._control(
                        self._node_id, StreamError(stream_id=self.stream_id, message="reader gone")
                    )
            raise
        if self.end is not None and self.result is None:
            with contextlib.suppress(NodeUnavailable):
                # The agent answers right after stream_end; wait for it briefly.
                while True:
                    message = message_of(await self._exchange.next(CALL_TIMEOUT))
                    if isinstance(message, Error | Response):
                        self.result = _reply_data(message)
                        break


class AgentRpc:
    """Calls and streams to node agents over the event bus."""

    def __init__(self, bus: EventBus, *, tenant_id: str | None = None) -> None:
        self.bus = bus
        self.tenant_id = tenant_id

    async def _publish_message(self, node_id: str, message: WireModel | dict[str, Any]) -> None:
        payload = message if isinstance(message, dict) else _wire(message)
        try:
            await self.bus.publish(
                Event("node.command", {"nodeId": node_id, "message": payload}, self.tenant_id),
                topic=commands_topic(node_id),
            )
        except ConnectionError as exc:
            raise NodeUnavailable("the event bus is unavailable") from exc

    async def _control(self, node_id: str, message: WireModel) -> None:
        await self._publish_message(node_id, message)

    async def _grant(self, node_id: str, stream_id: str, amount: int) -> None:
        await self._control(node_id, StreamCredit(stream_id=stream_id, bytes=amount))

    @contextlib.asynccontextmanager
    async def _exchange(
        self, node_id: str, request_id: str, stream_id: str | None
    ) -> AsyncIterator[_Exchange]:
        topics = [reply_topic(node_id, request_id), presence_topic(node_id)]
        if stream_id is not None:
            topics.append(stream_topic(node_id, stream_id))
        async with self.bus.subscribe(*topics) as subscription:
            yield _Exchange(subscription)

    async def call(self, node_id: str, message: WireModel, *, within: float = CALL_TIMEOUT) -> Any:
        """Send ``message`` and return the agent's ``response`` data.

        Raises :class:`AgentFailed` for the agent's ``error``,
        :class:`NodeUnavailable` when no replica holds the node's agent, and
        :class:`AnswerOverdue` (a ``NodeUnavailable``) when the agent took the
        request but no answer came within ``within``.
        """
        request_id = new_id()
        message = message.model_copy(update={"request_id": request_id})
        async with self._exchange(node_id, request_id, None) as exchange:
            await self._publish_message(node_id, message)
            await exchange.accepted()
            try:
                while True:
                    reply = message_of(await exchange.next(within))
                    if isinstance(reply, Error | Response):
                        return _reply_data(reply)
            except AnswerOverdue:
                raise
            except NodeUnavailable as exc:
                raise AnswerOverdue(str(exc)) from exc

    @contextlib.asynccontextmanager
    async def download(
        self, node_id: str, message: WireModel, *, within: float = CALL_TIMEOUT
    ) -> AsyncIterator[Download]:
        """Open the stream ``message`` asks the agent for (its ``stream_id`` is
        replaced). The yielded :class:`Download` has started: an agent error
        has already been raised."""
        request_id, stream_id = new_id(), new_id()
        message = message.model_copy(update={"request_id": request_id, "stream_id": stream_id})
        async with self._exchange(node_id, request_id, stream_id) as exchange:
            download = Download(self, node_id, stream_id, exchange)
            await self._publish_message(node_id, message)
            await exchange.accepted()
            await self._grant(node_id, stream_id, WINDOW)
            await _bounded(download.start(), within)
            try:
                yield download
            finally:
                if not download.finished:
                    # Left before the end without reading on (a one-time link
                    # another use won, an error): stop the agent now rather
                    # than leave it waiting for credit until it stalls.
                    with contextlib.suppress(Exception):
                        await self._control(
                            node_id, StreamError(stream_id=stream_id, message="reader gone")
                        )

    async def upload(
        self,
        node_id: str,
        message: WireModel,
        chunks: AsyncIterable[bytes],
        *,
        sha256: Callable[[], str | None] | None = None,
        within: float = CALL_TIMEOUT,
    ) -> Any:
        """Send ``message`` and stream ``chunks`` to the agent; return its answer.

        ``sha256`` (called at the end) supplies the checksum announced in
        ``stream_end`` when the bytes are relayed from elsewhere; by default it
        is computed here.
        """
        request_id, stream_id = new_id(), new_id()
        message = message.model_copy(update={"request_id": request_id, "stream_id": stream_id})
        digest = hashlib.sha256()
        credit = 0
        size = 0
        async with self._exchange(node_id, request_id, stream_id) as exchange:
            await self._publish_message(node_id, message)
            await exchange.accepted()

            async def wait_for_credit(needed: int) -> None:
                nonlocal credit
                while credit < needed:
                    # The first credit comes once the agent's handler opened the
                    # stream: a long ``within`` (an import's hours) is for the
                    # answer at the end, not for that.
                    event = await exchange.next(
                        min(within, STALL_TIMEOUT) if size == 0 else STALL_TIMEOUT
                    )
                    reply = message_of(event)
                    if isinstance(reply, StreamCredit):
                        credit += reply.bytes
                    elif isinstance(reply, StreamError):
                        raise AgentFailed(reply.code, reply.message)
                    elif isinstance(reply, Error | Response):
                        _reply_data(reply)
                        raise AgentFailed("STREAM_ABORTED", "the node stopped the upload early")

            try:
                async for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        await wait_for_credit(1)
                        piece = bytes(view[: min(CHUNK_SIZE, credit)])
                        view = view[len(piece) :]
                        credit -= len(piece)
                        size += len(piece)
                        digest.update(piece)
                        await self._publish_chunk(node_id, stream_id, piece)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await self._control(
                        node_id,
                        StreamError(
                            stream_id=stream_id,
                            code=getattr(exc, "code", "STREAM_ABORTED"),
                            message="the upload was interrupted",
                        ),
                    )
                raise
            announced = sha256() if sha256 is not None else digest.hexdigest()
            await self._control(
                node_id, StreamEnd(stream_id=stream_id, size=size, sha256=announced)
            )
            while True:
                reply = message_of(await exchange.next(within))
                if isinstance(reply, StreamError):
                    raise AgentFailed(reply.code, reply.message)
                if isinstance(reply, Error | Response):
                    return _reply_data(reply)

    async def _publish_chunk(self, node_id: str, stream_id: str, data: bytes) -> None:
        try:
            await self.bus.publish(
                chunk_event(stream_id, data, tenant_id=self.tenant_id),
                topic=commands_topic(node_id),
            )
        except ConnectionError as exc:
            raise NodeUnavailable("the event bus is unavailable") from exc


async def _bounded(awaitable: Any, within: float) -> Any:
    try:
        async with asyncio.timeout(within):
            return await awaitable
    except TimeoutError as exc:
        raise NodeUnavailable("the node did not answer in time; is its agent connected?") from exc


def _wire(message: WireModel) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(dump(message))
    return parsed
