"""One-time links, and who may touch a server's files."""

import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted
from hostplane.identity.access import service as access
from hostplane.infra.files.links import LINK_TTL
from tests.infra.files.conftest import Files
from tests.support.identity import logged_in, other_tenant, platform_tenant
from tests.support.infra import in_tenant, make_node, make_server, make_template, set_status


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_download_link_works_once_without_authorization(
    client: httpx.AsyncClient, files: Files
) -> None:
    (files.folder / "save.dat").write_bytes(b"saved game")
    issued = await client.get(
        f"{files.base}/download",
        params={"path": "/save.dat", "mode": "url"},
        headers=files.headers,
    )
    assert issued.status_code == 200, issued.text
    data = issued.json()["data"]
    assert data["url"].startswith(f"http://hostplane.test{files.base}/download?")
    assert parse_qs(urlsplit(data["url"]).query)["path"] == ["/save.dat"]
    assert "expiresAt" in data

    first = await client.get(relative(data["url"]))
    assert first.status_code == 200, first.text
    assert first.content == b"saved game"
    second = await client.get(relative(data["url"]))
    assert second.status_code == 410
    assert second.json()["error"]["code"] == "LINK_USED"

    # The path in the URL is not what counts: the signed one is.
    another = await client.get(
        f"{files.base}/download", params={"path": "/save.dat", "mode": "url"}, headers=files.headers
    )
    token = parse_qs(urlsplit(another.json()["data"]["url"]).query)["token"][0]
    moved = await client.get(
        f"{files.base}/download", params={"path": "/other.dat", "token": token}
    )
    assert moved.content == b"saved game"
    forged = await client.get(
        f"{files.base}/download", params={"path": "/save.dat", "token": token[:-4] + "AAAA"}
    )
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "INVALID_LINK"

    no_file = await client.get(
        f"{files.base}/download", params={"path": "/none", "mode": "url"}, headers=files.headers
    )
    assert no_file.status_code == 404
    anonymous = await client.get(f"{files.base}/download", params={"path": "/save.dat"})
    assert anonymous.status_code == 401


async def test_upload_link_works_once_and_only_for_its_folder(
    client: httpx.AsyncClient, files: Files
) -> None:
    issued = await client.get(
        f"{files.base}/upload", params={"path": "/plugins"}, headers=files.headers
    )
    assert issued.status_code == 200, issued.text
    url = relative(issued.json()["data"]["url"])
    first = await client.post(
        url,
        data={"path": "/elsewhere"},
        files={"file": ("p.jar", b"jar bytes", "application/java-archive")},
    )
    assert first.status_code == 200, first.text
    assert first.json()["data"]["files"] == [{"path": "/plugins/p.jar", "size": 9}]
    assert (files.folder / "plugins" / "p.jar").read_bytes() == b"jar bytes"
    assert not (files.folder / "elsewhere").exists()

    second = await client.post(url, files={"file": ("q.jar", b"again", "application/java-archive")})
    assert second.status_code == 410
    assert not (files.folder / "plugins" / "q.jar").exists()

    # A download link is not an upload link.
    (files.folder / "a.txt").write_text("a")
    download = await client.get(
        f"{files.base}/download", params={"path": "/a.txt", "mode": "url"}, headers=files.headers
    )
    token = parse_qs(urlsplit(download.json()["data"]["url"]).query)["token"][0]
    wrong = await client.post(
        f"{files.base}/upload", params={"token": token}, files={"file": ("x", b"x", "text/plain")}
    )
    assert wrong.status_code == 401


async def test_expired_link_fails(client: httpx.AsyncClient, files: Files) -> None:
    (files.folder / "a.txt").write_text("a")
    issued = await client.get(
        f"{files.base}/download", params={"path": "/a.txt", "mode": "url"}, headers=files.headers
    )
    url = relative(issued.json()["data"]["url"])
    with shifted(LINK_TTL + timedelta(seconds=1)):
        expired = await client.get(url)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "LINK_EXPIRED"


async def test_a_link_stops_when_its_user_loses_access(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    tenant = await platform_tenant(db)
    helper = await logged_in(client, db, tenant=tenant)
    async with in_tenant(db, tenant):
        await access.set_grant(
            db,
            resource_type="server",
            resource_id=files.server.id,
            user_id=helper.user.id,
            permissions=["file.read"],
            granted_by=files.owner.user.id,
        )
    (files.folder / "a.txt").write_text("a")
    issued = await client.get(
        f"{files.base}/download", params={"path": "/a.txt", "mode": "url"}, headers=helper.headers
    )
    assert issued.status_code == 200, issued.text
    # A subuser with file.read only may not write.
    refused = await client.post(
        f"{files.base}/write", json={"path": "/a.txt", "content": "b"}, headers=helper.headers
    )
    assert refused.status_code == 403
    async with in_tenant(db, tenant):
        await access.remove_grant(
            db, resource_type="server", resource_id=files.server.id, user_id=helper.user.id
        )
    revoked = await client.get(relative(issued.json()["data"]["url"]))
    assert revoked.status_code == 404


async def test_other_tenants_strangers_and_suspended_servers(
    client: httpx.AsyncClient, db: AsyncSession, files: Files
) -> None:
    tenant = await platform_tenant(db)
    stranger = await logged_in(client, db, tenant=tenant)
    foreign = await logged_in(client, db, tenant=await other_tenant(db), role="admin")
    for who, status in ((stranger, 404), (foreign, 404)):
        listing = await client.get(files.base, headers=who.headers)
        assert listing.status_code == status, listing.text
        upload = await client.post(
            f"{files.base}/upload",
            params={"path": "/"},
            files={"file": ("x.txt", b"x", "text/plain")},
            headers=who.headers,
        )
        assert upload.status_code == status
        link = await client.get(f"{files.base}/upload", headers=who.headers)
        assert link.status_code == status
    assert list(files.folder.iterdir()) == []

    await set_status(db, files.server, "suspended")
    locked = await client.post(
        f"{files.base}/write", json={"path": "/a.txt", "content": "x"}, headers=files.headers
    )
    assert locked.status_code == 423
    readable = await client.get(files.base, headers=files.headers)
    assert readable.status_code == 200


async def test_a_node_without_its_agent_answers_503_quickly(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await logged_in(client, db, tenant=tenant)
    node, _ = await make_node(db, tenant=tenant, online=False)
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner.user, node=node, template=template)
    started = time.monotonic()
    response = await client.get(f"/api/servers/{server.id}/files", headers=owner.headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NODE_OFFLINE"
    assert time.monotonic() - started < 2
