"""A stream whose handshake is lost fails fast with a clear error, in both
directions, between the panel and a real agent through the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.agent import streams as agent_streams
from hostplane.agent.handlers.files import FileHandlers
from hostplane.core.runtime import Runtime
from hostplane.infra.nodes import rpc
from hostplane.infra.nodes.rpc import AgentFailed, AgentRpc, NodeUnavailable
from hostplane.protocol import FileRead, FileWrite
from tests.support.agents import live_agents
from tests.support.identity import platform_tenant
from tests.support.infra import make_node

SERVER = "srv1"


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_download_whose_first_credit_is_lost_fails_fast(
    app: object, runtime: Runtime, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await platform_tenant(db)
    node, secret = await make_node(db, tenant=tenant)
    await db.commit()
    monkeypatch.setattr(agent_streams, "FIRST_CREDIT_TIMEOUT", 0.5, raising=False)
    grant = AgentRpc._grant

    async def lose_first_grant(self: AgentRpc, node_id: str, stream_id: str, amount: int) -> None:
        if amount == rpc.WINDOW:
            return  # lost on the way: the agent never hears of it
        await grant(self, node_id, stream_id, amount)

    monkeypatch.setattr(AgentRpc, "_grant", lose_first_grant)
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        (agent.server_dir(SERVER)).mkdir(parents=True)
        (agent.server_dir(SERVER) / "a.txt").write_bytes(b"hello")
        calls = AgentRpc(runtime.bus)
        async with asyncio.timeout(5):
            with pytest.raises(AgentFailed) as failed:
                async with calls.download(
                    node.id, FileRead(server_id=SERVER, path="/a.txt", stream_id="")
                ):
                    pass
        assert (failed.value.status, failed.value.code) == (503, "NODE_UNAVAILABLE")
        assert failed.value.agent_code == "STREAM_HANDSHAKE_LOST"


async def test_an_upload_the_agent_never_opens_fails_before_its_long_timeout(
    app: object, runtime: Runtime, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await platform_tenant(db)
    node, secret = await make_node(db, tenant=tenant)
    await db.commit()
    monkeypatch.setattr(rpc, "STALL_TIMEOUT", 0.5)
    stuck = asyncio.Event()

    async def never_opens(self: FileHandlers, message: FileWrite) -> Any:
        stuck.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(FileHandlers, "write", never_opens)
    async with live_agents(app, [(node.id, secret)]):
        calls = AgentRpc(runtime.bus)
        async with asyncio.timeout(5):
            with pytest.raises(NodeUnavailable):
                # An import's answer may take hours; the stream's opening may not.
                await calls.upload(
                    node.id,
                    FileWrite(server_id=SERVER, path="/b.txt", stream_id=""),
                    _one(b"data"),
                    within=3600,
                )
        assert stuck.is_set()
