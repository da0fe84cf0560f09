"""Direct transfers between nodes: a peer listener on the target, a push from the source.

The panel relays a transfer's archive when it has to (agents dial out, so a
node behind NAT can always be reached through it), but a copy straight from
node to node saves the panel a full pass over the bytes. For that the target
runs a small WebSocket listener (``transfer_listen``).

Authorization is one token per transfer, issued by the panel and handed to
both agents over their own authenticated panel connections: the target is
told to expect it (``transfer_prepare``), the source presents it
(``transfer_push``). The target accepts exactly one connection with that
token, for that server, within :data:`TOKEN_TTL`, and the token is spent on
use. No key is shared between nodes, and a token seen after its use opens
nothing. The archive's sha256, announced at the end, is checked by the target
and compared again by the panel with what the source reported.

Wire: a WebSocket to the listener's URL with ``Authorization: Bearer
<token>`` and ``X-Hostplane-Server: <server id>``; binary frames carry the
archive (TCP flow control bounds what is in flight); a text frame
``{"type": "stream_end", "size", "sha256"}`` ends it. The target closes with
1000 once the archive is whole and its checksum verified, or with 4400 and a
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from hostplane.agent.config import AgentSettings, split_host_port
from hostplane.agent.runtime import AgentRuntimeError
from hostplane.agent.streams import CHUNK_SIZE, STALL_TIMEOUT, StreamAborted
from hostplane.protocol import StreamEnd

logger = logging.getLogger(__name__)

PATH = "/transfers"
SERVER_HEADER = "X-Hostplane-Server"
# How long a prepared token waits for the source to connect.
TOKEN_TTL = 60.0
# How long the target's import waits for the connection once asked to.
ACCEPT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
# After stream_end the target verifies the checksum and syncs the file.
VERDICT_TIMEOUT = 120.0
CLOSE_OK = 1000
CLOSE_REFUSED = 4400


class PeerUnreachable(AgentRuntimeError):
    """No connection to the target could be opened; nothing was sent."""

    code = "TARGET_UNREACHABLE"


class PeerRefused(AgentRuntimeError):
    """The target ended the transfer with an error."""

    code = "TRANSFER_REFUSED"


class PeerNotConnected(AgentRuntimeError):
    """The source did not connect in time, or the wait was cancelled."""

    code = "TRANSFER_NOT_CONNECTED"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class PeerIncoming:
    """The archive arriving on one accepted connection: ``chunks()``, then ``end``
    (the interface of :class:`hostplane.agent.streams.IncomingStream`)."""

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection
        self.end: StreamEnd | None = None
        self.size = 0
        self.finished = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(STALL_TIMEOUT):
                    frame = await self._connection.recv()
            except TimeoutError as exc:
                raise StreamAborted("the source node stopped sending") from exc
            except websockets.ConnectionClosed as exc:
                raise StreamAborted("the source node disconnected") from exc
            if isinstance(frame, bytes):
                self.size += len(frame)
                yield frame
                continue
            try:
                control = json.loads(frame)
                if control.get("type") == "stream_end":
                    self.end = StreamEnd(
                        stream_id="direct", size=int(control["size"]), sha256=control["sha256"]
                    )
                    return
                reason = str(control.get("message") or "the source node gave up")
            except (ValueError, KeyError, TypeError, AttributeError):
                reason = "the source node sent an invalid frame"
            raise StreamAborted(reason)

    async def finish(self, *, error: str | None = None) -> None:
        """Tell the source how it ended and release the connection."""
        try:
            if error is None:
                await self._connection.close(CLOSE_OK)
            else:
                await self._connection.close(CLOSE_REFUSED, error[:120])
        finally:
            self.finished.set()


@dataclass
class _Expected:
    digest: bytes
    deadline: float
    arrived: asyncio.Future[PeerIncoming] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    spent: bool = False


class PeerListener:
    """The target's listener. Disabled (``enabled`` false) without ``transfer_listen``."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self._server: Server | None = None
        self._port: int | None = None
        self._expected: dict[str, _Expected] = {}
        self._accepted: dict[int, str] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.settings.transfer_listen)

    @property
    def url(self) -> str | None:
        """Where other nodes reach this listener, once it is running."""
        if self._server is None:
            return None
        if self.settings.transfer_url:
            return self.settings.transfer_url
        host, _ = split_host_port(self.settings.transfer_listen)
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - naming the wildcard, not binding it
            host = socket.getfqdn()
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.settings.transfer_tls_cert else "ws"
        return f"{scheme}://{host}:{self._port}{PATH}"

    async def start(self) -> None:
        if not self.enabled or self._server is not None:
            return
        host, port = split_host_port(self.settings.transfer_listen)
        tls: ssl.SSLContext | None = None
        if self.settings.transfer_tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.settings.transfer_tls_cert, self.settings.transfer_tls_key)
        try:
            self._server = await serve(
                self._handle,
                host or None,
                port,
                ssl=tls,
                process_request=self._check,
                max_size=2 * CHUNK_SIZE,
                compression=None,  # archives are zstd already
                server_header=None,
            )
        except OSError as exc:
            # Transfers to this node still work, relayed by the panel.
            logger.error("peer listener not started on %s: %s", self.settings.transfer_listen, exc)
            return
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        logger.info("peer listener on %s", self.url)

    async def close(self) -> None:
        for expected in self._expected.values():
            if not expected.arrived.done():
                expected.arrived.set_exception(PeerNotConnected("the agent is shutting down"))
                expected.arrived.exception()  # retrieved: nobody may be waiting
        self._expected.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def expect(self, server_id: str, token: str) -> None:
        """Allow one connection for ``server_id`` presenting ``token``."""
        self.cancel(server_id)
        self._expected[server_id] = _Expected(_digest(token), time.monotonic() + TOKEN_TTL)

    def cancel(self, server_id: str) -> None:
        """Forget the server's token and end a wait for its connection."""
        expected = self._expected.pop(server_id, None)
        if expected is not None and not expected.arrived.done():
            expected.arrived.set_exception(PeerNotConnected("the transfer was aborted"))
            expected.arrived.exception()

    @contextlib.asynccontextmanager
    async def accept(self, server_id: str) -> AsyncIterator[PeerIncoming]:
        """The source's connection for ``server_id`` (prepared with :meth:`expect`).

        Leaving the block normally closes it with "verified"; an exception
        closes it with the error, which the source reports."""
        expected = self._expected.get(server_id)
        if expected is None:
            raise PeerNotConnected("no direct transfer was prepared for this server")
        try:
            async with asyncio.timeout(ACCEPT_TIMEOUT):
                incoming = await asyncio.shield(expected.arrived)
        except TimeoutError as exc:
            raise PeerNotConnected("the source node did not connect") from exc
        finally:
            if self._expected.get(server_id) is expected:
                del self._expected[server_id]
        try:
            yield incoming
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await incoming.finish(error=str(exc) or "the transfer failed on the target")
            raise
        await incoming.finish()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse anything but one prepared server's connection with its token."""
        if request.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        server_id = request.headers.get(SERVER_HEADER, "")
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        expected = self._expected.get(server_id)
        if (
            expected is None
            or expected.spent
            or time.monotonic() > expected.deadline
            or not hmac.compare_digest(expected.digest, _digest(presented))
        ):
            logger.warning("peer connection refused from %s", connection.remote_address)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        expected.spent = True
        self._accepted[id(connection)] = server_id
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        server_id = self._accepted.pop(id(connection), None)
        expected = self._expected.get(server_id or "")
        if expected is None or expected.arrived.done():
            await connection.close(CLOSE_REFUSED, "the transfer is no longer expected")
            return
        incoming = PeerIncoming(connection)
        expected.arrived.set_result(incoming)
        # The connection lives as long as this handler: wait for the import
        # to finish with it, or for it to drop.
        finished = asyncio.create_task(incoming.finished.wait())
        closed = asyncio.create_task(connection.wait_closed())
        try:
            await asyncio.wait({finished, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            closed.cancel()


async def push(
    url: str,
    token: str,
    server_id: str,
    next_chunk: Callable[[], Awaitable[bytes | None]],
    *,
    ca_file: str | None = None,
) -> tuple[int, str]:
    """Stream ``next_chunk()`` (until ``None``) to the target's listener; return
    the size and sha256 sent once the target has verified them.

    Raises :class:`PeerUnreachable` when no connection opens (nothing was
    sent) and :class:`PeerRefused` when the target ends it with an error.
    """
    tls: ssl.SSLContext | None = None
    if url.startswith("wss://"):
        tls = ssl.create_default_context(cafile=ca_file)
    elif not url.startswith("ws://"):
        raise PeerUnreachable("the target's transfer address is not a ws:// or wss:// URL")
    try:
        ws = await connect(
            url,
            ssl=tls,
            additional_headers={"Authorization": f"Bearer {token}", SERVER_HEADER: server_id},
            open_timeout=CONNECT_TIMEOUT,
            compression=None,
            max_size=2**16,
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        raise PeerUnreachable(f"the target node could not be reached directly ({exc})") from exc
    digest = hashlib.sha256()
    size = 0
    try:
        async with ws:
            while (chunk := await next_chunk()) is not None:
                view = memoryview(chunk)
                for start in range(0, len(view), CHUNK_SIZE):
                    piece = view[start : start + CHUNK_SIZE]  # a view: no copy
                    digest.update(piece)
                    size += len(piece)
                    await ws.send(piece)
            checksum = digest.hexdigest()
            await ws.send(json.dumps({"type": "stream_end", "size": size, "sha256": checksum}))
            await _verdict(ws)
    except websockets.ConnectionClosed as exc:
        raise PeerRefused(_closed_reason(ws)) from exc
    return size, checksum


async def _verdict(ws: ClientConnection) -> None:
    try:
        async with asyncio.timeout(VERDICT_TIMEOUT):
            await ws.wait_closed()
    except TimeoutError as exc:
        raise PeerRefused("the target node did not confirm the archive") from exc
    if ws.close_code != CLOSE_OK:
        raise PeerRefused(_closed_reason(ws))


def _closed_reason(ws: ClientConnection) -> str:
    reason = ws.close_reason or "the connection to the target node was lost"
    return f"the target node ended the transfer: {reason}"
