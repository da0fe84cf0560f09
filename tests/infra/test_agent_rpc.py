"""Calls and streams between the panel and a real agent, through the gateway."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.infra.nodes.rpc import AgentFailed, AgentRpc, NodeUnavailable
from hostplane.protocol import FileList, FileRead, FileWrite
from tests.support.agents import live_agents
from tests.support.identity import platform_tenant
from tests.support.infra import make_node

SERVER = "srv1"


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def test_upload_then_download_through_the_gateway(
    app: object, runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    node, secret = await make_node(db, tenant=tenant)
    await db.commit()
    body = os.urandom(3 * 2**20 + 123)
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        calls = AgentRpc(runtime.bus)
        written = await calls.upload(
            node.id,
            FileWrite(server_id=SERVER, path="/world/region.bin", stream_id=""),
            _chunks(body, 100_000),
        )
        assert written == {"path": "/world/region.bin", "size": len(body)}
        on_disk = agent.server_dir(SERVER) / "world" / "region.bin"
        assert on_disk.read_bytes() == body

        async with calls.download(
            node.id, FileRead(server_id=SERVER, path="/world/region.bin", stream_id="")
        ) as download:
            received = b"".join([chunk async for chunk in download.chunks()])
        assert received == body
        assert download.end is not None
        assert download.end.sha256 == hashlib.sha256(body).hexdigest()
        assert download.result == {"size": len(body)}

        listing = await calls.call(node.id, FileList(server_id=SERVER, path="/world"))
        assert [entry["name"] for entry in listing] == ["region.bin"]


async def test_agent_errors_and_limits_come_back_as_envelope_errors(
    app: object, runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    node, secret = await make_node(db, tenant=tenant)
    await db.commit()
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        calls = AgentRpc(runtime.bus)
        with pytest.raises(AgentFailed) as missing:
            async with calls.download(
                node.id, FileRead(server_id=SERVER, path="/nope", stream_id="")
            ):
                pass
        assert missing.value.status == 404
        with pytest.raises(AgentFailed) as escape:
            await calls.call(node.id, FileList(server_id=SERVER, path="/../.."))
        assert escape.value.status == 400
        with pytest.raises(AgentFailed) as too_large:
            await calls.upload(
                node.id,
                FileWrite(server_id=SERVER, path="/big", stream_id="", max_bytes=1000),
                _chunks(b"x" * 5000, 512),
            )
        assert too_large.value.status == 413
        assert not (agent.server_dir(SERVER) / "big").exists()
        assert [p.name for p in agent.server_dir(SERVER).iterdir()] == []


async def test_a_node_that_goes_away_mid_stream_fails_fast(
    app: object, runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    node, secret = await make_node(db, tenant=tenant)
    await db.commit()
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        calls = AgentRpc(runtime.bus)

        async def endless() -> AsyncIterator[bytes]:
            sent = 0
            while True:
                yield b"y" * 65536
                sent += 1
                if sent == 20:
                    await agent.stop()

        with pytest.raises(NodeUnavailable):
            async with asyncio.timeout(10):
                await calls.upload(
                    node.id, FileWrite(server_id=SERVER, path="/f", stream_id=""), endless()
                )
        with pytest.raises(NodeUnavailable):
            await calls.call(node.id, FileList(server_id=SERVER), within=0.5)
