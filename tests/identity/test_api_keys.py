"""API keys: issued once within the creator's rights, stored as hashes, revocable at once."""

import hashlib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, event, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import isoformat, shifted, utcnow
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.identity.api_keys import service
from hostplane.identity.api_keys.models import ApiKey
from hostplane.identity.api_keys.service import authenticate_api_key, effective_scopes
from hostplane.identity.roles.models import Role, UserRole
from hostplane.identity.roles.service import effective_permissions
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.users.models import User
from tests.conftest import ClientAs
from tests.support.auth import operator
from tests.support.factories import make_tenant, make_user

KEY_FORMAT = re.compile(r"hp_([a-z0-9]{8})_([a-z2-7]{52})")
ADMIN = "/api/admin/api-keys"
ACCOUNT = "/api/account/api-keys"


async def as_user(db: AsyncSession, user: User) -> Principal:
    """The caller a real login would resolve ``user`` to."""
    permissions = await effective_permissions(db, user.id)
    # End the read: a session holding an old snapshot cannot write later on SQLite.
    await db.commit()
    return Principal(
        kind="user",
        id=user.id,
        user_id=user.id,
        tenant_id=user.tenant_id,
        permissions=permissions,
        display_name=user.username,
    )


async def grant_role(db: AsyncSession, user: User, name: str, permissions: list[str]) -> Role:
    role = Role(tenant_id=user.tenant_id, name=name, permissions=permissions)
    db.add(role)
    await db.flush()
    db.add(UserRole(user_id=user.id, role_id=role.id))
    await db.commit()
    return role


async def authenticate(
    runtime: Runtime, key: str, *, ip: str | None = "198.51.100.10"
) -> Principal | None:
    # The way the authenticator calls it: its own read-only unit of work,
    # before any tenant is known.
    async with runtime.unit_of_work(read_only=True) as session:
        return await authenticate_api_key(session, key, ip=ip)


async def create_key(http: httpx.AsyncClient, url: str = ADMIN, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "Discord Bot")
    body.setdefault("scopes", ["user.read"])
    response = await http.post(url, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def reload(db: AsyncSession, key_id: str) -> ApiKey:
    await db.commit()  # a fresh snapshot: see what the app wrote
    api_key = await db.get(ApiKey, key_id, populate_existing=True)
    assert api_key is not None
    return api_key


@pytest.fixture
async def tenant(db: AsyncSession) -> Tenant:
    return await make_tenant(db)


@pytest.fixture
async def admin(db: AsyncSession, tenant: Tenant) -> User:
    return await make_user(db, tenant=tenant, role="owner")


@pytest.fixture
async def admin_http(client_as: ClientAs, db: AsyncSession, admin: User) -> httpx.AsyncClient:
    return await client_as(await as_user(db, admin))


async def test_the_key_is_shown_once_and_only_its_hash_is_stored(
    admin_http: httpx.AsyncClient, db: AsyncSession, admin: User
) -> None:
    response = await admin_http.post(ADMIN, json={"name": "Discord Bot", "scopes": ["user.read"]})
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    created = body["data"]
    key = created["key"]
    match = KEY_FORMAT.fullmatch(key)
    assert match is not None, key
    public_id, secret = match[1], match[2]
    assert created["prefix"] == f"hp_{public_id}" == key[:11]
    assert created["name"] == "Discord Bot" and created["scopes"] == ["user.read"]
    assert created["createdBy"] == admin.id and created["status"] == "active"
    assert created["createdAt"].endswith("Z")
    assert created["expiresAt"] is None and created["lastUsedAt"] is None
    assert created["revokedAt"] is None and created["allowedIps"] == []

    for url in (ADMIN, ADMIN, ACCOUNT):
        listing = await admin_http.get(url)
        assert listing.status_code == 200
        (item,) = listing.json()["data"]
        assert item["id"] == created["id"] and item["prefix"] == created["prefix"]
        assert "key" not in item and "secretHash" not in item
        assert secret not in listing.text

    row = await reload(db, created["id"])
    assert row.public_id == public_id
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(getattr(row, column.key)) for column in ApiKey.__table__.columns]
    assert not any(secret in value or key in value for value in stored)


