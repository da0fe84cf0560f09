"""A tiny stand-in for the panel's WebSocket gateway, for agent tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from websockets.asyncio.server import ServerConnection, serve

from hostplane.protocol import Message, NodeHandshake, NodeHandshakeResponse, dump, parse_message


class PanelStub:
    """A tiny panel: answers handshakes, records every message per connection."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.connections: list[ServerConnection] = []
        self.queries: list[dict[str, list[str]]] = []
        self.url = ""
        self.backlog: list[Message] = []

    async def handler(self, ws: ServerConnection) -> None:
        self.queries.append(parse_qs(urlparse(ws.request.path if ws.request else "").query))
        self.connections.append(ws)
        with contextlib.suppress(Exception):
            async for raw in ws:
                message = parse_message(raw)
                if isinstance(message, NodeHandshake):
                    await ws.send(dump(NodeHandshakeResponse(node_id=message.node_id)))
                await self.messages.put(message)

    async def send(self, message: dict[str, Any]) -> None:
        await self.connections[-1].send(dump(parse_message(message)))

    async def expect(self, kind: type[Any], *, within: float = 10.0, **fields: Any) -> Any:
        """The oldest unclaimed message of ``kind`` (with ``fields``), waiting for it."""

        def matches(message: Message) -> bool:
            return isinstance(message, kind) and all(
                getattr(message, k) == v for k, v in fields.items()
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for index, message in enumerate(self.backlog):
                if matches(message):
                    return self.backlog.pop(index)
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"no {kind.__name__} {fields} within {within}s")
            with contextlib.suppress(TimeoutError):
                self.backlog.append(await asyncio.wait_for(self.messages.get(), remaining))


@contextlib.asynccontextmanager
async def running_panel() -> AsyncIterator[PanelStub]:
    stub = PanelStub()
    async with serve(stub.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        stub.url = f"ws://127.0.0.1:{port}/ws"
        yield stub
