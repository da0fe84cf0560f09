"""The file manager through the API, with a real agent writing a real folder."""

import asyncio
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.platform.audit.models import AuditLog
from tests.infra.files.conftest import Files


async def actions(db: AsyncSession, server_id: str) -> list[str]:
    await db.commit()
    rows = await db.scalars(
        select(AuditLog.action).where(AuditLog.resource_id == server_id).order_by(AuditLog.seq)
    )
    return list(rows)


def ok_data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


async def test_create_list_read_and_write(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    made = await client.post(
        f"{files.base}/create",
        json={"path": "/configs/server.yml", "content": "motd: hi\n"},
        headers=files.headers,
    )
    assert ok_data(made) == {"message": "File created", "path": "/configs/server.yml", "size": 9}
    folder = await client.post(
        f"{files.base}/create",
        json={"path": "/backups", "isDirectory": True},
        headers=files.headers,
    )
    assert ok_data(folder)["path"] == "/backups"
    assert (files.folder / "configs" / "server.yml").read_text() == "motd: hi\n"
    assert (files.folder / "backups").is_dir()

    again = await client.post(
        f"{files.base}/create", json={"path": "/configs/server.yml"}, headers=files.headers
    )
    assert again.status_code == 409, again.text

    listing = ok_data(await client.get(files.base, params={"path": "/"}, headers=files.headers))
    assert [(e["name"], e["isDirectory"]) for e in listing] == [
        ("backups", True),
        ("configs", True),
    ]
    same = ok_data(await client.get(f"{files.base}/list", headers=files.headers))
    assert same == listing
    inside = ok_data(
        await client.get(files.base, params={"path": "/configs"}, headers=files.headers)
    )
    assert inside[0]["name"] == "server.yml" and inside[0]["size"] == 9
    assert inside[0]["mode"] == "0644" and inside[0]["modified"].endswith("Z")

    content = ok_data(
        await client.get(
            f"{files.base}/content", params={"path": "/configs/server.yml"}, headers=files.headers
        )
    )
    assert content == {"path": "/configs/server.yml", "content": "motd: hi\n", "size": 9}

    saved = await client.post(
        f"{files.base}/write",
        json={"path": "/configs/server.yml", "content": "motd: changed ✓\n"},
        headers=files.headers,
    )
    assert ok_data(saved)["size"] == len("motd: changed ✓\n".encode())
    assert (files.folder / "configs" / "server.yml").read_text() == "motd: changed ✓\n"
    assert await actions(db, files.server.id) == ["file.create", "file.create", "file.write"]


async def test_content_is_limited(
    client: httpx.AsyncClient, runtime: Runtime, files: Files
) -> None:
    (files.folder / "big.log").write_bytes(b"x" * 2048)
    runtime.settings.files.content_max_bytes = 1024
    refused = await client.get(
        f"{files.base}/content", params={"path": "/big.log"}, headers=files.headers
    )
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "TOO_LARGE"
    missing = await client.get(
        f"{files.base}/content", params={"path": "/nope.txt"}, headers=files.headers
    )
    assert missing.status_code == 404 and missing.json()["success"] is False


async def test_upload_then_download_the_same_bytes(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    body = os.urandom(3 * 2**20 + 4321)  # a dozen 256 KiB chunks and a bit
    uploaded = await client.post(
        f"{files.base}/upload",
        data={"path": "/world"},
        files={"file": ("region.bin", body, "application/octet-stream")},
        headers=files.headers,
    )
    assert ok_data(uploaded) == {
        "message": "File uploaded successfully",
        "files": [{"path": "/world/region.bin", "size": len(body)}],
    }
    assert (files.folder / "world" / "region.bin").read_bytes() == body

    async with client.stream(
        "GET",
        f"{files.base}/download",
        params={"path": "/world/region.bin"},
        headers=files.headers,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"].startswith(
            'attachment; filename="region.bin"'
        )
        received = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert received == body
    assert "file.upload" in await actions(db, files.server.id)

    missing = await client.get(
        f"{files.base}/download", params={"path": "/world/none.bin"}, headers=files.headers
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"


async def test_upload_needs_the_folder_first(client: httpx.AsyncClient, files: Files) -> None:
    # httpx sends the data fields first; a query path works whatever the order.
    by_query = await client.post(
        f"{files.base}/upload",
        params={"path": "/q"},
        files={"file": ("a.txt", b"hello", "text/plain")},
        headers=files.headers,
    )
    assert ok_data(by_query)["files"] == [{"path": "/q/a.txt", "size": 5}]
    no_path = await client.post(
        f"{files.base}/upload",
        files={"file": ("a.txt", b"hello", "text/plain")},
        headers=files.headers,
    )
    assert no_path.status_code == 400 and no_path.json()["error"]["details"]["field"] == "path"
    not_multipart = await client.post(
        f"{files.base}/upload", json={"path": "/"}, headers=files.headers
    )
    assert not_multipart.status_code == 400


async def test_upload_over_the_limit_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, db: AsyncSession, files: Files
) -> None:
    runtime.settings.files.upload_max_bytes = 2**20
    refused = await client.post(
        f"{files.base}/upload",
        data={"path": "/"},
        files={"file": ("huge.bin", os.urandom(2**20 + 1), "application/octet-stream")},
        headers=files.headers,
    )
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "TOO_LARGE"

    # Without a Content-Length the panel counts the streamed bytes itself.
    async def chunks() -> Any:
        yield b'--b\r\nContent-Disposition: form-data; name="path"\r\n\r\n/\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
        for _ in range(20):
            yield b"y" * 65536
            await asyncio.sleep(0)
        yield b"\r\n--b--\r\n"

    streamed = await client.post(
        f"{files.base}/upload",
        content=chunks(),
        headers={**files.headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413, streamed.text
    # The agent drops its temporary file when told the upload failed.
    for _ in range(50):
        if not any(files.folder.iterdir()):
            break
        await asyncio.sleep(0.05)
    assert list(files.folder.iterdir()) == []
    assert "file.upload" not in await actions(db, files.server.id)


async def test_rename_copy_chmod_delete(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    (files.folder / "a.txt").write_text("a")
    (files.folder / "dir").mkdir()
    (files.folder / "dir" / "inner.txt").write_text("inner")

    renamed = await client.post(
        f"{files.base}/rename", json={"from": "/a.txt", "to": "/b.txt"}, headers=files.headers
    )
    assert ok_data(renamed)["path"] == "/b.txt"
    assert not (files.folder / "a.txt").exists() and (files.folder / "b.txt").read_text() == "a"
    taken = await client.post(
        f"{files.base}/rename",
        json={"source": "/b.txt", "destination": "/dir"},
        headers=files.headers,
    )
    assert taken.status_code == 409

    copied = await client.post(f"{files.base}/copy", json={"path": "/b.txt"}, headers=files.headers)
    assert ok_data(copied)["path"] == "/b copy.txt"
    tree = await client.post(
        f"{files.base}/copy", json={"path": "/dir", "destination": "/dir2"}, headers=files.headers
    )
    assert ok_data(tree)["path"] == "/dir2"
    assert (files.folder / "dir2" / "inner.txt").read_text() == "inner"

    as_text = await client.post(
        f"{files.base}/chmod", json={"path": "/b.txt", "mode": "0600"}, headers=files.headers
    )
    assert ok_data(as_text)["mode"] == "0600"
    assert stat.S_IMODE((files.folder / "b.txt").stat().st_mode) == 0o600
    as_number = await client.post(
        f"{files.base}/chmod", json={"path": "/dir", "mode": 493}, headers=files.headers
    )
    assert ok_data(as_number)["mode"] == "0755"
    assert stat.S_IMODE((files.folder / "dir").stat().st_mode) == 0o755
    for bad in ("0999", "rwx", 0o1777, "12345"):
        refused = await client.post(
            f"{files.base}/chmod", json={"path": "/b.txt", "mode": bad}, headers=files.headers
        )
        assert refused.status_code == 400, (bad, refused.text)
    assert stat.S_IMODE((files.folder / "b.txt").stat().st_mode) == 0o600

    several = await client.post(
        f"{files.base}/delete",
        json={"paths": ["/b.txt", "/b copy.txt", "/dir"]},
        headers=files.headers,
    )
    assert ok_data(several)["deleted"] == 3
    one = await client.request(
        "DELETE", files.base, params={"path": "/dir2"}, headers=files.headers
    )
    assert ok_data(one) == {"message": "File deleted successfully", "deleted": 1}
    assert list(files.folder.iterdir()) == []
    assert await actions(db, files.server.id) == [
        "file.rename",
        "file.copy",
        "file.copy",
        "file.chmod",
        "file.chmod",
        "file.delete",
        "file.delete",
    ]


async def test_compress_then_decompress(client: httpx.AsyncClient, files: Files) -> None:
    (files.folder / "world").mkdir()
    (files.folder / "world" / "level.dat").write_bytes(b"\x00level" * 1000)
    (files.folder / "plugins").mkdir()
    (files.folder / "plugins" / "p.jar").write_bytes(b"jar")
    (files.folder / "backups").mkdir()

    packed = await client.post(
        f"{files.base}/compress",
        json={"paths": ["/world", "/plugins"], "archiveName": "backup", "destination": "/backups"},
        headers=files.headers,
    )
    assert ok_data(packed)["archivePath"] == "/backups/backup.tar.gz"
    with tarfile.open(files.folder / "backups" / "backup.tar.gz") as archive:
        assert {"world/level.dat", "plugins/p.jar"} <= set(archive.getnames())
    zipped = await client.post(
        f"{files.base}/compress",
        json={"paths": ["/plugins"], "archiveName": "plugins.zip"},
        headers=files.headers,
    )
    assert ok_data(zipped)["archivePath"] == "/plugins.zip"

    unpacked = await client.post(
        f"{files.base}/decompress",
        json={"archivePath": "/backups/backup.tar.gz", "targetPath": "/restored"},
        headers=files.headers,
    )
    data = ok_data(unpacked)
    assert data["targetPath"] == "/restored" and data["files"] >= 2
    restored = files.folder / "restored"
    assert (restored / "world" / "level.dat").read_bytes() == b"\x00level" * 1000
    assert (restored / "plugins" / "p.jar").read_bytes() == b"jar"
    beside = await client.post(
        f"{files.base}/decompress", json={"archivePath": "/plugins.zip"}, headers=files.headers
    )
    assert ok_data(beside)["targetPath"] == "/"

    not_archive = await client.post(
        f"{files.base}/decompress",
        json={"archivePath": "/plugins/p.jar", "targetPath": "/x"},
        headers=files.headers,
    )
    assert not_archive.status_code == 400, not_archive.text


async def test_pull_refuses_local_addresses(client: httpx.AsyncClient, files: Files) -> None:
    refused = await client.post(
        f"{files.base}/pull",
        json={"url": "http://127.0.0.1/plugin.jar", "directory": "/"},
        headers=files.headers,
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "URL_REJECTED"
    not_http = await client.post(
        f"{files.base}/pull", json={"url": "file:///etc/passwd"}, headers=files.headers
    )
    assert not_http.status_code == 400
    assert not_http.json()["error"]["code"] == "VALIDATION_ERROR"
    assert list(files.folder.iterdir()) == []


def _tar_with(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


HOSTILE_PATHS = [
    "../x",
    "/../../etc/passwd",
    "/world/../../../etc/passwd",
    "/a\x00b",
    "/" + "a" * 5000,
    "/" + "b" * 300 + "/c",
    "/escape/passwd",
    "/escape/new/file.txt",
]


@pytest.mark.parametrize("hostile", HOSTILE_PATHS, ids=range(len(HOSTILE_PATHS)))
async def test_hostile_paths_are_refused(
    client: httpx.AsyncClient, files: Files, tmp_path: Path, hostile: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("secret")
    (files.folder / "escape").symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())
    headers = files.headers
    requests = [
        client.get(files.base, params={"path": hostile}, headers=headers),
        client.get(f"{files.base}/content", params={"path": hostile}, headers=headers),
        client.get(f"{files.base}/download", params={"path": hostile}, headers=headers),
        client.post(
            f"{files.base}/create", json={"path": hostile, "content": "x"}, headers=headers
        ),
        client.post(
            f"{files.base}/create",
            json={"path": hostile + "/d", "isDirectory": True},
            headers=headers,
        ),
        client.post(f"{files.base}/write", json={"path": hostile, "content": "x"}, headers=headers),
        client.post(f"{files.base}/delete", json={"paths": [hostile]}, headers=headers),
        client.post(
            f"{files.base}/rename", json={"from": hostile, "to": "/moved"}, headers=headers
        ),
        client.post(
            f"{files.base}/copy", json={"path": hostile, "destination": "/copied"}, headers=headers
        ),
        client.post(f"{files.base}/chmod", json={"path": hostile, "mode": "0777"}, headers=headers),
        client.post(
            f"{files.base}/compress",
            json={"paths": [hostile], "archiveName": "a.tar.gz"},
            headers=headers,
        ),
        client.post(
            f"{files.base}/upload",
            params={"path": hostile},
            files={"file": ("planted.txt", b"x", "text/plain")},
            headers=headers,
        ),
    ]
    for sent in requests:
        response = await sent
        assert response.status_code == 400, (response.request.url, response.text)
        assert response.json()["success"] is False
    assert sorted(p.name for p in outside.iterdir()) == before
    assert (outside / "passwd").read_text() == "secret"
    assert stat.S_IMODE((outside / "passwd").stat().st_mode) != 0o777


async def test_a_link_out_of_the_folder_is_never_followed(
    client: httpx.AsyncClient, files: Files, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (files.folder / "escape").symlink_to(outside)
    headers = files.headers
    for response in [
        await client.get(f"{files.base}/content", params={"path": "/escape"}, headers=headers),
        await client.get(f"{files.base}/download", params={"path": "/escape"}, headers=headers),
        await client.post(
            f"{files.base}/write", json={"path": "/escape", "content": "x"}, headers=headers
        ),
        await client.post(
            f"{files.base}/chmod", json={"path": "/escape", "mode": "0777"}, headers=headers
        ),
    ]:
        assert response.status_code == 400, (response.request.url, response.text)
    assert outside.read_text() == "secret"
    # Deleting the link removes the link, not what it points to.
    deleted = await client.post(f"{files.base}/delete", json={"path": "/escape"}, headers=headers)
    assert ok_data(deleted)["deleted"] == 1
    assert not (files.folder / "escape").is_symlink() and outside.read_text() == "secret"


async def test_hostile_archives_and_upload_names(
    client: httpx.AsyncClient, files: Files, tmp_path: Path
) -> None:
    (files.folder / "evil.tar.gz").write_bytes(_tar_with("../../evil.txt", b"pwned"))
    refused = await client.post(
        f"{files.base}/decompress",
        json={"archivePath": "/evil.tar.gz", "targetPath": "/out"},
        headers=files.headers,
    )
    assert refused.status_code == 400, refused.text
    assert not (files.folder.parent / "evil.txt").exists()
    assert not (files.folder.parent.parent / "evil.txt").exists()
    dotted = await client.post(
        f"{files.base}/upload",
        params={"path": "/"},
        files={"file": ("..", b"x", "text/plain")},
        headers=files.headers,
    )
    assert dotted.status_code == 400
    # A client's full path is reduced to the file name.
    windows = await client.post(
        f"{files.base}/upload",
        params={"path": "/"},
        files={"file": ("C:\\Users\\me\\..\\notes.txt", b"n", "text/plain")},
        headers=files.headers,
    )
    assert ok_data(windows)["files"] == [{"path": "/notes.txt", "size": 1}]
