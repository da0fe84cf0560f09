"""Every file, backup and transfer route, on a real server with its agent connected,
called with junk bodies and query values: a 4xx envelope, never a 500, and
nothing written outside the server's folder.

(``tests/test_bad_input_never_500.py`` calls every route with ids that do not
exist, which stops at the 404; this reaches the services and the agent.)
"""

from __future__ import annotations

import re

import httpx

from hostplane.app import create_app
from hostplane.core.config import Settings
from tests.infra.files.conftest import Files
from tests.support.trees import snapshot

DOCUMENT = create_app(
    Settings(environment="development", database_url="sqlite+aiosqlite:///:memory:")
).openapi()
SERVER_ROUTES = re.compile(r"^/api/servers/\{server_id\}/(files|backups|transfer)")
OPERATIONS = [
    (method.upper(), path)
    for path, operations in DOCUMENT["paths"].items()
    if SERVER_ROUTES.match(path)
    for method in operations
]
JUNK_BODIES: list[object] = [
    None,
    {},
    "not an object",
    {"path": "\x00", "paths": "x", "mode": "99999", "url": 5, "archiveName": [], "name": {}},
    {
        "path": "../../etc/passwd",
        "paths": ["../x", "/../../y"],
        "from": "/../x",
        "to": "/../y",
        "destination": "../../z",
        "archivePath": "/../a.zip",
        "targetPath": "../..",
        "url": "http://127.0.0.1:1/",
        "targetNodeId": "01nosuchnode00000000000000",
        "mode": -1,
        "locked": "maybe",
    },
]
JUNK_QUERIES: list[dict[str, str]] = [
    {},
    {"path": "\x00/../x", "limit": "x", "mode": "weird", "token": "garbage"},
    {"path": "/../../etc/passwd", "mode": "url"},
]


def test_the_routes_are_found() -> None:
    # A rename of the paths would silently empty the loop below.
    assert len(OPERATIONS) >= 20


async def test_junk_on_every_route_of_a_real_server(
    client: httpx.AsyncClient, files: Files
) -> None:
    (files.folder / "keep.txt").write_bytes(b"keep")
    outside = files.agent.data_dir
    before = {p for p in outside.rglob("*") if not p.is_relative_to(files.folder)}
    failures: list[str] = []
    for method, path in OPERATIONS:
        concrete = path.replace("{server_id}", files.server.id)
        concrete = re.sub(r"\{[a-z_]+\}", "01nosuchthing0000000000000", concrete)
        bodies = JUNK_BODIES if method in ("POST", "PUT", "PATCH") else [None]
        for body in bodies:
            for query in JUNK_QUERIES:
                response = await client.request(
                    method, concrete, json=body, params=query, headers=files.headers
                )
                where = f"{method} {concrete} {body!r} {query!r}"
                if response.status_code >= 500:
                    failures.append(f"{where}: {response.status_code} {response.text[:200]}")
                elif response.status_code >= 400:
                    error = response.json()
                    if error.get("success") is not False or not error["error"].get("code"):
                        failures.append(f"{where}: not the envelope: {response.text[:200]}")
                    if str(outside) in response.text:
                        failures.append(f"{where}: a host path reached the client")
    assert failures == []
    after = {p for p in outside.rglob("*") if not p.is_relative_to(files.folder)}
    assert after == before
    assert snapshot(files.folder) == {"keep.txt": b"keep"}
