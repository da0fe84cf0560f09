"""Built-in roles, custom roles and assigning them: ``/api/admin/roles`` and user roles."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Conflict, ValidationFailed
from hostplane.core.principal import Principal, permission_matches
from hostplane.core.runtime import Runtime
from hostplane.identity.permissions import catalogue
from hostplane.identity.roles import service
from hostplane.identity.roles.builtin import BUILTIN_ROLES
from hostplane.identity.roles.models import Role, TenantRoleSetting, UserRole
from hostplane.identity.roles.service import LastOwner
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.users.models import User
from tests.conftest import ClientAs
from tests.support.auth import operator
from tests.support.factories import make_tenant, make_user


@dataclass
class Member:
    user: User
    principal: Principal
    http: httpx.AsyncClient


MemberFactory = Callable[..., Awaitable[Member]]


@pytest.fixture
def member(db: AsyncSession, client_as: ClientAs) -> MemberFactory:
    """``await member(tenant, "admin")``: a real user holding that role, and a client acting as them.

    The principal carries the user's effective permissions, as a login would.
    """

    async def make(tenant: Tenant, role: str | None = None) -> Member:
        user = await make_user(db, tenant=tenant, role=role)
        permissions = await service.effective_permissions(db, user.id)
        await db.commit()
        principal = Principal(
            kind="user", id=user.id, user_id=user.id, tenant_id=tenant.id, permissions=permissions
        )
        return Member(user=user, principal=principal, http=await client_as(principal))

    return make


async def _builtin_id(db: AsyncSession, name: str) -> str:
    role_id = await db.scalar(select(Role.id).where(Role.name == name, Role.builtin.is_(True)))
    await db.commit()
    assert role_id is not None
    return role_id


async def _create(http: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await http.post("/api/admin/roles", json={"name": "Server Manager", **body})


def _error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    details: dict[str, object] = body["error"]["details"] or {}
    return details


# --- built-in roles -------------------------------------------------------------------------


async def test_builtin_roles_are_created_once(db: AsyncSession) -> None:
    first = await service.ensure_builtin_roles(db)
    await db.commit()
    second = await service.ensure_builtin_roles(db)
    await db.commit()
    assert {name: role.id for name, role in first.items()} == {
        name: role.id for name, role in second.items()
    }
    assert set(first) == {
        "owner",
        "country-admin",
        "admin",
        "admin-l2",
        "admin-l1",
        "support",
        "customer",
    }
    count = await db.scalar(select(func.count()).select_from(Role))
    assert count == len(BUILTIN_ROLES)
    owner = second["owner"]
    assert owner.permissions == ["*"] and owner.builtin and owner.tenant_id is None
    assert owner.rank == 100 and owner.require_two_factor is False
    assert second["customer"].permissions == [] and second["customer"].rank == 0
    assert all(role.require_two_factor is False for role in second.values())


async def test_builtin_roles_are_brought_up_to_date(db: AsyncSession) -> None:
    roles = await service.ensure_builtin_roles(db)
    admin = roles["admin"]
    expected = list(admin.permissions)
    # An installation made by an older release: other permissions, rank, text.
    admin.permissions = ["*"]
    admin.rank = 3
    admin.description = "old"
    admin.require_two_factor = True  # the operator's choice: kept
    await db.commit()

    await service.ensure_builtin_roles(db)
    await db.commit()
    refreshed = await db.scalar(select(Role).where(Role.id == admin.id))
    assert refreshed is not None
    assert refreshed.permissions == expected and refreshed.rank == 80
    assert refreshed.description != "old"
    assert refreshed.require_two_factor is True


async def test_builtin_roles_sync_from_a_tenant_confined_session(db: AsyncSession) -> None:
    tenant = await make_tenant(db)
    scope_to_tenant(db, tenant.id)
    try:
        roles = await service.ensure_builtin_roles(db)
        await db.commit()
    finally:
        scope_to_tenant(db, None)
    assert all(role.tenant_id is None for role in roles.values())
    assert (
        await db.scalar(select(func.count()).select_from(Role).where(Role.tenant_id.is_not(None)))
        == 0
    )


def test_each_admin_level_holds_everything_below_it() -> None:
    ordered = sorted(BUILTIN_ROLES, key=lambda role: role.rank)
    for lower, higher in itertools.pairwise(ordered):
        assert lower.rank < higher.rank
        for permission in lower.permissions:
            assert any(permission_matches(g, permission) for g in higher.permissions), (
                f"{higher.name} lacks {permission} of {lower.name}"
            )
    for role in BUILTIN_ROLES:
        assert catalogue.validate(role.permissions) == sorted(role.permissions)


def test_builtin_permission_sets_keep_money_and_roles_senior() -> None:
    sets = {role.name: set(role.permissions) for role in BUILTIN_ROLES}
    assert sets["customer"] == set()
    assert {"ticket.read", "ticket.manage", "user.read", "billing.read"} <= sets["support"]
    money_and_roles = {"billing.write", "role.manage", "cashout.approve", "economy.manage"}
    assert not money_and_roles & sets["support"]
    assert not {"file.read", "server.console", "database.view_password"} & sets["support"]
    assert "role.manage" in sets["admin"] and "billing.write" not in sets["admin"]
    assert {"billing.write", "cashout.approve"} <= sets["country-admin"]
    assert (
        not {"tenant.manage", "config.manage", "economy.manage", "admin.access"}
        & sets["country-admin"]
    )
    # Aura's moderation flags, by level.
    assert {"room.kick", "message.delete"} <= sets["admin-l1"] and "user.ban" not in sets[
        "admin-l1"
    ]
    assert {"user.ban", "room.manage", "guide.approve"} <= sets["admin-l2"]


# --- reading roles --------------------------------------------------------------------------


async def test_roles_are_listed_with_the_builtins_most_senior_first(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    owner = await member(tenant, "owner")
    created = await _create(owner.http, permissions=["server.start"], rank=75)
    assert created.status_code == 201

    body = (await owner.http.get("/api/admin/roles")).json()
    assert body["success"] is True
    names = [role["name"] for role in body["data"]]
    assert names == [
        "owner",
        "country-admin",
        "admin",
        "Server Manager",
        "admin-l2",
        "admin-l1",
        "support",
        "customer",
    ]
    assert body["pagination"] == {"page": 1, "limit": 20, "total": 8, "pages": 1}
    builtin = body["data"][0]
    assert builtin["builtin"] is True and builtin["tenantId"] is None
    assert builtin["permissions"] == ["*"] and builtin["requireTwoFactor"] is False
    assert builtin["createdAt"].endswith("Z")
    paged = (await owner.http.get("/api/admin/roles", params={"limit": 3, "page": 2})).json()
    assert [role["name"] for role in paged["data"]] == ["Server Manager", "admin-l2", "admin-l1"]

    one = (await owner.http.get(f"/api/admin/roles/{created.json()['data']['id']}")).json()
    assert one["data"]["name"] == "Server Manager" and one["data"]["tenantId"] == tenant.id


async def test_reading_roles_needs_role_read(
    db: AsyncSession, client: httpx.AsyncClient, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    customer = await member(tenant, "customer")
    _error(await customer.http.get("/api/admin/roles"), 403, "FORBIDDEN")
    _error(await client.get("/api/admin/roles"), 401, "UNAUTHORIZED")
    support = await member(tenant, "support")
    assert (await support.http.get("/api/admin/roles")).status_code == 200
    _error(await _create(support.http), 403, "FORBIDDEN")  # role.read only


async def test_unknown_role_is_404(db: AsyncSession, member: MemberFactory) -> None:
    owner = await member(await make_tenant(db), "owner")
    missing = "01nosuchrole00000000000000"
    _error(await owner.http.get(f"/api/admin/roles/{missing}"), 404, "NOT_FOUND")
    _error(
        await owner.http.put(f"/api/admin/roles/{missing}", json={"name": "x"}), 404, "NOT_FOUND"
    )
    _error(await owner.http.delete(f"/api/admin/roles/{missing}"), 404, "NOT_FOUND")


# --- creating, changing, deleting -----------------------------------------------------------


async def test_a_role_is_created_changed_and_deleted(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    owner = await member(tenant, "owner")
    response = await _create(
        owner.http,
        description="Runs the game servers",
        permissions=["server.stop", "server.start", "file.*", "server.start"],
        rank=40,
        requireTwoFactor=True,
    )
    assert response.status_code == 201, response.text
    role = response.json()["data"]
    assert role["permissions"] == ["file.*", "server.start", "server.stop"]
    assert role["rank"] == 40 and role["requireTwoFactor"] is True and role["builtin"] is False
    assert role["tenantId"] == tenant.id

    changed = await owner.http.put(
        f"/api/admin/roles/{role['id']}",
        json={"name": "Game Ops", "permissions": ["server.start"], "rank": 45},
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert data["name"] == "Game Ops" and data["permissions"] == ["server.start"]
    assert data["rank"] == 45 and data["description"] == "Runs the game servers"
    assert data["requireTwoFactor"] is True

    stored = await db.scalar(select(Role).where(Role.id == role["id"]))
    assert stored is not None and stored.name == "Game Ops" and stored.tenant_id == tenant.id
    await db.commit()

    deleted = await owner.http.delete(f"/api/admin/roles/{role['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"success": True}
    _error(await owner.http.get(f"/api/admin/roles/{role['id']}"), 404, "NOT_FOUND")


async def test_invalid_roles_are_refused_with_400(db: AsyncSession, member: MemberFactory) -> None:
    owner = await member(await make_tenant(db), "owner")
    unknown = _error(
        await _create(owner.http, permissions=["server.start", "server.explode", "nope.*"]),
        400,
        "VALIDATION_ERROR",
    )
    assert unknown["unknown"] == ["nope.*", "server.explode"]
    _error(await _create(owner.http, rank=100), 400, "VALIDATION_ERROR")
    _error(await _create(owner.http, rank=-1), 400, "VALIDATION_ERROR")
    _error(await _create(owner.http, name=""), 400, "VALIDATION_ERROR")
    _error(await _create(owner.http, name="   "), 400, "VALIDATION_ERROR")
    _error(await _create(owner.http, colour="red"), 400, "VALIDATION_ERROR")

    role = (await _create(owner.http)).json()["data"]
    update = await owner.http.put(
        f"/api/admin/roles/{role['id']}", json={"permissions": ["user.create"]}
    )
    details = _error(update, 400, "VALIDATION_ERROR")
    assert details["renamed"] == {"user.create": "subuser.create"}


async def test_names_are_unique_in_a_tenant_and_builtin_names_are_reserved(
    db: AsyncSession, member: MemberFactory
) -> None:
    owner = await member(await make_tenant(db), "owner")
    assert (await _create(owner.http)).status_code == 201
    _error(await _create(owner.http, name="server manager"), 409, "CONFLICT")
    _error(await _create(owner.http, name="Admin"), 409, "CONFLICT")
    other = (await _create(owner.http, name="Other")).json()["data"]
    _error(
        await owner.http.put(f"/api/admin/roles/{other['id']}", json={"name": "Server Manager"}),
        409,
        "CONFLICT",
    )


async def test_a_caller_grants_only_permissions_they_hold(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    admin = await member(tenant, "admin")
    refused = _error(
        await _create(admin.http, permissions=["server.start", "billing.write", "*"], rank=10),
        403,
        "FORBIDDEN",
    )
    assert refused["missing"] == ["*", "billing.write"]
    role = (await _create(admin.http, permissions=["server.start"], rank=10)).json()["data"]
    widened = await admin.http.put(
        f"/api/admin/roles/{role['id']}", json={"permissions": ["server.start", "economy.manage"]}
    )
    assert _error(widened, 403, "FORBIDDEN")["missing"] == ["economy.manage"]

    # A permission the editor lacks may stay on (or leave) a role; only additions are grants.
    owner = await member(tenant, "owner")
    mixed = (
        await _create(
            owner.http, name="Billing Desk", permissions=["billing.write", "ticket.read"], rank=10
        )
    ).json()["data"]
    narrowed = await admin.http.put(
        f"/api/admin/roles/{mixed['id']}", json={"permissions": ["ticket.read"]}
    )
    assert narrowed.status_code == 200 and narrowed.json()["data"]["permissions"] == ["ticket.read"]


async def test_a_caller_manages_only_roles_ranked_below_them(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    admin = await member(tenant, "admin")  # rank 80
    owner = await member(tenant, "owner")
    rank = _error(await _create(admin.http, rank=80), 403, "FORBIDDEN")
    assert rank == {"rank": 80, "yourRank": 80}
    assert (await _create(admin.http, rank=79)).status_code == 201

    senior = (await _create(owner.http, name="Senior", rank=85)).json()["data"]
    _error(
        await admin.http.put(f"/api/admin/roles/{senior['id']}", json={"description": "x"}),
        403,
        "FORBIDDEN",
    )
    _error(await admin.http.delete(f"/api/admin/roles/{senior['id']}"), 403, "FORBIDDEN")
    junior = (await _create(admin.http, name="Junior", rank=10)).json()["data"]
    _error(
        await admin.http.put(f"/api/admin/roles/{junior['id']}", json={"rank": 90}),
        403,
        "FORBIDDEN",
    )


async def test_rank_rules_need_a_user_account(db: AsyncSession, client_as: ClientAs) -> None:
    tenant = await make_tenant(db)
    # A caller with every permission but no user account behind it has no rank.
    http = await client_as(operator(tenant.id))
    details = _error(await _create(http), 403, "FORBIDDEN")
    assert details["reason"] == "no_user"


async def test_builtin_roles_cannot_be_changed_or_deleted(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    owner = await member(tenant, "owner")
    admin_id = await _builtin_id(db, "admin")
    refused = _error(
        await owner.http.put(f"/api/admin/roles/{admin_id}", json={"permissions": ["*"]}),
        403,
        "FORBIDDEN",
    )
    assert refused["fields"] == ["permissions"]
    _error(
        await owner.http.put(f"/api/admin/roles/{admin_id}", json={"name": "boss"}),
        403,
        "FORBIDDEN",
    )
    _error(await owner.http.delete(f"/api/admin/roles/{admin_id}"), 403, "FORBIDDEN")
    stored = await db.scalar(select(Role).where(Role.id == admin_id))
    assert stored is not None and stored.name == "admin" and stored.permissions != ["*"]
    await db.commit()


async def test_an_owner_sets_two_factor_on_a_builtin_role_for_their_tenant_only(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant_a = await make_tenant(db, name="A")
    tenant_b = await make_tenant(db, name="B")
    owner_a = await member(tenant_a, "owner")
    owner_b = await member(tenant_b, "owner")
    admin_a = await member(tenant_a, "admin")
    admin_b = await member(tenant_b, "admin")
    admin_id = await _builtin_id(db, "admin")

    # Sending the role back unchanged apart from the flag is fine.
    current = (await owner_a.http.get(f"/api/admin/roles/{admin_id}")).json()["data"]
    response = await owner_a.http.put(
        f"/api/admin/roles/{admin_id}",
        json={
            "name": current["name"],
            "permissions": current["permissions"],
            "rank": current["rank"],
            "requireTwoFactor": True,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["requireTwoFactor"] is True

    seen_by_b = (await owner_b.http.get(f"/api/admin/roles/{admin_id}")).json()["data"]
    assert seen_by_b["requireTwoFactor"] is False
    assert await service.two_factor_required(db, admin_a.user.id) is True
    assert await service.two_factor_required(db, admin_b.user.id) is False
    assert await service.two_factor_required(db, owner_a.user.id) is False
    shared = await db.scalar(select(Role).where(Role.id == admin_id))
    assert shared is not None and shared.require_two_factor is False
    assert await db.scalar(select(func.count()).select_from(TenantRoleSetting)) == 1
    await db.commit()

    _error(
        await admin_a.http.put(f"/api/admin/roles/{admin_id}", json={"requireTwoFactor": False}),
        403,
        "FORBIDDEN",
    )
    off = await owner_a.http.put(f"/api/admin/roles/{admin_id}", json={"requireTwoFactor": False})
    assert off.json()["data"]["requireTwoFactor"] is False
    assert await service.two_factor_required(db, admin_a.user.id) is False


async def test_a_custom_role_can_require_two_factor(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    owner = await member(tenant, "owner")
    target = await member(tenant, "customer")
    role = (await _create(owner.http, requireTwoFactor=True)).json()["data"]
    assert await service.two_factor_required(db, target.user.id) is False
    await db.commit()
    await owner.http.post(f"/api/admin/users/{target.user.id}/roles", json={"roleId": role["id"]})
    assert await service.two_factor_required(db, target.user.id) is True
    await db.commit()


async def test_a_role_in_use_is_not_deleted(db: AsyncSession, member: MemberFactory) -> None:
    tenant = await make_tenant(db)
    owner = await member(tenant, "owner")
    target = await member(tenant, "customer")
    role = (await _create(owner.http)).json()["data"]
    assigned = await owner.http.post(
        f"/api/admin/users/{target.user.id}/roles", json={"roleId": role["id"]}
    )
    assert assigned.status_code == 200
    details = _error(await owner.http.delete(f"/api/admin/roles/{role['id']}"), 409, "CONFLICT")
    assert details == {"users": 1}
    await owner.http.delete(f"/api/admin/users/{target.user.id}/roles/{role['id']}")
    assert (await owner.http.delete(f"/api/admin/roles/{role['id']}")).status_code == 200


# --- tenants --------------------------------------------------------------------------------


async def test_a_tenants_roles_and_users_are_invisible_to_other_tenants(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant_a = await make_tenant(db, name="A")
    tenant_b = await make_tenant(db, name="B")
    owner_a = await member(tenant_a, "owner")
    owner_b = await member(tenant_b, "owner")
    user_b = await member(tenant_b, "customer")
    role_a = (await _create(owner_a.http, name="A only")).json()["data"]

    listed = (await owner_b.http.get("/api/admin/roles")).json()
    assert "A only" not in {role["name"] for role in listed["data"]}
    assert listed["pagination"]["total"] == len(BUILTIN_ROLES)
    url = f"/api/admin/roles/{role_a['id']}"
    _error(await owner_b.http.get(url), 404, "NOT_FOUND")
    _error(await owner_b.http.put(url, json={"name": "stolen"}), 404, "NOT_FOUND")
    _error(await owner_b.http.delete(url), 404, "NOT_FOUND")
    _error(
        await owner_b.http.post(
            f"/api/admin/users/{user_b.user.id}/roles", json={"roleId": role_a["id"]}
        ),
        404,
        "NOT_FOUND",
    )
    # B's user does not exist for A.
    customer_id = await _builtin_id(db, "customer")
    for response in (
        await owner_a.http.get(f"/api/admin/users/{user_b.user.id}/roles"),
        await owner_a.http.post(
            f"/api/admin/users/{user_b.user.id}/roles", json={"roleId": customer_id}
        ),
        await owner_a.http.delete(f"/api/admin/users/{user_b.user.id}/roles/{customer_id}"),
    ):
        assert _error(response, 404, "NOT_FOUND")["resource"] == "user"
    # The same name is free in another tenant.
    assert (await _create(owner_b.http, name="A only")).status_code == 201


# --- assigning roles ------------------------------------------------------------------------


async def test_assigning_and_removing_roles_changes_effective_permissions(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    owner = await member(tenant, "owner")
    target = await member(tenant, "customer")
    role = (await _create(owner.http, permissions=["ticket.read", "server.start"], rank=5)).json()[
        "data"
    ]
    assert await service.effective_permissions(db, target.user.id) == frozenset()
    await db.commit()

    url = f"/api/admin/users/{target.user.id}/roles"
    for _ in range(2):  # assigning twice is the same as once
        response = await owner.http.post(url, json={"roleId": role["id"]})
        assert response.status_code == 200, response.text
        assert [r["name"] for r in response.json()["data"]] == ["Server Manager", "customer"]
    assert (
        await db.scalar(
            select(func.count()).select_from(UserRole).where(UserRole.user_id == target.user.id)
        )
        == 2
    )
    assert await service.effective_permissions(db, target.user.id) == {
        "ticket.read",
        "server.start",
    }
    assert await service.role_names_for(db, target.user.id) == ["Server Manager", "customer"]
    await db.commit()

    listed = (await owner.http.get(url)).json()["data"]
    assert [r["id"] for r in listed] == [role["id"], await _builtin_id(db, "customer")]

    for _ in range(2):  # removing what is not held changes nothing
        removed = await owner.http.delete(f"{url}/{role['id']}")
        assert removed.status_code == 200
        assert [r["name"] for r in removed.json()["data"]] == ["customer"]
    assert await service.effective_permissions(db, target.user.id) == frozenset()
    await db.commit()


async def test_assigning_follows_the_permission_and_rank_rules(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    owner = await member(tenant, "owner")
    admin = await member(tenant, "admin")
    target = await member(tenant, "customer")
    url = f"/api/admin/users/{target.user.id}/roles"

    money = (
        await _create(owner.http, name="Cashier", permissions=["billing.write"], rank=10)
    ).json()["data"]
    missing = _error(await admin.http.post(url, json={"roleId": money["id"]}), 403, "FORBIDDEN")
    assert missing["missing"] == ["billing.write"]
    for name in ("admin", "country-admin", "owner"):
        _error(
            await admin.http.post(url, json={"roleId": await _builtin_id(db, name)}),
            403,
            "FORBIDDEN",
        )
    support = await admin.http.post(url, json={"roleId": await _builtin_id(db, "support")})
    assert support.status_code == 200
    assert await service.role_names_for(db, target.user.id) == ["customer", "support"]
    await db.commit()

    # Users ranked at or above the caller are not theirs to change.
    _error(
        await admin.http.delete(
            f"/api/admin/users/{owner.user.id}/roles/{await _builtin_id(db, 'owner')}"
        ),
        403,
        "FORBIDDEN",
    )
    _error(
        await admin.http.post(
            f"/api/admin/users/{owner.user.id}/roles",
            json={"roleId": await _builtin_id(db, "support")},
        ),
        403,
        "FORBIDDEN",
    )
    _error(
        await admin.http.post(url, json={"roleId": "01nosuchrole00000000000000"}), 404, "NOT_FOUND"
    )
    _error(await admin.http.post(url, json={}), 400, "VALIDATION_ERROR")
    customer = await member(tenant, "customer")
    _error(await customer.http.post(url, json={"roleId": money["id"]}), 403, "FORBIDDEN")


async def test_an_owner_makes_and_removes_other_owners_but_never_the_last(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    first = await member(tenant, "owner")
    second = await member(tenant, "admin")
    owner_id = await _builtin_id(db, "owner")

    last = await first.http.delete(f"/api/admin/users/{first.user.id}/roles/{owner_id}")
    assert _error(last, 409, "CONFLICT")["reason"] == "last_owner"

    promoted = await first.http.post(
        f"/api/admin/users/{second.user.id}/roles", json={"roleId": owner_id}
    )
    assert promoted.status_code == 200
    assert await service.role_names_for(db, second.user.id) == ["admin", "owner"]
    await db.commit()

    stepped_down = await first.http.delete(f"/api/admin/users/{first.user.id}/roles/{owner_id}")
    assert stepped_down.status_code == 200 and stepped_down.json()["data"] == []
    second_owner = Principal(
        kind="user",
        id=second.user.id,
        user_id=second.user.id,
        tenant_id=tenant.id,
        permissions=frozenset({"*"}),
    )
    assert await service.highest_rank(db, second.user.id) == 100
    await db.commit()
    with pytest.raises(Conflict):
        await service.revoke_role(db, second_owner, user_id=second.user.id, role_id=owner_id)
    await db.rollback()


async def test_another_tenants_owners_do_not_count(db: AsyncSession, member: MemberFactory) -> None:
    tenant_a = await make_tenant(db, name="A")
    tenant_b = await make_tenant(db, name="B")
    owner_a = await member(tenant_a, "owner")
    await member(tenant_b, "owner")
    owner_id = await _builtin_id(db, "owner")
    response = await owner_a.http.delete(f"/api/admin/users/{owner_a.user.id}/roles/{owner_id}")
    _error(response, 409, "CONFLICT")
    with pytest.raises(Conflict):
        await service.assert_not_last_owner(db, user_id=owner_a.user.id)
    await db.rollback()


async def test_two_owners_removed_at_once_leave_one(
    runtime: Runtime, db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    first = await member(tenant, "owner")
    second = await member(tenant, "owner")
    owner_id = await _builtin_id(db, "owner")
    async with runtime.sessions() as one, runtime.sessions() as two:
        await service.assert_not_last_owner(one, user_id=first.user.id)
        await one.execute(
            delete(UserRole).where(UserRole.user_id == first.user.id, UserRole.role_id == owner_id)
        )
        # The second removal must wait for the first to finish, then see it.
        racing = asyncio.create_task(service.assert_not_last_owner(two, user_id=second.user.id))
        await asyncio.sleep(0.3)
        assert not racing.done()
        await one.commit()
        with pytest.raises(LastOwner):
            await racing
        await two.rollback()
    assert await service.role_names_for(db, second.user.id) == ["owner"]
    await db.commit()


# --- for other domains ----------------------------------------------------------------------


async def test_roles_are_assigned_by_name_with_the_actors_authority(
    db: AsyncSession, member: MemberFactory
) -> None:
    tenant = await make_tenant(db)
    admin = await member(tenant, "admin")
    target = await member(tenant)
    await service.assign_role_as(
        db, actor=admin.principal, user_id=target.user.id, role_name="support"
    )
    owner = await member(tenant, "owner")
    custom = (await _create(owner.http, name="Night Shift", rank=5)).json()["data"]
    scope_to_tenant(db, tenant.id)
    try:
        await service.assign_role_as(
            db, actor=admin.principal, user_id=target.user.id, role_name="Night Shift"
        )
        with pytest.raises(ValidationFailed, match="Unknown role"):
            await service.assign_role_as(
                db, actor=admin.principal, user_id=target.user.id, role_name="Nobody"
            )
    finally:
        scope_to_tenant(db, None)
    held = await service.roles_by_user(db, [target.user.id, admin.user.id, owner.user.id])
    assert [role.name for role in held[target.user.id]] == ["support", "Night Shift"]
    assert held[target.user.id][1].id == custom["id"]
    assert [role.name for role in held[admin.user.id]] == ["admin"]
    assert await service.roles_by_user(db, []) == {}
    await db.rollback()
