"""Every /api route, called with junk by an operator, answers in the envelope and never 500."""

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import create_app
from hostplane.core.config import Settings
from tests.support.identity import logged_in

DOCUMENT = create_app(
    Settings(environment="development", database_url="sqlite+aiosqlite:///:memory:")
).openapi()
OPERATIONS = [
    (method.upper(), path)
    for path, operations in DOCUMENT["paths"].items()
    if path.startswith("/api/")
    for method in operations
]
JUNK_BODIES = [None, {}, {"name": 5, "email": [], "permissions": "x", "port": -1}, "not an object"]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
async def test_junk_gets_a_4xx_envelope(
    client: httpx.AsyncClient, db: AsyncSession, method: str, path: str
) -> None:
    owner = await logged_in(client, db, role="owner")
    concrete = re.sub(r"\{[a-z_]+\}", "01nosuchthing0000000000000", path)
    for body in JUNK_BODIES if method in ("POST", "PUT", "PATCH") else [None]:
        response = await client.request(
            method,
            concrete,
            json=body,
            headers=owner.headers,
            params={"page": "x", "limit": "0"} if method == "GET" else None,
        )
        assert response.status_code < 500, f"{method} {concrete} {body!r}: {response.text[:300]}"
        if response.status_code >= 400:
            assert response.json()["success"] is False
            assert response.json()["error"]["code"]


QUERY_JUNK = [
    "100000000000000000000",
    "1e30",
    "NaN",
    "-1",
    "-100000000000000000000",
    "x" * 5000,
    "0001-01-01T00:00:00+05:00",
]
LISTS = [
    (path, [p["name"] for p in operations["get"].get("parameters", []) if p["in"] == "query"])
    for path, operations in DOCUMENT["paths"].items()
    if path.startswith("/api/") and "{" not in path and "get" in operations
]
LISTS = [(path, names) for path, names in LISTS if names]


@pytest.mark.parametrize(("path", "names"), LISTS, ids=[path for path, _ in LISTS])
async def test_out_of_range_query_values_get_a_4xx_envelope(
    client: httpx.AsyncClient, db: AsyncSession, path: str, names: list[str]
) -> None:
    owner = await logged_in(client, db, role="owner")
    for name in [*names, "pageSize"] if "limit" in names else names:
        for value in QUERY_JUNK:
            response = await client.get(path, params={name: value}, headers=owner.headers)
            assert response.status_code < 500, f"{path}?{name}={value[:30]}: {response.text[:300]}"
            if response.status_code >= 400:
                assert response.json()["success"] is False
                assert response.json()["error"]["code"]
    if "page" in names:
        response = await client.get(
            path, params={"page": "100000000000000000000"}, headers=owner.headers
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


PAGED = [path for path, names in LISTS if "limit" in names]


@pytest.mark.parametrize("path", PAGED)
async def test_page_size_is_an_alias_of_limit(
    client: httpx.AsyncClient, db: AsyncSession, path: str
) -> None:
    owner = await logged_in(client, db, role="owner")
    response = await client.get(path, params={"pageSize": 3}, headers=owner.headers)
    assert response.status_code == 200, response.text
    assert response.json()["pagination"]["limit"] == 3
    both = await client.get(path, params={"pageSize": 3, "limit": 7}, headers=owner.headers)
    assert both.json()["pagination"]["limit"] == 7
    assert (
        await client.get(path, params={"pageSize": 101}, headers=owner.headers)
    ).status_code == 400
