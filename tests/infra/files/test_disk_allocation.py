"""A server's disk allocation, enforced by a real agent on every write of the file manager."""

from __future__ import annotations

import asyncio
import functools
import io
import os
import tarfile
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.agent.files import pull
from hostplane.agent.handlers import files as file_handlers
from hostplane.infra.servers.models import Server
from tests.infra.files.conftest import Files

MB = 2**20


async def allocate(db: AsyncSession, files: Files, disk_mb: int) -> None:
    await db.execute(
        update(Server).where(Server.id == files.server.id).values(allocated_disk_mb=disk_mb)
    )
    await db.commit()


def refused(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "DISK_LIMIT_EXCEEDED", error
    assert "allocation" in error["message"]


def names(files: Files) -> list[str]:
    """Everything in the server's folder, temporary and staging entries included."""
    return sorted(
        os.path.relpath(os.path.join(top, name), files.folder)
        for top, dirs, found in os.walk(files.folder)
        for name in (*dirs, *found)
    )


async def upload(client: httpx.AsyncClient, files: Files, name: str, body: bytes) -> Any:
    return await client.post(
        f"{files.base}/upload",
        data={"path": "/"},
        files={"file": (name, body, "application/octet-stream")},
        headers=files.headers,
    )


async def test_an_upload_past_the_allocation_is_refused_and_leaves_nothing(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    await allocate(db, files, 1)
    refused(await upload(client, files, "big.bin", os.urandom(2 * MB)))
    for _ in range(50):
        if not names(files):
            break
        await asyncio.sleep(0.05)
    assert names(files) == []

    # What fits is written; the next file that would pass the limit is not.
    fits = await upload(client, files, "small.bin", os.urandom(600_000))
    assert fits.status_code == 200, fits.text
    refused(await upload(client, files, "second.bin", os.urandom(600_000)))
    assert names(files) == ["small.bin"]


async def test_write_and_copy_past_the_allocation_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    await allocate(db, files, 1)
    written = await client.post(
        f"{files.base}/write",
        json={"path": "/big.txt", "content": "x" * (2 * MB)},
        headers=files.headers,
    )
    refused(written)
    assert names(files) == []

    placed = await client.post(
        f"{files.base}/upload",
        data={"path": "/world"},
        files={"file": ("region.bin", os.urandom(600_000), "application/octet-stream")},
        headers=files.headers,
    )
    assert placed.status_code == 200, placed.text
    # Rewriting a file in place only counts what it grows by.
    rewritten = await client.post(
        f"{files.base}/write",
        json={"path": "/world/region.bin", "content": "y" * 550_000},
        headers=files.headers,
    )
    assert rewritten.status_code == 200, rewritten.text
    copied = await client.post(
        f"{files.base}/copy", json={"path": "/world/region.bin"}, headers=files.headers
    )
    refused(copied)
    folder_copy = await client.post(
        f"{files.base}/copy",
        json={"path": "/world", "destination": "/world2"},
        headers=files.headers,
    )
    refused(folder_copy)
    assert names(files) == ["world", "world/region.bin"]


def _zip_bomb(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/zeros.bin", bytes(size))
        archive.writestr("b/more.bin", bytes(size))
    return buffer.getvalue()


def _tar_bomb(size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        archive.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
async def test_a_decompress_that_expands_past_the_allocation_leaves_nothing(
    client: httpx.AsyncClient, db: AsyncSession, files: Files, kind: str
) -> None:
    await allocate(db, files, 1)
    bomb = _zip_bomb(3 * MB) if kind == "zip" else _tar_bomb(4 * MB)
    assert len(bomb) < 100_000
    (files.folder / f"bomb.{kind}").write_bytes(bomb)
    decompressed = await client.post(
        f"{files.base}/decompress",
        json={"archivePath": f"/bomb.{kind}", "targetPath": "/out"},
        headers=files.headers,
    )
    refused(decompressed)
    # No staging folder, no half-extracted file.
    assert names(files) == [f"bomb.{kind}"]

    # A small archive still fits.
    (files.folder / "small.tar.gz").write_bytes(_tar_bomb(100_000))
    fits = await client.post(
        f"{files.base}/decompress",
        json={"archivePath": "/small.tar.gz", "targetPath": "/out"},
        headers=files.headers,
    )
    assert fits.status_code == 200, fits.text
    assert (files.folder / "out" / "zeros.bin").stat().st_size == 100_000


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ")[1]
    body = bytes(3 * MB)
    if path == b"/sized.bin":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    else:
        # No length announced: only counting the bytes can stop it.
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    for start in range(0, len(body), 64 * 1024):
        writer.write(body[start : start + 64 * 1024])
        try:
            await writer.drain()
        except ConnectionError:
            break
    writer.close()


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_a_pull_larger_than_the_budget_stops_and_leaves_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    files: Files,
    http_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The agent refuses loopback addresses; this test's server is one.
    monkeypatch.setattr(
        file_handlers, "pull_from_url", functools.partial(pull, allow_address=lambda _: True)
    )
    await allocate(db, files, 1)
    for path in ("/sized.bin", "/unsized.bin"):
        pulled = await client.post(
            f"{files.base}/pull",
            json={"url": f"http://127.0.0.1:{http_port}{path}", "directory": "/"},
            headers=files.headers,
        )
        refused(pulled)
        assert names(files) == []

    await allocate(db, files, 10)
    fits = await client.post(
        f"{files.base}/pull",
        json={"url": f"http://127.0.0.1:{http_port}/unsized.bin", "directory": "/"},
        headers=files.headers,
    )
    assert fits.status_code == 200, fits.text
    assert (files.folder / "unsized.bin").stat().st_size == 3 * MB


async def test_a_server_without_a_limit_is_not_limited(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    body = os.urandom(3 * MB)
    await allocate(db, files, 1)
    refused(await upload(client, files, "big.bin", body))
    # 0 means unlimited (Pterodactyl's convention for servers brought over from it).
    await allocate(db, files, 0)
    uploaded = await upload(client, files, "big.bin", body)
    assert uploaded.status_code == 200, uploaded.text
    copied = await client.post(
        f"{files.base}/copy", json={"path": "/big.bin"}, headers=files.headers
    )
    assert copied.status_code == 200, copied.text
    assert (files.folder / "big copy.bin").read_bytes() == body
