"""Verified-signature cache: it skips only the signature check, never the live re-read."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted
from hostplane.core.runtime import Runtime
from hostplane.identity.auth.keys import key_ring
from tests.support.identity import logged_in


async def test_a_banned_users_cached_token_is_refused(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    admin = await logged_in(client, db, role="admin")
    victim = await logged_in(client, db)
    assert (await client.get("/api/auth/me", headers=victim.headers)).status_code == 200
    assert victim.token in (await key_ring(runtime))._verified
    banned = await client.post(
        f"/api/admin/users/{victim.user.id}/ban", json={"reason": "abuse"}, headers=admin.headers
    )
    assert banned.status_code == 200, banned.text
    assert victim.token in (await key_ring(runtime))._verified
    assert (await client.get("/api/auth/me", headers=victim.headers)).status_code == 401


async def test_an_expired_token_is_refused_even_when_cached(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    account = await logged_in(client, db)
    assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 200
    ring = await key_ring(runtime)
    assert account.token in ring._verified
    with shifted(timedelta(seconds=runtime.settings.identity.access_token_ttl_seconds + 120)):
        expired = await client.get("/api/auth/me", headers=account.headers)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "INVALID_TOKEN"
