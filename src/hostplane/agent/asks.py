"""Questions the agent asks the panel over its socket, and their answers.

The panel normally asks and the agent answers; a few features need the
reverse (an SFTP login is decided by the panel). A question carries a fresh
``requestId`` and is answered with ``response`` or ``error`` with the same id.
Without a connection, or when the connection drops or the answer is late,
the question fails: callers treat that as "no".
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from hostplane.protocol import Error, Response, WireModel

ASK_TIMEOUT = 10.0

Send = Callable[[WireModel], Awaitable[None]]
Ask = Callable[[Callable[[str], WireModel]], Awaitable[Any]]


class PanelUnavailable(ConnectionError):
    """No answer: the panel is not connected, hung up, or answered too late."""


class PanelRefused(Exception):
    """The panel answered with ``error``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PanelQuestions:
    """The questions waiting for an answer, by request id."""

    def __init__(self, send: Send, *, timeout: float = ASK_TIMEOUT) -> None:
        self._send = send
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[Response | Error]] = {}
        self.available = False

    async def ask(self, build: Callable[[str], WireModel]) -> Any:
        """Send ``build(request_id)`` and return the answer's ``data``.

        Raises :class:`PanelRefused` for an ``error`` answer and
        :class:`PanelUnavailable` when no answer can come.
        """
        if not self.available:
            raise PanelUnavailable("not connected to the panel")
        request_id = secrets.token_hex(13)
        answer: asyncio.Future[Response | Error] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        try:
            await self._send(build(request_id))
            async with asyncio.timeout(self._timeout):
                reply = await answer
        except TimeoutError:
            raise PanelUnavailable("the panel did not answer in time") from None
        except ConnectionError as exc:
            raise PanelUnavailable(str(exc) or "the panel connection was lost") from None
        finally:
            self._waiting.pop(request_id, None)
        if isinstance(reply, Error):
            raise PanelRefused(reply.code, reply.message)
        return reply.data

    def deliver(self, message: Response | Error) -> bool:
        """Hand an answer to its question; false if nobody asked it."""
        if message.request_id is None:
            return False
        waiting = self._waiting.get(message.request_id)
        if waiting is None:
            return False
        if not waiting.done():
            waiting.set_result(message)
        return True

    def connection_lost(self) -> None:
        """Every open question fails now rather than at its timeout."""
        self.available = False
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(PanelUnavailable("the panel connection was lost"))
