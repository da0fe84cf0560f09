"""A real ``hostplane serve``: who the client is, with and without a trusted proxy.

The clients here all connect from 127.0.0.1, as a game server under
``hostplane up`` would. ``X-Forwarded-For`` must change nothing unless
127.0.0.1 is configured as a trusted proxy.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from hostplane.core.ids import new_id
from tests.e2e.panel import OPERATOR_EMAIL, OPERATOR_PASSWORD, panel_process

AUTH_LIMIT = 5


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **settings: str) -> AsyncIterator[httpx.AsyncClient]:
    """``hostplane serve`` on a fresh database with an owner; a client for it."""
    limit = {"HOSTPLANE_RATE_LIMITS__AUTH": f"{AUTH_LIMIT}/minute"}
    async with panel_process(tmp_path, **limit, **settings) as (_, http, _env):
        yield http


async def login(
    http: httpx.AsyncClient, email: str, password: str, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await http.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=headers
    )


async def api_key_for_10_0_0_1(http: httpx.AsyncClient, token: str) -> str:
    created = await http.post(
        "/api/account/api-keys",
        json={"name": "bot", "scopes": ["server.read"], "allowedIps": ["10.0.0.1"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201, created.text
    key: str = created.json()["data"]["key"]
    return key


async def me(http: httpx.AsyncClient, key: str, forwarded_for: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return (await http.get("/api/auth/me", headers=headers)).status_code


def random_address() -> str:
    digits = int(new_id()[-6:], 36)
    return f"203.0.{digits % 250 + 1}.{digits // 250 % 250 + 1}"


async def test_without_a_trusted_proxy_forwarded_headers_change_nothing(tmp_path: Path) -> None:
    async with serve(tmp_path) as http:
        operator = await login(http, OPERATOR_EMAIL, OPERATOR_PASSWORD)
        assert operator.status_code == 200, operator.text
        key = await api_key_for_10_0_0_1(http, operator.json()["data"]["token"])

        # The allowlist sees 127.0.0.1, whatever the header claims.
        assert await me(http, key, forwarded_for="10.0.0.1") == 401
        assert await me(http, key) == 401
        real_ip = await http.get(
            "/api/auth/me",
            headers={"Authorization": f"Bearer {key}", "X-Real-IP": "10.0.0.1"},
        )
        assert real_ip.status_code == 401

        # A new address per attempt in the header: still one address, one budget
        # (the operator's login above was the first of it).
        answers = [
            await login(http, f"guess-{n}@example.com", "wrong", forwarded_for=random_address())
            for n in range(AUTH_LIMIT)
        ]
        assert [response.status_code for response in answers] == [401] * (AUTH_LIMIT - 1) + [429]
        assert answers[-1].json()["error"]["code"] == "RATE_LIMITED"
        assert int(answers[-1].headers["retry-after"]) >= 1


async def test_with_loopback_as_trusted_proxy_the_forwarded_address_is_used(
    tmp_path: Path,
) -> None:
    async with serve(
        tmp_path,
        HOSTPLANE_HTTP__TRUSTED_PROXIES='["127.0.0.1"]',
        HOSTPLANE_RATE_LIMITS__LOGIN_FAILURES_PER_ACCOUNT="4 per 15 minutes",
    ) as http:
        operator = await login(
            http, OPERATOR_EMAIL, OPERATOR_PASSWORD, forwarded_for="198.51.100.200"
        )
        assert operator.status_code == 200, operator.text
        key = await api_key_for_10_0_0_1(http, operator.json()["data"]["token"])

        assert await me(http, key, forwarded_for="10.0.0.1") == 200
        # The right-most hop is what our proxy saw; the left one the client wrote.
        assert await me(http, key, forwarded_for="10.0.0.1, 10.0.0.9") == 401
        assert await me(http, key) == 401, "without the header the proxy itself is the client"

        # Per address: the forwarded address has its own budget.
        attempts = [
            await login(http, f"guess-{n}@example.com", "wrong", forwarded_for="198.51.100.77")
            for n in range(AUTH_LIMIT + 1)
        ]
        assert [response.status_code for response in attempts] == [401] * AUTH_LIMIT + [429]
        assert attempts[-1].json()["error"]["code"] == "RATE_LIMITED"

        # Per account: one guess from each of many addresses still locks the account.
        for n in range(4):
            wrong = await login(http, OPERATOR_EMAIL, "wrong", forwarded_for=f"192.0.2.{n + 1}")
            assert wrong.status_code == 401, wrong.text
        locked = await login(http, OPERATOR_EMAIL, OPERATOR_PASSWORD, forwarded_for="192.0.2.99")
        assert locked.status_code == 429, locked.text
        assert locked.json()["error"]["code"] == "LOGIN_LOCKED"
        assert int(locked.headers["retry-after"]) > 0
        unknown = [
            await login(http, "nobody@example.com", "wrong", forwarded_for=f"192.0.2.{n + 10}")
            for n in range(5)
        ]
        assert [response.status_code for response in unknown] == [401] * 4 + [429]
        assert unknown[-1].json()["error"]["code"] == "LOGIN_LOCKED"
