"""Registration, login, tokens, refresh rotation, logout, bans."""

from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted, utcnow
from hostplane.core.runtime import Runtime
from hostplane.identity.auth.keys import key_ring, rotate_signing_key
from hostplane.identity.users.models import User
from tests.support.identity import PASSWORD, logged_in, login, platform_tenant


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_register_logs_the_new_customer_in(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    await platform_tenant(db)
    response = await client.post(
        "/api/auth/register",
        json={"email": "New@Example.com", "password": "SecurePassword123!", "username": "johndoe"},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["email"] == "new@example.com"
    assert data["username"] == "johndoe"
    assert data["userId"] == data["user"]["id"]
    assert data["user"]["roles"] == ["customer"]
    me = await client.get("/api/auth/me", headers=bearer(data["token"]))
    assert me.status_code == 200
    assert me.json()["data"]["email"] == "new@example.com"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"email": "not-an-email", "password": "long enough 1"}, "Invalid email"),
        ({"email": "a@example.com", "password": "short"}, "min 8"),
    ],
)
async def test_register_refuses_bad_input(
    client: httpx.AsyncClient, db: AsyncSession, body: dict[str, str], fragment: str
) -> None:
    await platform_tenant(db)
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert fragment in response.json()["error"]["message"]


async def test_register_refuses_a_taken_email(client: httpx.AsyncClient, db: AsyncSession) -> None:
    await platform_tenant(db)
    body = {"email": "twice@example.com", "password": "long enough 1"}
    assert (await client.post("/api/auth/register", json=body)).status_code == 200
    again = await client.post("/api/auth/register", json=body | {"username": "other_name"})
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "Email already exists"


async def test_login_answers_the_documented_shapes(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    account = await logged_in(client, db, role="owner")
    body = account.body
    assert body["tokenType"] == "Bearer"
    assert body["user"]["tenantId"] == account.user.tenant_id
    assert body["user"]["role"] == "owner"
    assert body["expiresIn"] == runtime.settings.identity.access_token_ttl_seconds
    claims = jwt.decode(account.token, options={"verify_signature": False})
    assert claims["userId"] == account.user.id
    assert claims["email"] == account.user.email
    assert claims["username"] == account.user.username
    assert "*" in claims["permissions"]
    assert claims["exp"] - claims["iat"] == runtime.settings.identity.access_token_ttl_seconds
    assert jwt.get_unverified_header(account.token)["alg"] == "EdDSA"


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await logged_in(client, db)
    wrong = await login(client, account.user.email, "wrong password")
    unknown = await login(client, "nobody@example.com", "wrong password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"]
    assert wrong.json()["error"]["code"] == "INVALID_CREDENTIALS"


async def test_tampered_expired_wrong_key_and_garbage_tokens_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    account = await logged_in(client, db)
    assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 200

    claims = jwt.decode(account.token, options={"verify_signature": False})
    header = jwt.get_unverified_header(account.token)
    head, payload, signature = account.token.split(".")
    tampered_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(
            account.user.id.encode(), b"01aaaaaaaaaaaaaaaaaaaaaaaa"
        )
    ).decode()
    forged = jwt.encode(
        claims | {"permissions": ["*"]},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": header["kid"]},
    )
    for token in (
        f"{head}.{tampered_payload}.{signature}",
        forged,
        "garbage",
        f"{head}.{payload}.",
    ):
        response = await client.get("/api/auth/me", headers=bearer(token))
        assert response.status_code == 401, token
        assert response.json()["error"]["code"] == "INVALID_TOKEN"

    with shifted(timedelta(seconds=runtime.settings.identity.access_token_ttl_seconds + 120)):
        (await key_ring(runtime))._verified.clear()
        expired = await client.get("/api/auth/me", headers=account.headers)
    assert expired.status_code == 401


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await logged_in(client, db)
    first = await client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()["data"]
    assert rotated["refreshToken"] != account.refresh_token
    assert (await client.get("/api/auth/me", headers=bearer(rotated["token"]))).status_code == 200

    replay = await client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token})
    assert replay.status_code == 401
    assert replay.json()["error"]["details"] == {"reason": "reused"}
    # The whole family is gone: the newest refresh token and every access token of the session.
    assert (
        await client.post("/api/auth/refresh", json={"refreshToken": rotated["refreshToken"]})
    ).status_code == 401
    assert (await client.get("/api/auth/me", headers=bearer(rotated["token"]))).status_code == 401
    assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 401


