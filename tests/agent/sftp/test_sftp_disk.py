"""SFTP writes against the server's disk allocation, with a real agent and panel."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.agent.sftp.authorizer import CACHE_SECONDS
from hostplane.infra.servers.models import Server
from tests.agent.sftp.conftest import SftpWorld, sftp_client

MB = 2**20


async def allocate(db: AsyncSession, server_id: str, disk_mb: int) -> None:
    await db.execute(update(Server).where(Server.id == server_id).values(allocated_disk_mb=disk_mb))
    await db.commit()


async def test_a_put_past_the_allocation_fails_and_leaves_nothing(
    db: AsyncSession, world: SftpWorld, tmp_path: Path
) -> None:
    folder = world.agent.server_dir(world.server.id)
    await allocate(db, world.server.id, 1)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * MB))
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(300_000))
    token = world.fleet.owner.token

    def session() -> str:
        with sftp_client(world.port, world.server.id, token) as sftp:
            sftp.put(str(small), "/small.bin")
            # put pipelines its writes and may lose the refusal; its check of
            # the size then finds no file (the refused upload was removed).
            with pytest.raises(OSError, match=r"quota|does not exist"):
                sftp.put(str(big), "/big.bin")
            data = big.read_bytes()
            with (
                pytest.raises(OSError, match="disk quota exceeded") as failed,
                sftp.open("/big2.bin", "wb") as remote,
            ):
                for start in range(0, len(data), 32768):
                    remote.write(data[start : start + 32768])
            return str(failed.value)

    message = await asyncio.to_thread(session)
    assert "allocation" in message
    assert sorted(p.name for p in folder.iterdir()) == ["small.bin"]
    assert (folder / "small.bin").read_bytes() == small.read_bytes()


async def test_version_6_clients_see_quota_exceeded(db: AsyncSession, world: SftpWorld) -> None:
    folder = world.agent.server_dir(world.server.id)
    await allocate(db, world.server.id, 1)
    async with (
        asyncssh.connect(
            "127.0.0.1",
            world.port,
            username=world.server.id,
            password=world.fleet.owner.token,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            preferred_auth="password",
        ) as conn,
        conn.start_sftp_client(sftp_version=6) as sftp,
    ):
        async with sftp.open("/new.bin", "wb") as f:
            await f.write(bytes(800_000))
            with pytest.raises(asyncssh.SFTPQuotaExceeded):
                await f.write(bytes(800_000), 800_000)
        # The file the refused upload created is gone with it.
        assert not (folder / "new.bin").exists()

        async with sftp.open("/grow.bin", "wb") as f:
            await f.write(bytes(800_000))
        async with sftp.open("/grow.bin", "r+b") as f:
            # Rewriting what is there does not grow the file: allowed.
            await f.write(b"\x01" * 1000, 0)
            with pytest.raises(asyncssh.SFTPQuotaExceeded):
                await f.write(bytes(800_000), 800_000)
    # A file that was there before is left as it was.
    assert (folder / "grow.bin").stat().st_size == 800_000
    assert (folder / "grow.bin").read_bytes()[:1001] == b"\x01" * 1000 + b"\x00"


async def test_an_unlimited_server_takes_any_put(
    db: AsyncSession, world: SftpWorld, tmp_path: Path
) -> None:
    folder = world.agent.server_dir(world.server.id)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * MB))
    token = world.fleet.owner.token

    def session() -> None:
        with sftp_client(world.port, world.server.id, token) as sftp:
            sftp.put(str(big), "/big.bin")

    await allocate(db, world.server.id, 1)
    with pytest.raises(OSError, match=r"quota|does not exist"):
        await asyncio.to_thread(session)
    # 0 means unlimited; a new login brings the new allocation.
    await allocate(db, world.server.id, 0)
    await asyncio.sleep(CACHE_SECONDS)
    await asyncio.to_thread(session)
    assert (folder / "big.bin").read_bytes() == big.read_bytes()
