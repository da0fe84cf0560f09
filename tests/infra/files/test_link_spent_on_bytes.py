"""A one-time download link is spent when its bytes start flowing: a failed
download leaves it usable, a successful one uses it up, and of two concurrent
uses exactly one gets the file."""

import asyncio
import os
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.infra.files.models import FileLinkUse
from tests.infra.files.conftest import Files


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def _link(client: httpx.AsyncClient, files: Files, path: str) -> str:
    issued = await client.get(
        f"{files.base}/download", params={"path": path, "mode": "url"}, headers=files.headers
    )
    assert issued.status_code == 200, issued.text
    return relative(issued.json()["data"]["url"])


async def test_a_download_that_failed_leaves_the_link_usable(
    client: httpx.AsyncClient, files: Files
) -> None:
    saved = files.folder / "save.dat"
    saved.write_bytes(b"saved game")
    url = await _link(client, files, "/save.dat")
    # The file is away for a moment (being replaced): the node refuses.
    saved.rename(files.folder / "save.dat.tmp")
    failed = await client.get(url)
    assert failed.status_code == 404, failed.text
    (files.folder / "save.dat.tmp").rename(saved)

    retried = await client.get(url)
    assert retried.status_code == 200, retried.text
    assert retried.content == b"saved game"
    spent = await client.get(url)
    assert spent.status_code == 410
    assert spent.json()["error"]["code"] == "LINK_USED"


async def test_a_download_while_the_agent_is_away_leaves_the_link_usable(
    client: httpx.AsyncClient, files: Files, db: AsyncSession
) -> None:
    (files.folder / "world.txt").write_bytes(b"hello")
    url = await _link(client, files, "/world.txt")
    await files.agent.stop()
    away = await client.get(url)
    assert away.status_code == 503, away.text
    # Offline as soon as the gateway saw the socket close, else unanswered.
    assert away.json()["error"]["code"] in ("NODE_OFFLINE", "NODE_UNAVAILABLE")
    # Nothing was spent: the link still works once the node is back (the
    # end-to-end tests restart a real agent to show it).
    used = await db.scalar(select(func.count()).select_from(FileLinkUse))
    assert used == 0


async def test_two_concurrent_uses_of_one_link_give_the_file_once(
    client: httpx.AsyncClient, files: Files
) -> None:
    body = bytes(range(256)) * 64
    (files.folder / "data.bin").write_bytes(body)
    for _ in range(3):
        url = await _link(client, files, "/data.bin")
        answers = await asyncio.gather(client.get(url), client.get(url))
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200, 410], [a.text[:200] for a in answers]
        winner = next(answer for answer in answers if answer.status_code == 200)
        assert winner.content == body
        loser = next(answer for answer in answers if answer.status_code == 410)
        assert loser.json()["error"]["code"] == "LINK_USED"


async def test_the_losing_use_of_a_link_stops_its_stream_on_the_node(
    client: httpx.AsyncClient, files: Files
) -> None:
    # Larger than the first credit, so an abandoned stream would sit waiting.
    body = os.urandom(6 * 2**20)
    (files.folder / "big.bin").write_bytes(body)
    url = await _link(client, files, "/big.bin")
    answers = await asyncio.gather(client.get(url), client.get(url))
    assert sorted(answer.status_code for answer in answers) == [200, 410]
    hub = files.agent.connection.streams
    for _ in range(50):
        if hub.open_streams == 0:
            break
        await asyncio.sleep(0.1)
    assert hub.open_streams == 0, "the loser's stream still waits on the node"
