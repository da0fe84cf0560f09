"""Backups through the API with a real agent: create, list, restore byte for byte,
limits, throttle, locks, and the rules around the server's state."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.worker import Worker
from tests.infra.conftest import Fleet
from tests.support.agents import LiveAgent, live_agents
from tests.support.infra import make_node, make_server, set_status
from tests.support.trees import snapshot, write_tree


@dataclass
class Site:
    fleet: Fleet
    agent: LiveAgent
    server: Server

    @property
    def server_id(self) -> str:
        return self.server.id

    @property
    def files(self) -> Path:
        return self.agent.server_dir(self.server_id)


@pytest.fixture
async def site(app: object, db: AsyncSession, fleet: Fleet) -> AsyncIterator[Site]:
    node, secret = await make_node(db, tenant=fleet.tenant, name="backup-node")
    server = await make_server(
        db, tenant=fleet.tenant, owner=fleet.owner.user, node=node, template=fleet.template
    )
    await db.commit()
    async with live_agents(app, [(node.id, secret)]) as [agent]:
        yield Site(fleet, agent, server)


async def run_jobs(runtime: Runtime) -> None:
    await Worker(runtime).run_until_idle()


async def test_backup_modify_restore_gives_the_files_back_byte_for_byte(
    client: httpx.AsyncClient, runtime: Runtime, site: Site
) -> None:
    owner = site.fleet.owner.headers
    url = f"/api/servers/{site.server_id}/backups"
    write_tree(site.files)
    before = snapshot(site.files)

    created = await client.post(url, json={"name": "before-update"}, headers=owner)
    assert created.status_code == 200, created.text
    data = created.json()["data"]
    assert data["message"] == "Backup creation started" and data["status"] == "pending"
    backup_id = data["backupId"]
    await run_jobs(runtime)
    job = (await client.get(f"/api/jobs/{data['jobId']}", headers=site.fleet.admin.headers)).json()
    assert job["data"]["status"] == "succeeded", job
    # The node's progress reports became the job's (for /api/jobs and `hostplane jobs watch`).
    assert job["data"]["progressMessage"].startswith("backup: "), job

    listed = (await client.get(url, headers=owner)).json()["data"]
    assert [b["id"] for b in listed] == [backup_id]
    backup = listed[0]
    assert backup["status"] == "completed", backup
    assert backup["name"] == "before-update" and backup["sizeBytes"] > 0
    archive = site.agent.data_dir / "backups" / site.server_id / f"{backup_id}.tar.zst"
    assert backup["checksum"] == "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()

    (site.files / "server.properties").write_bytes(b"motd=changed\n")
    (site.files / "world" / "region" / "r.0.0.mca").unlink()
    (site.files / "new-file.txt").write_text("created after the backup")

    restored = await client.post(f"{url}/{backup_id}/restore", headers=owner)
    assert restored.status_code == 200, restored.text
    assert restored.json()["data"]["message"] == "Backup restoration started"
    await run_jobs(runtime)
    assert snapshot(site.files) == before


async def test_restore_needs_a_stopped_server_and_a_completed_backup(
    client: httpx.AsyncClient, runtime: Runtime, db: AsyncSession, site: Site
) -> None:
    owner = site.fleet.owner.headers
    url = f"/api/servers/{site.server_id}/backups"
    backup_id = (await client.post(url, headers=owner)).json()["data"]["backupId"]
    early = await client.post(f"{url}/{backup_id}/restore", headers=owner)
    assert early.status_code == 409
    await run_jobs(runtime)
    await set_status(db, site.server, "running")
    running = await client.post(f"{url}/{backup_id}/restore", headers=owner)
    assert running.status_code == 409
    assert "Stop the server" in running.json()["error"]["message"]


async def test_throttle_limit_eviction_and_locks(
    client: httpx.AsyncClient, runtime: Runtime, site: Site
) -> None:
    runtime.settings.backups.throttle_count = 2
    runtime.settings.backups.limit_per_server = 2
    owner = site.fleet.owner.headers
    url = f"/api/servers/{site.server_id}/backups"
    first = (await client.post(url, json={"locked": True}, headers=owner)).json()["data"]
    second = (await client.post(url, headers=owner)).json()["data"]
    throttled = await client.post(url, headers=owner)
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "RATE_LIMITED"
    assert int(throttled.headers["Retry-After"]) > 0
    await run_jobs(runtime)

    runtime.settings.backups.throttle_seconds = 0
    # Full: the oldest unlocked backup (the second; the first is locked) is evicted.
    third = (await client.post(url, headers=owner)).json()["data"]
    ids = [b["id"] for b in (await client.get(url, headers=owner)).json()["data"]]
    assert ids == [third["backupId"], first["backupId"]]
    await run_jobs(runtime)
    store = site.agent.data_dir / "backups" / site.server_id
    assert not (store / f"{second['backupId']}.tar.zst").exists()

    locked = await client.delete(f"{url}/{first['backupId']}", headers=owner)
    assert locked.status_code == 409
    unlocked = await client.post(
        f"{url}/{first['backupId']}/lock", json={"locked": False}, headers=owner
    )
    assert unlocked.json()["data"]["locked"] is False
    deleted = await client.delete(f"{url}/{first['backupId']}", headers=owner)
    assert deleted.status_code == 200
    await run_jobs(runtime)
    assert not (store / f"{first['backupId']}.tar.zst").exists()


async def test_everyone_else_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, site: Site
) -> None:
    url = f"/api/servers/{site.server_id}/backups"
    other = site.fleet.other.headers
    assert (await client.get(url, headers=other)).status_code == 404
    assert (await client.post(url, headers=other)).status_code == 404
    missing = await client.post(f"{url}/nope/restore", headers=site.fleet.owner.headers)
    assert missing.status_code == 404
    bad = await client.post(url, json={"name": ""}, headers=site.fleet.owner.headers)
    assert bad.status_code == 400


async def test_a_backup_downloads_once_through_its_link(
    client: httpx.AsyncClient, runtime: Runtime, site: Site
) -> None:
    owner = site.fleet.owner.headers
    url = f"/api/servers/{site.server_id}/backups"
    write_tree(site.files)
    backup_id = (await client.post(url, json={"name": "nightly"}, headers=owner)).json()["data"][
        "backupId"
    ]
    not_yet = await client.get(f"{url}/{backup_id}/download", headers=owner)
    assert not_yet.status_code == 409
    await run_jobs(runtime)

    link = await client.get(f"{url}/{backup_id}/download", headers=owner)
    assert link.status_code == 200, link.text
    target = link.json()["data"]["url"]
    assert "token=" in target and link.json()["data"]["expiresAt"]
    first = await client.get(target)  # no Authorization: the link is the credential
    assert first.status_code == 200, first.text
    archive = site.agent.data_dir / "backups" / site.server_id / f"{backup_id}.tar.zst"
    assert first.content == archive.read_bytes()
    assert first.headers["content-disposition"] == 'attachment; filename="nightly.tar.zst"'
    again = await client.get(target)
    assert again.status_code == 410
    assert again.json()["error"]["code"] == "LINK_USED"
    forged = await client.get(f"{url}/{backup_id}/download", params={"token": "x" * 40})
    assert forged.status_code == 401
    assert (await client.get(f"{url}/{backup_id}/download")).status_code == 401
    stranger = await client.get(f"{url}/{backup_id}/download", headers=site.fleet.other.headers)
    assert stranger.status_code == 404


async def test_deleting_the_server_removes_its_files_and_backups_from_the_node(
    client: httpx.AsyncClient, runtime: Runtime, site: Site
) -> None:
    owner = site.fleet.owner.headers
    write_tree(site.files)
    created = await client.post(f"/api/servers/{site.server_id}/backups", headers=owner)
    assert created.status_code == 200, created.text
    await run_jobs(runtime)
    store = site.agent.data_dir / "backups" / site.server_id
    assert any(store.iterdir())

    deleted = await client.delete(
        f"/api/servers/{site.server_id}", headers=site.fleet.admin.headers
    )
    assert deleted.status_code == 200, deleted.text
    for _ in range(100):
        if not site.files.exists() and not store.exists():
            break
        await asyncio.sleep(0.05)
    assert not site.files.exists() and not store.exists()
