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
