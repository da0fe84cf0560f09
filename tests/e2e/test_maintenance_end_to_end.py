"""Maintenance mode through the front door: ``hostplane up`` (SQLite pass) or
``serve`` x2 + ``worker`` + ``agent`` (PostgreSQL pass, replicas sharing Redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hostplane.core.ids import new_id
from tests.conftest import POSTGRES_URL
from tests.e2e.frontdoor import Deployment, embedded, eventually, production


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("maintenance")
    shape = production if POSTGRES_URL else embedded
    with shape(folder) as running:
        yield running


async def test_maintenance_on_refuses_users_keeps_operators_then_off_again(
    deployment: Deployment,
) -> None:
    name = f"user{new_id()[-8:].lower()}"
    async with deployment.client() as http:
        registered = await http.post(
            "/api/auth/register",
            json={"email": f"{name}@example.com", "password": "a long passphrase"},
        )
        assert registered.status_code == 200, registered.text
        user_token: str = registered.json()["data"]["token"]

    replicas = range(len(deployment.api))
    for replica in replicas:
        async with deployment.client(user_token, replica=replica) as http:
            assert (await http.get("/api/servers")).status_code == 200

    async with deployment.operator() as operator:
        switched = await operator.patch(
            "/api/admin/config",
            json={
                "maintenance": {"enabled": True, "message": "Back at noon", "retryAfterSeconds": 90}
            },
        )
        assert switched.status_code == 200, switched.text
    switched_at = time.monotonic()

    for replica in replicas:
        async with deployment.client(user_token, replica=replica) as http:

            async def refused() -> bool:
                answer = await http.get("/api/servers")
                return answer.status_code == 503

            await eventually(
                refused, what=f"replica {replica} in maintenance", timeout=2, every=0.05
            )
            took = time.monotonic() - switched_at
            assert took < 1.5, f"replica {replica} applied the change after {took:.2f} s"
            answer = await http.get("/api/servers")
            assert answer.headers["Retry-After"] == "90"
            assert answer.json()["error"] == {
                "code": "MAINTENANCE",
                "message": "Back at noon",
                "details": {"retryAfter": 90},
            }
        async with deployment.operator(replica) as operator:
            assert (await operator.get("/api/servers")).status_code == 200
            assert (await operator.get("/api/admin/health")).status_code == 200
        async with deployment.client(replica=replica) as anonymous:
            assert (await anonymous.get("/health")).status_code == 200
            public = await anonymous.get("/api/v1/settings/system/config")
            assert public.json()["data"]["maintenance"]["enabled"] is True

    async with deployment.operator() as operator:
        off = await operator.patch("/api/admin/config", json={"maintenance": {"enabled": False}})
        assert off.status_code == 200, off.text
    for replica in replicas:
        async with deployment.client(user_token, replica=replica) as http:

            async def served() -> bool:
                return (await http.get("/api/servers")).status_code == 200

            await eventually(served, what=f"replica {replica} serving again", timeout=2, every=0.05)
