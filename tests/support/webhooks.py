"""A real HTTP receiver for webhook tests that verifies every request like a customer would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]
    verified: bool


@dataclass
class Answer:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    """Answers from ``script`` in order (then ``default``); records what arrived."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    secrets: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        """True when ``standardwebhooks`` accepts the request with every known secret."""
        if not self.secrets:
            return False
        for secret in self.secrets:
            Webhook(secret).verify(body, headers)  # raises WebhookVerificationError
        return True

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        verified = self.verify(body, headers)
        self.received.append(Received(headers, body, json.loads(body), verified))
        self.arrived.set()
        answer = self.script.pop(0) if self.script else self.default
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def receiver(port: int = 0, **kwargs: Any) -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1 (``port``, or a free one) for the block."""
    state = Receiver(**kwargs)
    app = web.Application()
    app.router.add_post("/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield state
    finally:
        await runner.cleanup()
