"""The agent's stream registry: credit or a refusal that arrives before the
handler opened its stream is kept for it, within bounds; a stream whose first
credit never comes fails fast with its own code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hostplane.agent import streams as streams_module
from hostplane.agent.config import AgentSettings
from hostplane.agent.handlers.context import HandlerContext
from hostplane.agent.handlers.files import FileHandlers
from hostplane.agent.peers import PeerListener
from hostplane.agent.streams import StreamAborted, StreamHandshakeLost, StreamHub
from hostplane.core.ids import new_id
from hostplane.protocol import (
    FileRead,
    StreamCredit,
    StreamEnd,
    StreamError,
    WireModel,
    decode_chunk,
)


class _Wire:
    """What the hub sends to the panel, in order."""

    def __init__(self) -> None:
        self.messages: list[WireModel] = []
        self.frames: list[tuple[str, bytes]] = []

    async def send(self, message: WireModel) -> None:
        self.messages.append(message)

    async def send_bytes(self, frame: bytes) -> None:
        self.frames.append(decode_chunk(frame))


def _hub() -> tuple[StreamHub, _Wire]:
    wire = _Wire()
    return StreamHub(wire.send, wire.send_bytes), wire


async def test_credit_granted_before_the_stream_opens_is_not_lost() -> None:
    hub, wire = _hub()
    sid = new_id()
    # The panel's first credit overtakes the handler that opens the stream.
    hub.on_control(StreamCredit(stream_id=sid, bytes=1024))
    async with asyncio.timeout(2):
        async with hub.outgoing(sid) as out:
            await out.send(b"hello")
    assert wire.frames == [(sid, b"hello")]
    assert isinstance(wire.messages[-1], StreamEnd)
    assert wire.messages[-1].size == 5
    assert hub.pending_early == 0


async def test_a_file_read_whose_credit_came_first_streams_at_once(tmp_path: Path) -> None:
    hub, wire = _hub()
    settings = AgentSettings(data_dir=tmp_path)
    context = HandlerContext(
        settings=settings,
        streams=hub,
        send=wire.send,
        server_dir=lambda server_id: tmp_path / server_id,
        is_running=lambda server_id: asyncio.sleep(0, False),
        peers=PeerListener(settings),
    )
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "a.txt").write_bytes(b"12345")
    sid = new_id()
    hub.on_control(StreamCredit(stream_id=sid, bytes=256 * 1024))
    async with asyncio.timeout(3):
        answer = await FileHandlers(context).read(
            FileRead(server_id="srv", path="/a.txt", stream_id=sid)
        )
    assert answer == {"size": 5}
    assert b"".join(data for s, data in wire.frames if s == sid) == b"12345"


async def test_a_refusal_before_the_stream_opens_stops_it_at_once() -> None:
    hub, _wire = _hub()
    sid = new_id()
    hub.on_control(StreamCredit(stream_id=sid, bytes=1024))
    hub.on_control(StreamError(stream_id=sid, message="reader gone"))
    async with asyncio.timeout(2):
        with pytest.raises(StreamAborted, match="reader gone"):
            async with hub.outgoing(sid) as out:
                await out.send(b"x" * 4096)


async def test_an_incoming_stream_the_panel_abandoned_early_fails_at_once() -> None:
    hub, _wire = _hub()
    sid = new_id()
    hub.on_control(StreamError(stream_id=sid, message="the upload was interrupted"))
    async with asyncio.timeout(2):
        with pytest.raises(StreamAborted, match="interrupted"):
            async with hub.incoming(sid) as incoming:
                async for _chunk in incoming.chunks():
                    pass


async def test_a_stream_that_never_gets_credit_fails_fast_with_its_own_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams_module, "FIRST_CREDIT_TIMEOUT", 0.2)
    hub, wire = _hub()
    sid = new_id()
    async with asyncio.timeout(2):
        with pytest.raises(StreamHandshakeLost):
            async with hub.outgoing(sid) as out:
                await out.send(b"data")
    error = wire.messages[-1]
    assert isinstance(error, StreamError)
    assert error.code == "STREAM_HANDSHAKE_LOST"


async def test_early_frames_are_bounded_in_number_and_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams_module, "EARLY_LIMIT", 4)
    hub, _wire = _hub()
    ids = [new_id() for _ in range(6)]
    for sid in ids:
        hub.on_control(StreamCredit(stream_id=sid, bytes=10))
    assert hub.pending_early == 4
    # The oldest were dropped: their streams wait for credit like any other.
    monkeypatch.setattr(streams_module, "FIRST_CREDIT_TIMEOUT", 0.1)
    with pytest.raises(StreamHandshakeLost):
        async with hub.outgoing(ids[0]) as out:
            await out.send(b"x")
    async with hub.outgoing(ids[-1]) as out:
        await out.send(b"x")

    clock = [1000.0]
    monkeypatch.setattr(streams_module, "_clock", lambda: clock[0])
    stale = new_id()
    hub.on_control(StreamCredit(stream_id=stale, bytes=10))
    clock[0] += streams_module.EARLY_TTL + 1
    with pytest.raises(StreamHandshakeLost):
        async with hub.outgoing(stale) as out:
            await out.send(b"x")