async def test_expired_and_unknown_refresh_tokens_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    account = await logged_in(client, db)
    unknown = await client.post(
        "/api/auth/refresh", json={"refreshToken": "rt_nothing_like_this_exists"}
    )
    assert unknown.status_code == 401
    with shifted(timedelta(days=runtime.settings.identity.refresh_token_ttl_days + 1)):
        expired = await client.post(
            "/api/auth/refresh", json={"refreshToken": account.refresh_token}
        )
    assert expired.status_code == 401


async def test_logout_revokes_the_session(client: httpx.AsyncClient, db: AsyncSession) -> None:
    account = await logged_in(client, db)
    other_device = await login(client, account.user.email)
    assert (await client.post("/api/auth/logout", headers=account.headers)).status_code == 200
    assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 401
    assert (
        await client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token})
    ).status_code == 401
    # Only that session: the other device stays logged in.
    assert (
        await client.get("/api/auth/me", headers=bearer(other_device.json()["data"]["token"]))
    ).status_code == 200


async def test_a_banned_users_live_token_stops_working(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    victim = await logged_in(client, db)
    assert (await client.get("/api/auth/me", headers=victim.headers)).status_code == 200
    banned = await client.post(
        f"/api/admin/users/{victim.user.id}/ban",
        json={"reason": "chargeback"},
        headers=admin.headers,
    )
    assert banned.status_code == 200, banned.text
    assert banned.json()["data"]["status"] == "banned"
    assert (await client.get("/api/auth/me", headers=victim.headers)).status_code == 401
    assert (
        await client.post("/api/auth/refresh", json={"refreshToken": victim.refresh_token})
    ).status_code == 401
    again = await login(client, victim.user.email)
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "ACCOUNT_DISABLED"
    assert again.json()["error"]["details"] == {"reason": "chargeback"}
    assert (
        await client.post(f"/api/admin/users/{victim.user.id}/unban", headers=admin.headers)
    ).status_code == 200
    assert (await login(client, victim.user.email)).status_code == 200


async def test_admins_cannot_ban_themselves(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await logged_in(client, db, role="admin")
    response = await client.post(f"/api/admin/users/{admin.user.id}/ban", headers=admin.headers)
    assert response.status_code == 403


async def test_jwks_publishes_the_keys_and_rotation_keeps_old_tokens_valid(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    account = await logged_in(client, db)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    old_kid = jwt.get_unverified_header(account.token)["kid"]
    assert [key["kid"] for key in jwks["keys"]] == [old_kid]
    key = jwt.PyJWK.from_dict(jwks["keys"][0])
    assert (
        jwt.decode(account.token, key.key, algorithms=["EdDSA"], options={"verify_aud": False})[
            "sub"
        ]
        == account.user.id
    )

    async with runtime.unit_of_work() as session:
        new_kid = await rotate_signing_key(session, runtime)
    fresh = await login(client, account.user.email)
    assert jwt.get_unverified_header(fresh.json()["data"]["token"])["kid"] == new_kid
    assert {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]} == {
        old_kid,
        new_kid,
    }
    assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 200, (
        "old key still verifies"
    )

    with shifted(timedelta(seconds=runtime.settings.identity.access_token_ttl_seconds + 120)):
        runtime.extensions.clear()
        assert [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]] == [
            new_kid
        ]
        assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 401


async def test_a_replica_that_has_not_seen_a_rotation_still_verifies_new_tokens(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    """Another replica rotates and signs with the new key; this one reloads on the unknown kid."""
    account = await logged_in(client, db)
    await key_ring(runtime)  # this replica holds the old ring in its cache
    from hostplane.app import build_runtime

    other = build_runtime(runtime.settings)
    try:
        async with other.unit_of_work() as session:
            new_kid = await rotate_signing_key(session, other)
        claims = jwt.decode(account.token, options={"verify_signature": False})
        claims.pop("iss")
        token = (await key_ring(other)).sign(claims | {"jti": "from-the-other-replica"})
        assert jwt.get_unverified_header(token)["kid"] == new_kid
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
    finally:
        await other.engine.dispose()


async def test_me_and_profile_updates(client: httpx.AsyncClient, db: AsyncSession) -> None:
    account = await logged_in(client, db)
    profile = (await client.get("/api/users/me", headers=account.headers)).json()["data"]
    assert profile["email"] == account.user.email
    assert profile["role"] == "customer"
    updated = await client.put(
        "/api/users/me", json={"firstName": "John", "lastName": "Doe"}, headers=account.headers
    )
    assert updated.status_code == 200
    assert updated.json()["data"]["name"] == "John Doe"

    missing = await client.put(
        "/api/users/me", json={"newPassword": "another long one"}, headers=account.headers
    )
    assert missing.status_code == 400
    wrong = await client.put(
        "/api/users/me",
        json={"currentPassword": "nope", "newPassword": "another long one"},
        headers=account.headers,
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "INVALID_CURRENT_PASSWORD"

    other_device = (await login(client, account.user.email)).json()["data"]
    changed = await client.put(
        "/api/users/me",
        json={"currentPassword": PASSWORD, "newPassword": "another long one"},
        headers=account.headers,
    )
    assert changed.status_code == 200
    assert (await client.get("/api/users/me", headers=account.headers)).status_code == 200, (
        "this session stays"
    )
    assert (
        await client.get("/api/users/me", headers=bearer(other_device["token"]))
    ).status_code == 401
    assert (await login(client, account.user.email)).status_code == 401
    assert (await login(client, account.user.email, "another long one")).status_code == 200


async def test_login_rehashes_weak_password_hashes(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    from argon2 import PasswordHasher

    account = await logged_in(client, db)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    user = await db.get(User, account.user.id)
    assert user is not None
    user.password_hash = weak
    await db.commit()
    assert (await login(client, account.user.email)).status_code == 200
    await db.commit()
    refreshed = await db.get(User, account.user.id, populate_existing=True)
    assert refreshed is not None
    assert refreshed.password_hash != weak
    assert refreshed.last_login_at is not None
    assert refreshed.last_login_at <= utcnow()


async def test_login_is_limited_to_ten_a_minute(tmp_path: Path, db: AsyncSession) -> None:
    """The documented limit on the real login route: request 11 answers 429 with the headers."""
    from hostplane.app import create_app
    from hostplane.core.config import RateLimitSettings
    from tests.conftest import make_settings

    await platform_tenant(db)
    settings = make_settings(tmp_path, rate_limits=RateLimitSettings())
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            remaining = []
            for _ in range(10):
                response = await login(client, "someone@example.com", "wrong password")
                assert response.status_code == 401
                assert response.headers["x-ratelimit-limit"] == "10"
                remaining.append(int(response.headers["x-ratelimit-remaining"]))
            eleventh = await login(client, "someone@example.com", "wrong password")
    assert remaining == list(range(9, -1, -1))
    assert eleventh.status_code == 429
    assert eleventh.json()["error"]["code"] == "RATE_LIMITED"
    assert int(eleventh.headers["retry-after"]) > 0
    assert eleventh.headers["x-ratelimit-remaining"] == "0"
    assert int(eleventh.headers["x-ratelimit-reset"]) > 0


async def test_a_changed_secret_key_starts_a_new_signing_key(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    """Keys sealed under the old secret cannot be opened: retire them, sign with a new one."""
    from hostplane.app import build_runtime
    from hostplane.identity.auth.keys import warm_key_ring

    account = await logged_in(client, db)
    old_kid = jwt.get_unverified_header(account.token)["kid"]
    changed = build_runtime(
        runtime.settings.model_copy(
            update={"secret_key": SecretStr("another-secret-key-that-is-long-enough-42")}
        )
    )
    try:
        await warm_key_ring(changed)
        ring = await key_ring(changed)
        assert ring.signing_key.kid != old_kid
        assert ring.verify(account.token)["sub"] == account.user.id, (
            "old tokens verify until they expire"
        )
    finally:
        await changed.engine.dispose()


async def test_logins_are_audited_as_the_user_and_refreshes_are_not(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    from sqlalchemy import select

    from hostplane.platform.audit.models import AuditLog

    account = await logged_in(client, db)
    assert (
        await client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token})
    ).status_code == 200
    await db.commit()
    entries = (await db.scalars(select(AuditLog).where(AuditLog.user_id == account.user.id))).all()
    assert [(e.action, e.resource_id, e.tenant_id) for e in entries] == [
        ("auth.login", account.user.id, account.user.tenant_id)
    ]


def _account_limited_app(tmp_path: Path, failures: str) -> tuple[FastAPI, Runtime]:
    from hostplane.app import build_runtime, create_app
    from hostplane.core.config import RateLimitSettings
    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path,
        rate_limits=RateLimitSettings(
            auth="10000/minute", default="10000/minute", login_failures_per_account=failures
        ),
    )
    runtime = build_runtime(settings)
    return create_app(settings, runtime=runtime), runtime


def _from(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def _assert_locked(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 15 * 60
    assert response.json() == {
        "success": False,
        "error": {
            "code": "LOGIN_LOCKED",
            "message": (
                f"Too many failed logins for this account. Try again in {retry_after} seconds."
            ),
            "details": {"retryAfter": retry_after},
        },
    }
    return retry_after


async def test_failures_from_many_addresses_lock_the_account(
    tmp_path: Path, db: AsyncSession
) -> None:
    """Each address guesses once; together they spend the account's failures."""
    from tests.support.factories import make_user

    tenant = await platform_tenant(db)
    user = await make_user(db, tenant=tenant, email="target@example.com")
    app, runtime = _account_limited_app(tmp_path, "3 per 15 minutes")
    async with app.router.lifespan_context(app):
        for n in range(3):
            async with _from(app, f"198.51.100.{n + 1}") as client:
                assert (await login(client, user.email, "wrong guess")).status_code == 401
        async with _from(app, "198.51.100.50") as client:
            _assert_locked(await login(client, user.email, "wrong guess"))
            # The right password is refused too: otherwise the answer would
            # tell the guesser which guess was right.
            _assert_locked(await login(client, "Target@Example.com ", PASSWORD))
            # Another account is not affected.
            other = await make_user(db, tenant=tenant, email="bystander@example.com")
            assert (await login(client, other.email)).status_code == 200
    await runtime.engine.dispose()


async def test_the_lock_answers_alike_for_an_account_that_does_not_exist(
    tmp_path: Path, db: AsyncSession
) -> None:
    await platform_tenant(db)
    app, runtime = _account_limited_app(tmp_path, "2 per 15 minutes")
    async with app.router.lifespan_context(app), _from(app, "198.51.100.1") as client:
        for _ in range(2):
            assert (await login(client, "nobody@example.com", "guess")).status_code == 401
        _assert_locked(await login(client, "nobody@example.com", "guess"))
    await runtime.engine.dispose()


async def test_a_successful_login_does_not_reset_the_failures(
    tmp_path: Path, db: AsyncSession
) -> None:
    """The owner logging in between guesses gives the guesser no fresh budget."""
    from tests.support.factories import make_user

    tenant = await platform_tenant(db)
    user = await make_user(db, tenant=tenant, email="owner@example.com")
    app, runtime = _account_limited_app(tmp_path, "3 per 15 minutes")
    async with app.router.lifespan_context(app), _from(app, "198.51.100.1") as client:
        for _ in range(2):
            assert (await login(client, user.email, "guess")).status_code == 401
        # Successes are not failures: several in a row do not lock the owner out.
        for _ in range(4):
            assert (await login(client, user.email)).status_code == 200
        assert (await login(client, user.email, "guess")).status_code == 401
        _assert_locked(await login(client, user.email, "guess"))
    await runtime.engine.dispose()


async def test_the_lock_ends_with_its_window(tmp_path: Path, db: AsyncSession) -> None:
    import asyncio
    import time

    from tests.support.factories import make_user

    tenant = await platform_tenant(db)
    user = await make_user(db, tenant=tenant, email="patient@example.com")
    # Long enough that three logins fit in it on a loaded machine (Argon2
    # runs on every failure), short enough to wait out.
    app, runtime = _account_limited_app(tmp_path, "2 per 8 seconds")
    async with app.router.lifespan_context(app), _from(app, "198.51.100.1") as client:
        assert (await login(client, user.email, "guess")).status_code == 401
        # The window began during that request, so it has ended 8 s after its answer.
        window_over = time.monotonic() + 8.5
        assert (await login(client, user.email, "guess")).status_code == 401
        assert _assert_locked(await login(client, user.email)) <= 8
        await asyncio.sleep(max(0.0, window_over - time.monotonic()))
        assert (await login(client, user.email)).status_code == 200
    await runtime.engine.dispose()


async def test_concurrent_guesses_cannot_all_slip_under_the_limit(
    tmp_path: Path, db: AsyncSession
) -> None:
    import asyncio

    from tests.support.factories import make_user

    tenant = await platform_tenant(db)
    user = await make_user(db, tenant=tenant, email="raced@example.com")
    app, runtime = _account_limited_app(tmp_path, "3 per 15 minutes")
    async with app.router.lifespan_context(app):
        clients = [_from(app, f"198.51.100.{n + 1}") for n in range(12)]
        try:
            answers = await asyncio.gather(
                *(login(client, user.email, "guess") for client in clients)
            )
        finally:
            for client in clients:
                await client.aclose()
    await runtime.engine.dispose()
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [401] * 3 + [429] * 9
