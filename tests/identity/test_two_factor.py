"""TOTP enrolment, the login step, recovery codes, replay, and roles that require it."""

from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted
from hostplane.core.security import totp
from tests.support.identity import LoggedIn, logged_in, login


async def enrol(client: httpx.AsyncClient, account: LoggedIn) -> tuple[str, list[str]]:
    started = await client.post("/api/auth/2fa/enable", headers=account.headers)
    assert started.status_code == 200, started.text
    secret = started.json()["data"]["secret"]
    assert started.json()["data"]["otpauthUrl"].startswith("otpauth://totp/")
    wrong = await client.post(
        "/api/auth/2fa/confirm", json={"code": "000000"}, headers=account.headers
    )
    assert wrong.status_code == 400
    confirmed = await client.post(
        "/api/auth/2fa/confirm",
        json={"code": totp.code_at(secret, totp.current_step())},
        headers=account.headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["data"]["recoveryCodes"]
    assert len(codes) == 10
    return secret, codes


async def test_login_with_two_factor_needs_the_second_step(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await logged_in(client, db)
    secret, _codes = await enrol(client, account)
    first = await login(client, account.user.email)
    assert first.status_code == 200
    challenge = first.json()["data"]
    assert challenge["twoFactorRequired"] is True
    assert "token" not in challenge

    with shifted(timedelta(seconds=totp.STEP_SECONDS)):
        code = totp.code_at(secret, totp.current_step())
        done = await client.post(
            "/api/auth/login/2fa",
            json={"challengeToken": challenge["challengeToken"], "code": code},
        )
        assert done.status_code == 200, done.text
        assert done.json()["data"]["token"]
        # The challenge is spent, and the same code cannot be replayed on a new one.
        spent = await client.post(
            "/api/auth/login/2fa",
            json={"challengeToken": challenge["challengeToken"], "code": code},
        )
        assert spent.status_code == 401
        again = (await login(client, account.user.email)).json()["data"]
        replay = await client.post(
            "/api/auth/login/2fa", json={"challengeToken": again["challengeToken"], "code": code}
        )
        assert replay.status_code == 401
        assert replay.json()["error"]["code"] == "INVALID_TWO_FACTOR_CODE"


async def test_wrong_codes_are_counted_and_end_the_challenge(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await logged_in(client, db)
    secret, _ = await enrol(client, account)
    challenge = (await login(client, account.user.email)).json()["data"]["challengeToken"]
    for _ in range(5):
        wrong = await client.post(
            "/api/auth/login/2fa", json={"challengeToken": challenge, "code": "123456"}
        )
        assert wrong.status_code == 401
    with shifted(timedelta(seconds=totp.STEP_SECONDS * 2)):
        right = totp.code_at(secret, totp.current_step())
        locked = await client.post(
            "/api/auth/login/2fa", json={"challengeToken": challenge, "code": right}
        )
    assert locked.status_code == 401
    assert locked.json()["error"]["code"] == "INVALID_CHALLENGE"


async def test_recovery_codes_work_once(client: httpx.AsyncClient, db: AsyncSession) -> None:
    account = await logged_in(client, db)
    _secret, codes = await enrol(client, account)
    challenge = (await login(client, account.user.email)).json()["data"]["challengeToken"]
    used = await client.post(
        "/api/auth/login/2fa", json={"challengeToken": challenge, "recoveryCode": codes[0]}
    )
    assert used.status_code == 200
    challenge = (await login(client, account.user.email)).json()["data"]["challengeToken"]
    reused = await client.post(
        "/api/auth/login/2fa", json={"challengeToken": challenge, "recoveryCode": codes[0]}
    )
    assert reused.status_code == 401
    other = await client.post(
        "/api/auth/login/2fa", json={"challengeToken": challenge, "recoveryCode": codes[1]}
    )
    assert other.status_code == 200


async def test_disabling_needs_a_code_or_the_password(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    account = await logged_in(client, db)
    await enrol(client, account)
    refused = await client.post(
        "/api/auth/2fa/disable", json={"password": "wrong"}, headers=account.headers
    )
    assert refused.status_code == 401
    from tests.support.identity import PASSWORD

    disabled = await client.post(
        "/api/auth/2fa/disable", json={"password": PASSWORD}, headers=account.headers
    )
    assert disabled.status_code == 200
    assert "token" in (await login(client, account.user.email)).json()["data"]


async def test_enabling_twice_is_a_conflict(client: httpx.AsyncClient, db: AsyncSession) -> None:
    account = await logged_in(client, db)
    await enrol(client, account)
    assert (await client.post("/api/auth/2fa/enable", headers=account.headers)).status_code == 409


async def test_a_role_that_requires_two_factor_withholds_permissions_until_enrolled(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    from sqlalchemy import select

    from hostplane.identity.roles.models import Role

    admin = await logged_in(client, db, role="admin")
    role = await db.scalar(select(Role).where(Role.name == "admin", Role.tenant_id.is_(None)))
    assert role is not None
    role.require_two_factor = True
    await db.commit()

    fresh = await login(client, admin.user.email)
    assert fresh.json()["data"]["twoFactorSetupRequired"] is True
    headers = {"Authorization": f"Bearer {fresh.json()['data']['token']}"}
    assert (await client.get("/api/admin/users", headers=headers)).status_code == 403
    me = (await client.get("/api/auth/me", headers=headers)).json()["data"]
    assert me["twoFactorEnabled"] is False
    account = LoggedIn(
        admin.user,
        fresh.json()["data"]["token"],
        fresh.json()["data"]["refreshToken"],
        fresh.json()["data"],
    )
    secret, _ = await enrol(client, account)
    assert (await client.get("/api/admin/users", headers=headers)).status_code == 200
    assert secret
    blocked = await client.post(
        "/api/auth/2fa/disable", json={"password": "correct horse battery"}, headers=headers
    )
    assert blocked.status_code == 403
