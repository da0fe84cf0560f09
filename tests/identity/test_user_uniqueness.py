"""Usernames and emails are unique per tenant whatever their case, decided by
the database, and a clash is a 409 naming the field, also under a race."""

import asyncio

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.identity.users.models import User
from tests.support.identity import logged_in, platform_tenant

PASSWORD = "long enough 1"


async def test_a_name_taken_in_another_case_is_a_409_naming_the_field(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    await platform_tenant(db)
    first = {"email": "Jo@Example.com", "username": "JoSmith", "password": PASSWORD}
    assert (await client.post("/api/auth/register", json=first)).status_code == 200
    for body, field in (
        ({"email": "jo@example.COM", "username": "other", "password": PASSWORD}, "email"),
        ({"email": "new@example.com", "username": "josmith", "password": PASSWORD}, "username"),
    ):
        again = await client.post("/api/auth/register", json=body)
        assert again.status_code == 409, again.text
        error = again.json()["error"]
        assert error["code"] == "CONFLICT"
        assert error["message"] == f"{field.capitalize()} already exists"
        assert error["details"]["fields"][0]["field"] == field


async def test_the_database_refuses_a_case_variant_written_past_the_check(
    db: AsyncSession,
) -> None:
    from sqlalchemy.exc import IntegrityError

    tenant = await platform_tenant(db)
    db.add(User(tenant_id=tenant.id, email="a@example.com", username="Alice"))
    await db.commit()
    db.add(User(tenant_id=tenant.id, email="b@example.com", username="ALICE"))
    with pytest.raises(IntegrityError):
        await db.commit()
    await db.rollback()


async def test_concurrent_registrations_of_one_name_in_many_cases_give_one_account(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    await db.commit()
    names = ["racer" if n % 2 else "RACER" for n in range(20)]
    bodies = [
        {
            "email": ("race@example.com" if n % 3 else "RACE@example.com"),
            "username": names[n][: 1 + n % 5].upper() + names[n][1 + n % 5 :],
            "password": PASSWORD,
        }
        for n in range(20)
    ]
    answers = await asyncio.gather(
        *(client.post("/api/auth/register", json=body) for body in bodies)
    )
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 1, [answer.text for answer in answers]
    assert statuses.count(409) == 19, [
        answer.text for answer in answers if answer.status_code != 200
    ]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "CONFLICT"
    count = await db.scalar(
        select(func.count()).where(User.tenant_id == tenant.id, User.username_key == "racer")
    )
    assert count == 1


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("%", ["pct%user"]),
        ("_", ["under_score"]),
        ("\\", ["back\\slash"]),
        ("score", ["under_score"]),
    ],
)
async def test_search_matches_percent_underscore_and_backslash_literally(
    client: httpx.AsyncClient, db: AsyncSession, search: str, expected: list[str]
) -> None:
    admin = await logged_in(client, db, role="admin")
    for name in ("pct%user", "under_score", "back\\slash", "plainname"):
        db.add(
            User(
                tenant_id=admin.user.tenant_id,
                email=f"{len(name)}{name[:3]}@x.io",
                username=name,
                first_name=name,
            )
        )
    await db.commit()
    found = await client.get("/api/admin/users", params={"search": search}, headers=admin.headers)
    assert found.status_code == 200, found.text
    names = {"pct%user", "under_score", "back\\slash", "plainname"}
    assert sorted(u["username"] for u in found.json()["data"] if u["username"] in names) == expected
