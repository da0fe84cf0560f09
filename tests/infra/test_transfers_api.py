"""Transfers between two real agents with separate data folders.

Each copy test runs on both routes: ``direct`` (the target runs a peer
listener and the source pushes to it) and ``relayed`` (no listener: the panel
carries the archive). ``unreachable`` advertises a listener address nobody
answers on, so the panel must fall back to relaying.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.agent.backups.store import ArchiveRejected
from hostplane.agent.backups.stream import ArchiveReceiver
from hostplane.core.clock import shifted
from hostplane.core.runtime import Runtime
from hostplane.infra.servers.models import Server, ServerAllocation
from hostplane.infra.transfers.models import ServerTransfer
from hostplane.platform.jobs import repository
from hostplane.platform.jobs.models import Job
from hostplane.platform.jobs.worker import Worker
from tests.infra.conftest import Fleet
from tests.support.agents import LiveAgent, live_agents
from tests.support.infra import make_node, make_server, make_template
from tests.support.trees import snapshot, write_tree


@dataclass
class Pair:
    fleet: Fleet
    source: LiveAgent
    target: LiveAgent
    source_node_id: str
    target_node_id: str
    server_id: str
    route: str


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listener_settings(route: str) -> dict[str, Any]:
    if route == "direct":
        return {"transfer_listen": "127.0.0.1:0"}
    if route == "unreachable":
        return {
            "transfer_listen": "127.0.0.1:0",
            "transfer_url": f"ws://127.0.0.1:{closed_port()}/transfers",
        }
    return {}


@pytest.fixture(params=["direct", "relayed"])
def route(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def pair(app: object, db: AsyncSession, fleet: Fleet, route: str) -> AsyncIterator[Pair]:
    source_node, source_secret = await make_node(
        db, tenant=fleet.tenant, name="source", port_range=(31000, 31009)
    )
    target_node, target_secret = await make_node(
        db, tenant=fleet.tenant, name="target", port_range=(32000, 32009)
    )
    template = await make_template(
        db, tenant=fleet.tenant, name="Sleeper", start_command="sleep 60"
    )
    server = await make_server(
        db,
        tenant=fleet.tenant,
        owner=fleet.owner.user,
        node=source_node,
        template=template,
        primary_port=31005,
    )
    await db.commit()
    ids = (source_node.id, target_node.id, server.id)
    nodes = [(source_node.id, source_secret), (target_node.id, target_secret)]
    settings_of = {target_node.id: listener_settings(route)}
    async with live_agents(app, nodes, settings_of=settings_of) as [source, target]:
        yield Pair(fleet, source, target, *ids, route=route)


async def server_row(db: AsyncSession, server_id: str) -> Server:
    await db.commit()  # ends the read snapshot, so the next read sees other sessions' writes
    db.expire_all()
    server = await db.get(Server, server_id)
    assert server is not None
    return server


@pytest.mark.parametrize("route", ["direct", "relayed", "unreachable"], indirect=True)
async def test_a_transfer_copies_the_files_and_the_server_starts_on_the_target(
    client: httpx.AsyncClient, runtime: Runtime, db: AsyncSession, pair: Pair
) -> None:
    sid = pair.server_id
    write_tree(pair.source.server_dir(sid), big=2_000_000)
    before = snapshot(pair.source.server_dir(sid))
    admin = pair.fleet.admin.headers

    started = await client.post(
        f"/api/servers/{sid}/transfer", json={"targetNodeId": pair.target_node_id}, headers=admin
    )
    assert started.status_code == 200, started.text
    data = started.json()["data"]
    assert data["server"]["previousNode"] == "source" and data["server"]["targetNode"] == "target"
    assert data["transfer"]["status"] == "pending"
    assert (await server_row(db, sid)).status == "transferring"
    # A second transfer, or a start, is refused while this one runs.
    again = await client.post(
        f"/api/servers/{sid}/transfer", json={"targetNodeId": pair.target_node_id}, headers=admin
    )
    assert again.status_code == 409

    async with runtime.bus.subscribe(f"server.{sid}.progress") as progress:
        await Worker(runtime).run_until_idle()
        stages = []
        while not progress._queue.empty():
            report = (await progress.get()).data
            if "stage" in report:  # the panel's stages; the node also reports its bytes
                stages.append(report["stage"])
    assert stages[0] == "copying" and stages[-1] == "completed"
    job = (await client.get(f"/api/jobs/{data['jobId']}", headers=admin)).json()["data"]
    assert job["status"] == "succeeded" and job["progressMessage"].startswith("transfer: ")

    server = await server_row(db, sid)
    assert (server.node_id, server.status) == (pair.target_node_id, "stopped")
    await db.commit()
    allocations = (
        await db.scalars(select(ServerAllocation).where(ServerAllocation.server_id == sid))
    ).all()
    assert {a.node_id for a in allocations} == {pair.target_node_id}
    assert all(32000 <= a.host_port <= 32009 for a in allocations)
    assert snapshot(pair.target.server_dir(sid)) == before
    assert not pair.source.server_dir(sid).exists()  # cleaned up after the move
    history = (await client.get(f"/api/servers/{sid}/transfers", headers=admin)).json()["data"]
    assert history[0]["status"] == "completed" and history[0]["checksum"].startswith("sha256:")
    assert history[0]["route"] == ("direct" if pair.route == "direct" else "relayed")

    start = await client.post(f"/api/servers/{sid}/start", headers=admin)
    assert start.status_code == 200, start.text
    for _ in range(100):
        if (await server_row(db, sid)).status == "running":
            break
        await asyncio.sleep(0.1)
    final = await server_row(db, sid)
    assert final.status == "running", (
        final.last_exit_code,
        [p.read_text(errors="replace") for p in (pair.target.data_dir / "run").rglob("*.json")],
        [p.read_bytes()[-500:] for p in (pair.target.data_dir / "run").rglob("console.log")],
    )
    assert (await pair.target.runtime.status(sid)).running
    await pair.target.runtime.kill(sid)


async def test_a_target_that_dies_mid_way_leaves_the_server_on_the_source(
    client: httpx.AsyncClient,
    runtime: Runtime,
    db: AsyncSession,
    pair: Pair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = pair.server_id
    write_tree(pair.source.server_dir(sid), big=8_000_000)
    before = snapshot(pair.source.server_dir(sid))
    admin = pair.fleet.admin.headers

    # The target takes its first chunk of the archive, then holds until the
    # test has hung it up: it dies mid-way, whichever route the bytes take.
    receiving, release = threading.Event(), threading.Event()
    write = ArchiveReceiver.write

    def write_then_hold(self: ArchiveReceiver, chunk: Any) -> None:
        write(self, chunk)
        receiving.set()
        release.wait(30)

    monkeypatch.setattr(ArchiveReceiver, "write", write_then_hold)
    started = await client.post(
        f"/api/servers/{sid}/transfer", json={"targetNodeId": pair.target_node_id}, headers=admin
    )
    assert started.status_code == 200, started.text

    async def kill_target_when_receiving() -> None:
        await asyncio.to_thread(receiving.wait, 30)
        await pair.target.stop()
        release.set()

    killer = asyncio.create_task(kill_target_when_receiving())
    async with asyncio.timeout(90):
        await Worker(runtime).run_until_idle()
    await killer
    assert receiving.is_set()

    server = await server_row(db, sid)
    assert (server.node_id, server.status) == (pair.source_node_id, "stopped")
    history = (await client.get(f"/api/servers/{sid}/transfers", headers=admin)).json()["data"]
    assert history[0]["status"] == "failed" and history[0]["error"]
    assert snapshot(pair.source.server_dir(sid)) == before
    # Startable on the source.
    start = await client.post(f"/api/servers/{sid}/start", headers=admin)
    assert start.status_code == 200, start.text
    for _ in range(100):
        if (await server_row(db, sid)).status == "running":
            break
        await asyncio.sleep(0.1)
    assert (await server_row(db, sid)).status == "running"
    await pair.source.runtime.kill(sid)


@pytest.mark.parametrize("route", ["relayed"], indirect=True)
async def test_transfer_rules(client: httpx.AsyncClient, db: AsyncSession, pair: Pair) -> None:
    sid = pair.server_id
    url = f"/api/servers/{sid}/transfer"
    owner = pair.fleet.owner.headers
    admin = pair.fleet.admin.headers
    # Moving servers is an operator's permission.
    refused = await client.post(url, json={"targetNodeId": pair.target_node_id}, headers=owner)
    assert refused.status_code == 403
    same = await client.post(url, json={"targetNodeId": pair.source_node_id}, headers=admin)
    assert same.status_code == 400
    unknown = await client.post(url, json={"targetNodeId": "nope"}, headers=admin)
    assert unknown.status_code == 404
    offline, _ = await make_node(db, tenant=pair.fleet.tenant, name="offline", online=False)
    gone = await client.post(url, json={"targetNodeId": offline.id}, headers=admin)
    assert gone.status_code == 503
    small, _ = await make_node(db, tenant=pair.fleet.tenant, name="small", max_memory_mb=10)
    full = await client.post(url, json={"targetNodeId": small.id}, headers=admin)
    assert full.status_code == 400
    server = await server_row(db, sid)
    server.status = "running"
    await db.commit()
    running = await client.post(url, json={"targetNodeId": pair.target_node_id}, headers=admin)
    assert running.status_code == 409


async def _job(db: AsyncSession, job_id: str) -> Job:
    await db.commit()
    job = await db.get(Job, job_id, populate_existing=True)
    assert job is not None
    return job


async def _stays_on_source(client: httpx.AsyncClient, db: AsyncSession, pair: Pair) -> None:
    server = await server_row(db, pair.server_id)
    assert (server.node_id, server.status) == (pair.source_node_id, "stopped")
    allocations = (
        await db.scalars(
            select(ServerAllocation).where(ServerAllocation.server_id == pair.server_id)
        )
    ).all()
    assert allocations and all(a.node_id == pair.source_node_id for a in allocations)
    history = await client.get(
        f"/api/servers/{pair.server_id}/transfers", headers=pair.fleet.admin.headers
    )
    assert history.json()["data"][0]["status"] == "failed"


@pytest.mark.parametrize("route", ["relayed"], indirect=True)
async def test_a_refused_archive_fails_the_job_at_once_and_never_shows_succeeded(
    client: httpx.AsyncClient,
    runtime: Runtime,
    db: AsyncSession,
    pair: Pair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sid = pair.server_id
    write_tree(pair.source.server_dir(sid))

    def refuse(self: ArchiveReceiver, chunk: Any) -> None:
        raise ArchiveRejected("the archive tries to write outside its folder")

    monkeypatch.setattr(ArchiveReceiver, "write", refuse)
    started = await client.post(
        f"/api/servers/{sid}/transfer",
        json={"targetNodeId": pair.target_node_id},
        headers=pair.fleet.admin.headers,
    )
    assert started.status_code == 200, started.text
    async with asyncio.timeout(60):
        await Worker(runtime).run_until_idle()
    job = await _job(db, started.json()["data"]["jobId"])
    assert (job.status, job.attempts, job.error_code) == ("failed", 1, "ARCHIVE_REJECTED")
    await _stays_on_source(client, db, pair)


@pytest.mark.parametrize("route", ["relayed"], indirect=True)
async def test_a_transfer_whose_worker_died_is_rolled_back_when_its_lease_expires(
    client: httpx.AsyncClient, runtime: Runtime, db: AsyncSession, pair: Pair
) -> None:
    sid = pair.server_id
    started = await client.post(
        f"/api/servers/{sid}/transfer",
        json={"targetNodeId": pair.target_node_id},
        headers=pair.fleet.admin.headers,
    )
    assert started.status_code == 200, started.text
    # A worker takes the job, starts copying, and is killed.
    async with runtime.unit_of_work() as session:
        taken = await repository.claim(session, worker_id="killed", limit=1, lease_seconds=5)
        assert [job.type for job in taken] == ["transfers.run"]
        transfer = await session.get(ServerTransfer, started.json()["data"]["transfer"]["id"])
        assert transfer is not None
        transfer.status = "copying"
    assert (await server_row(db, sid)).status == "transferring"

    with shifted(timedelta(seconds=6)):
        async with asyncio.timeout(60):
            assert await Worker(runtime).run_until_idle() == 0, "not run again: rolled back"
    job = await _job(db, started.json()["data"]["jobId"])
    assert (job.status, job.error_code) == ("failed", "LEASE_EXPIRED")
    await _stays_on_source(client, db, pair)
    history = await client.get(f"/api/servers/{sid}/transfers", headers=pair.fleet.admin.headers)
    assert "stopped" in history.json()["data"][0]["error"]


@pytest.mark.parametrize("route", ["relayed"], indirect=True)
async def test_a_transfer_to_a_node_whose_agent_left_is_refused_at_once(
    client: httpx.AsyncClient, db: AsyncSession, pair: Pair
) -> None:
    await pair.target.stop()
    asked = time.monotonic()
    refused = await client.post(
        f"/api/servers/{pair.server_id}/transfer",
        json={"targetNodeId": pair.target_node_id},
        headers=pair.fleet.admin.headers,
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "NODE_OFFLINE"
    # No agent is asked (a loaded test machine still answers well within this).
    assert time.monotonic() - asked < 10
    server = await server_row(db, pair.server_id)
    assert (server.node_id, server.status) == (pair.source_node_id, "stopped")