async def test_keys_are_listed_newest_first_with_pagination_and_status(
    admin_http: httpx.AsyncClient,
) -> None:
    first = await create_key(admin_http, name="one")
    second = await create_key(admin_http, name="two")
    third = await create_key(admin_http, name="three")
    await admin_http.delete(f"{ADMIN}/{second['id']}")

    body = (await admin_http.get(ADMIN, params={"status": "all"})).json()
    assert [item["id"] for item in body["data"]] == [third["id"], second["id"], first["id"]]
    assert body["pagination"] == {"page": 1, "limit": 20, "total": 3, "pages": 1}
    paged = (await admin_http.get(ADMIN, params={"limit": 2, "page": 2, "status": "all"})).json()
    assert [item["id"] for item in paged["data"]] == [first["id"]]
    assert paged["pagination"] == {"page": 2, "limit": 2, "total": 3, "pages": 2}

    # QeinTech's admin list: active keys unless asked otherwise.
    default = (await admin_http.get(ADMIN)).json()["data"]
    assert [item["id"] for item in default] == [third["id"], first["id"]]
    active = (await admin_http.get(ADMIN, params={"status": "active"})).json()["data"]
    assert [item["id"] for item in active] == [third["id"], first["id"]]
    revoked = (await admin_http.get(ADMIN, params={"status": "revoked"})).json()["data"]
    assert [(item["id"], item["status"]) for item in revoked] == [(second["id"], "revoked")]
    bad = await admin_http.get(ADMIN, params={"status": "exploded"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_scopes_must_be_covered_by_the_creators_permissions(
    client_as: ClientAs, admin_http: httpx.AsyncClient, db: AsyncSession, tenant: Tenant
) -> None:
    user = await make_user(db, tenant=tenant, role="customer")
    await grant_role(db, user, "operator", ["server.*", "user.read"])
    http = await client_as(await as_user(db, user))

    # Wildcards cover: "server.*" may grant "server.start" and "server.*" itself.
    # Scopes come back deduplicated in catalogue order.
    ok = await create_key(
        http, ACCOUNT, scopes=["server.start", "server.*", "user.read", "server.start"]
    )
    assert ok["scopes"] == ["server.*", "server.start", "user.read"]

    refused = await http.post(
        ACCOUNT,
        json={"name": "too much", "scopes": ["server.start", "billing.read", "tenant.*", "*"]},
    )
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "FORBIDDEN"
    assert error["details"]["missing"] == ["*", "billing.read", "tenant.*"]
    assert "billing.read" in error["message"]

    # A creator holding "*" may grant anything, "*" included.
    assert (await create_key(admin_http, scopes=["*"]))["scopes"] == ["*"]


async def test_a_customer_may_scope_a_key_to_what_they_hold_on_their_own_servers(
    client_as: ClientAs, db: AsyncSession, runtime: Runtime, tenant: Tenant
) -> None:
    customer = await make_user(db, tenant=tenant, role="customer")
    http = await client_as(await as_user(db, customer))
    # Server-level permissions: every user holds them on the servers they own.
    created = await create_key(http, ACCOUNT, scopes=["server.start", "file.*", "control.*"])
    principal = await authenticate(runtime, created["key"])
    assert principal is not None
    assert principal.permissions == frozenset(), "no global rights: the roles grant none"
    assert principal.scopes == {"server.start", "file.*", "control.*"}
    assert principal.within_scopes("file.read") and not principal.within_scopes("server.stop")

    # Global powers still need a role: "server.*" covers server.create and server.suspend.
    for scopes in (["user.read"], ["server.*"], ["*"]):
        refused = await http.post(ACCOUNT, json={"name": "bot", "scopes": scopes})
        assert refused.status_code == 403, scopes
        assert refused.json()["error"]["details"]["missing"] == scopes


@pytest.mark.parametrize(
    "scopes",
    [
        [""],
        ["Server.Start"],
        ["server..start"],
        ["server.start."],
        ["ser*ver"],
        ["server.*.read"],
        [".*"],
        ["nosuch.permission"],
        ["server.read", "drop table;"],
        [],
    ],
)
async def test_unknown_or_malformed_scopes_are_validation_errors(
    admin_http: httpx.AsyncClient, scopes: list[str]
) -> None:
    response = await admin_http.post(ADMIN, json={"name": "bot", "scopes": scopes})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert {field["field"].split(".")[0] for field in error["details"]["fields"]} == {"scopes"}


async def test_name_and_body_are_validated(admin_http: httpx.AsyncClient) -> None:
    for body in (
        {"name": "   ", "scopes": ["user.read"]},
        {"name": "x" * 101, "scopes": ["user.read"]},
        {"scopes": ["user.read"]},
        {"name": "bot", "scopes": ["user.read"], "owner": "someone-else"},
    ):
        response = await admin_http.post(ADMIN, json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_an_expiry_must_be_in_the_future_and_ends_the_key(
    admin_http: httpx.AsyncClient, runtime: Runtime
) -> None:
    past = await admin_http.post(
        ADMIN,
        json={
            "name": "bot",
            "scopes": ["user.read"],
            "expiresAt": isoformat(utcnow() - timedelta(minutes=1)),
        },
    )
    assert past.status_code == 400 and past.json()["error"]["code"] == "VALIDATION_ERROR"
    assert past.json()["error"]["details"]["fields"][0]["field"] == "expiresAt"
    naive = await admin_http.post(
        ADMIN, json={"name": "bot", "scopes": ["user.read"], "expiresAt": "2099-01-01T00:00:00"}
    )
    assert naive.status_code == 400, "a time without a zone is ambiguous"

    expires = utcnow() + timedelta(hours=1)
    # Any zone is accepted; the key shows its expiry in UTC.
    in_paris = expires.astimezone(timezone(timedelta(hours=1)))
    created = await create_key(admin_http, expiresAt=in_paris.isoformat())
    assert created["expiresAt"].endswith("Z")
    assert datetime.fromisoformat(created["expiresAt"]) == expires
    assert await authenticate(runtime, created["key"]) is not None
    with shifted(timedelta(hours=1, seconds=1)):
        assert await authenticate(runtime, created["key"]) is None
        listed = (await admin_http.get(ADMIN, params={"status": "all"})).json()["data"][0]
        assert listed["status"] == "expired"
        expired = (await admin_http.get(ADMIN, params={"status": "expired"})).json()["data"]
        assert [item["id"] for item in expired] == [created["id"]]


async def test_the_ip_allowlist_admits_listed_addresses_and_networks_only(
    admin_http: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = await create_key(
        admin_http,
        allowedIps=["203.0.113.7", "10.0.0.0/8", "2001:DB8::/32", "2001:0db8:0:0::1", "10.0.0.0/8"],
    )
    # Normalised and de-duplicated.
    assert created["allowedIps"] == ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "2001:db8::1"]
    key = created["key"]
    for ip in ("203.0.113.7", "10.200.3.4", "2001:db8:ffff::1", "::ffff:10.1.2.3"):
        assert await authenticate(runtime, key, ip=ip) is not None, ip
    for ip in ("203.0.113.8", "11.0.0.1", "2001:db9::1", "::1", "not-an-ip", None):
        assert await authenticate(runtime, key, ip=ip) is None, ip

    anywhere = await create_key(admin_http)
    assert await authenticate(runtime, anywhere["key"], ip=None) is not None


async def test_invalid_allowlist_entries_are_validation_errors(
    admin_http: httpx.AsyncClient,
) -> None:
    response = await admin_http.post(
        ADMIN,
        json={
            "name": "bot",
            "scopes": ["user.read"],
            "allowedIps": ["10.0.0.1", "300.1.1.1", "10.0.0.5/8", "2001:db8::/200", ""],
        },
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    fields = {item["field"]: item["message"] for item in error["details"]["fields"]}
    assert set(fields) == {"allowedIps.1", "allowedIps.2", "allowedIps.3", "allowedIps.4"}
    assert "10.0.0.0/8" in fields["allowedIps.2"], "says which network was meant"


async def test_a_key_authenticates_as_its_creator_within_its_scopes(
    client_as: ClientAs, db: AsyncSession, runtime: Runtime, tenant: Tenant
) -> None:
    user = await make_user(db, tenant=tenant, role="customer")
    await grant_role(db, user, "operator", ["server.*", "file.read"])
    http = await client_as(await as_user(db, user))
    created = await create_key(http, ACCOUNT, name="deploy bot", scopes=["server.start"])

    principal = await authenticate(runtime, created["key"])
    assert principal == Principal(
        kind="api_key",
        id=created["id"],
        tenant_id=tenant.id,
        permissions=frozenset({"server.start"}),
        display_name="deploy bot",
        user_id=user.id,
        scopes=frozenset({"server.start"}),
    )
    assert principal.has("server.start") and not principal.has("server.stop")


async def test_malformed_unknown_and_wrong_keys_are_refused(
    admin_http: httpx.AsyncClient, runtime: Runtime
) -> None:
    key = (await create_key(admin_http))["key"]
    public_id, secret = key[3:11], key[12:]
    wrong_secret = f"hp_{public_id}_{'a' * 52}"
    unknown_id = f"hp_{'0' * 8}_{secret}"
    for candidate in (
        "",
        "hp_",
        "hp_short_secret",
        f"hp_{public_id}",
        f"hp_{public_id}_",
        f"{key}a",
        key[:-1],
        key.upper(),
        f" {key}",
        f"xx_{public_id}_{secret}",
        wrong_secret,
        unknown_id,
    ):
        assert await authenticate(runtime, candidate) is None, candidate
    assert await authenticate(runtime, key) is not None


async def test_revocation_applies_to_the_very_next_request(
    admin_http: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    created = await create_key(admin_http)
    # The same session before and after: nothing it remembers may keep the key alive.
    await db.commit()
    assert await authenticate_api_key(db, created["key"], ip=None) is not None
    await db.commit()

    revoked = await admin_http.delete(f"{ADMIN}/{created['id']}")
    assert revoked.status_code == 200
    data = revoked.json()["data"]
    assert data["status"] == "revoked" and data["revokedAt"] is not None
    await db.commit()
    assert await authenticate_api_key(db, created["key"], ip=None) is None
    assert await authenticate(runtime, created["key"]) is None

    again = await admin_http.delete(f"{ADMIN}/{created['id']}")
    assert again.status_code == 200 and again.json()["data"]["revokedAt"] == data["revokedAt"]
    missing = await admin_http.delete(f"{ADMIN}/01nosuchkey000000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


async def test_a_banned_or_deleted_creator_stops_their_keys(
    client_as: ClientAs,
    admin_http: httpx.AsyncClient,
    db: AsyncSession,
    runtime: Runtime,
    tenant: Tenant,
) -> None:
    user = await make_user(db, tenant=tenant, role="owner")
    http = await client_as(await as_user(db, user))
    created = await create_key(http, ACCOUNT)
    assert await authenticate(runtime, created["key"]) is not None

    user.status = "banned"
    await db.commit()
    assert await authenticate(runtime, created["key"]) is None
    refused = await http.post(ACCOUNT, json={"name": "again", "scopes": ["user.read"]})
    assert refused.status_code == 403, "a banned account cannot issue keys either"

    user.status = "active"
    await db.commit()
    assert await authenticate(runtime, created["key"]) is not None

    await db.execute(delete(User).where(User.id == user.id))
    await db.commit()
    assert await authenticate(runtime, created["key"]) is None
    listed = (await admin_http.get(ADMIN)).json()["data"]
    assert [(item["id"], item["createdBy"]) for item in listed] == [(created["id"], None)]


async def test_a_key_follows_its_creators_current_permissions(
    client_as: ClientAs, db: AsyncSession, runtime: Runtime, tenant: Tenant
) -> None:
    user = await make_user(db, tenant=tenant, role="customer")
    await grant_role(db, user, "operator", ["server.*", "file.read"])
    billing = await grant_role(db, user, "billing", ["billing.read"])
    http = await client_as(await as_user(db, user))
    created = await create_key(http, ACCOUNT, scopes=["server.start", "billing.read", "file.read"])
    principal = await authenticate(runtime, created["key"])
    assert principal is not None
    assert principal.permissions == {"server.start", "billing.read", "file.read"}

    # Taking a role away narrows the key on its next use.
    await db.execute(
        delete(UserRole).where(UserRole.user_id == user.id, UserRole.role_id == billing.id)
    )
    await db.commit()
    principal = await authenticate(runtime, created["key"])
    assert principal is not None and principal.permissions == {"server.start", "file.read"}

    # Gaining rights never widens a key beyond its scopes.
    await grant_role(db, user, "everything", ["*"])
    principal = await authenticate(runtime, created["key"])
    assert principal is not None
    assert principal.permissions == {"server.start", "billing.read", "file.read"}


@pytest.mark.parametrize(
    ("scopes", "granted", "expected"),
    [
        (["server.*"], ["server.start", "file.read"], {"server.start"}),
        (["server.start"], ["*"], {"server.start"}),
        (["*"], ["server.*"], {"server.*"}),
        (["*"], ["*"], {"*"}),
        (["server.*"], ["server.*"], {"server.*"}),
        (["server.files.*"], ["server.*"], {"server.files.*"}),
        (
            ["server.*"],
            ["server.files.*", "server.start", "node.read"],
            {"server.files.*", "server.start"},
        ),
        (["server.start", "server.*"], ["*"], {"server.*"}),
        (["*", "server.start"], ["server.start", "file.read"], {"server.start", "file.read"}),
        (["server.start", "file.read"], ["server.*", "file.*"], {"server.start", "file.read"}),
        (["server.start"], ["server.stop"], set()),
        (["server.*"], ["server"], set()),
        (["server.*"], ["serverless.start"], set()),
        (["server.start"], ["server.start.*"], set()),
        ([], ["*"], set()),
        (["file.read"], [], set()),
    ],
)
def test_effective_scopes_intersects_with_wildcards(
    scopes: list[str], granted: list[str], expected: set[str]
) -> None:
    assert effective_scopes(scopes, granted) == expected
    # Whatever the intersection holds is covered by both sides.
    result = Principal(kind="api_key", permissions=effective_scopes(scopes, granted))
    for permission in result.permissions:
        assert Principal(kind="user", permissions=frozenset(scopes)).has(permission)
        assert Principal(kind="user", permissions=frozenset(granted)).has(permission)


async def test_account_keys_are_the_callers_own(
    client_as: ClientAs, admin_http: httpx.AsyncClient, db: AsyncSession, tenant: Tenant
) -> None:
    alice = await make_user(db, tenant=tenant, role="owner")
    bob = await make_user(db, tenant=tenant, role="owner")
    alice_http = await client_as(await as_user(db, alice))
    bob_http = await client_as(await as_user(db, bob))
    alices = await create_key(alice_http, ACCOUNT, name="alice's")
    bobs = await create_key(bob_http, ACCOUNT, name="bob's")

    mine = (await bob_http.get(ACCOUNT)).json()
    assert [item["id"] for item in mine["data"]] == [bobs["id"]]
    assert mine["pagination"]["total"] == 1
    stolen = await bob_http.delete(f"{ACCOUNT}/{alices['id']}")
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "NOT_FOUND"
    assert (await alice_http.get(ACCOUNT)).json()["data"][0]["revokedAt"] is None

    own = await alice_http.delete(f"{ACCOUNT}/{alices['id']}")
    assert own.status_code == 200 and own.json()["data"]["status"] == "revoked"

    # The tenant's operators see (and can revoke) everyone's.
    everyone = (await admin_http.get(ADMIN, params={"status": "all"})).json()["data"]
    assert {item["id"] for item in everyone} == {alices["id"], bobs["id"]}


async def test_another_tenants_keys_are_invisible_and_irrevocable(
    client_as: ClientAs, admin_http: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    other = await make_tenant(db, name="Other Hosting")
    other_admin = await make_user(db, tenant=other, role="owner")
    other_http = await client_as(await as_user(db, other_admin))
    theirs = await create_key(other_http, name="theirs")
    ours = await create_key(admin_http, name="ours")

    listed = (await admin_http.get(ADMIN)).json()
    assert [item["id"] for item in listed["data"]] == [ours["id"]]
    assert listed["pagination"]["total"] == 1
    for url in (f"{ADMIN}/{theirs['id']}", f"{ACCOUNT}/{theirs['id']}"):
        response = await admin_http.delete(url)
        assert response.status_code == 404, url

    principal = await authenticate(runtime, theirs["key"])
    assert principal is not None and principal.tenant_id == other.id
    assert principal.user_id == other_admin.id
    assert [item["id"] for item in (await other_http.get(ADMIN)).json()["data"]] == [theirs["id"]]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", ADMIN),
        ("POST", ADMIN),
        ("DELETE", f"{ADMIN}/01nosuchkey000000000000000"),
        ("GET", ACCOUNT),
        ("POST", ACCOUNT),
        ("DELETE", f"{ACCOUNT}/01nosuchkey000000000000000"),
    ],
)
async def test_anonymous_callers_are_refused(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    body = {"name": "bot", "scopes": ["user.read"]} if method == "POST" else None
    response = await client.request(method, url, json=body)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    ("method", "url", "permission"),
    [
        ("GET", ADMIN, "api-key.read"),
        ("POST", ADMIN, "api-key.create"),
        ("DELETE", f"{ADMIN}/01nosuchkey000000000000000", "api-key.revoke"),
    ],
)
async def test_admin_routes_need_their_permission(
    client_as: ClientAs, tenant: Tenant, method: str, url: str, permission: str
) -> None:
    others = [p for p in ("api-key.read", "api-key.create", "api-key.revoke") if p != permission]
    http = await client_as(operator(tenant.id, "server.*", *others))
    body = {"name": "bot", "scopes": ["server.start"]} if method == "POST" else None
    response = await http.request(method, url, json=body)
    assert response.status_code == 403
    assert response.json()["error"]["details"] == {"permission": permission}


async def test_an_api_key_cannot_mint_api_keys(
    client_as: ClientAs, admin_http: httpx.AsyncClient, admin: User, runtime: Runtime
) -> None:
    created = await create_key(admin_http, scopes=["*"])
    key_principal = await authenticate(runtime, created["key"])
    assert key_principal is not None and key_principal.has("api-key.create")
    http = await client_as(key_principal)

    for url in (ADMIN, ACCOUNT):
        response = await http.post(url, json={"name": "child", "scopes": ["user.read"]})
        assert response.status_code == 403, url
        assert response.json()["error"]["code"] == "FORBIDDEN"
    assert (await http.get(ACCOUNT)).status_code == 403
    assert (await http.delete(f"{ACCOUNT}/{created['id']}")).status_code == 403
    # Reading and revoking the tenant's keys is within a scoped key's reach.
    assert (await http.get(ADMIN)).status_code == 200

    # Nor can a caller that is not a user (a test operator has no account).
    nobody = await client_as(operator(admin.tenant_id))
    response = await nobody.post(ADMIN, json={"name": "bot", "scopes": ["user.read"]})
    assert response.status_code == 403


async def test_last_used_at_is_written_at_most_once_a_minute(
    admin_http: httpx.AsyncClient, db: AsyncSession, runtime: Runtime
) -> None:
    created = await create_key(admin_http)
    updates: list[str] = []

    def count_updates(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            updates.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", count_updates)
    try:
        assert await authenticate(runtime, created["key"]) is not None
        first = (await reload(db, created["id"])).last_used_at
        assert first is not None and abs(first - utcnow()) < timedelta(seconds=5)
        for _ in range(5):
            assert await authenticate(runtime, created["key"]) is not None
        assert len(updates) == 1, "a busy key writes once, not on every request"
        assert (await reload(db, created["id"])).last_used_at == first

        with shifted(timedelta(seconds=61)):
            assert await authenticate(runtime, created["key"]) is not None
            later = (await reload(db, created["id"])).last_used_at
        assert len(updates) == 2
        assert later is not None and later - first >= timedelta(seconds=60)
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", count_updates)

    listed = (await admin_http.get(ADMIN)).json()["data"][0]
    assert datetime.fromisoformat(listed["lastUsedAt"]) == later


async def test_a_use_that_cannot_be_recorded_still_authenticates(
    admin_http: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = await create_key(admin_http)
    async with runtime.unit_of_work(read_only=True) as session:
        await session.scalar(select(ApiKey.id).limit(1))  # the transaction takes its snapshot
        # Another connection writes meanwhile: SQLite now refuses to turn this
        # read transaction into a write one, so last_used_at cannot be recorded.
        await create_key(admin_http, name="meanwhile")
        principal = await authenticate_api_key(session, created["key"], ip=None)
        assert principal is not None and principal.id == created["id"]
        # The caller's transaction is still usable afterwards.
        assert len((await session.scalars(select(ApiKey.id))).all()) >= 1


async def test_a_public_id_already_taken_is_drawn_again(
    admin_http: httpx.AsyncClient, db: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws: Iterator[str] = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(service, "_new_public_id", lambda: next(draws))
    first = await create_key(admin_http, name="first")
    second = await create_key(admin_http, name="second")
    assert (first["prefix"], second["prefix"]) == ("hp_aaaaaaaa", "hp_bbbbbbbb")
    await db.commit()
    rows = (await db.scalars(select(ApiKey.public_id).order_by(ApiKey.id))).all()
    assert rows == ["aaaaaaaa", "bbbbbbbb"]
