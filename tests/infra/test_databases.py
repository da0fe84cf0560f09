"""Server databases on a real MariaDB and a real PostgreSQL: hosts, create, connect with
the returned credentials, rotate, isolation between servers, limits, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pymysql
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.infra.databases.models import DatabaseHost, ServerDatabase
from hostplane.infra.databases.service import short_id
from hostplane.infra.servers.models import Server
from hostplane.platform.jobs.worker import Worker
from tests.infra.conftest import Fleet
from tests.support.database_hosts import (
    HostLogin,
    mariadb_cleanup,
    mariadb_connect,
    pg_connect,
    private_postgres,
    require_mariadb,
)
from tests.support.identity import LoggedIn, logged_in
from tests.support.infra import make_node, make_server
from tests.support.services import missing_service

HOSTS = "/api/admin/database-hosts"
FIELDS = {"id", "name", "username", "password", "host", "port", "hostId", "hostName", "createdAt"}


@pytest.fixture(scope="session")
def _postgres_host() -> Iterator[HostLogin | str]:
    with private_postgres() as found:
        yield found


@pytest.fixture(params=["mariadb", "postgresql"])
async def login(request: pytest.FixtureRequest) -> HostLogin:
    if request.param == "mariadb":
        return await require_mariadb()
    found = request.getfixturevalue("_postgres_host")
    if isinstance(found, str):
        missing_service("PostgreSQL", found)
    assert isinstance(found, HostLogin)
    return found


@dataclass
class Site:
    client: httpx.AsyncClient
    db: AsyncSession
    fleet: Fleet
    login: HostLogin
    host_id: str = ""
    prefixes: list[str] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        return self.fleet.admin.headers

    async def server(self, owner: LoggedIn, *, limit: int = 5, **values: Any) -> Server:
        made = await make_server(
            self.db,
            tenant=self.fleet.tenant,
            owner=owner.user,
            node=values.pop("node", self.fleet.node),
            template=self.fleet.template,
            database_limit=limit,
            **values,
        )
        self.prefixes.append(short_id(made))
        return made

    async def create(
        self, server: Server, name: str, headers: dict[str, str], host_id: str | None = None
    ) -> httpx.Response:
        return await self.client.post(
            f"/api/servers/{server.id}/databases",
            json={"hostId": host_id or self.host_id, "name": name},
            headers=headers,
        )


@pytest.fixture
async def site(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet, login: HostLogin
) -> AsyncIterator[Site]:
    made = Site(client, db, fleet, login)
    response = await client.post(HOSTS, json=login.body(f"{login.engine}-main"), headers=made.admin)
    assert response.status_code == 201, response.text
    made.host_id = response.json()["data"]["id"]
    made.prefixes.append(short_id(fleet.server))
    try:
        yield made
    finally:
        if login.engine == "mariadb":
            await mariadb_cleanup(login, made.prefixes)


# --- what a customer does with the credentials ----------------------------------------------


async def use(login: HostLogin, data: dict[str, Any], *, password: str | None = None) -> list[Any]:
    """Connect as the database's user, create a table, write and read a row."""
    secret = password or data["password"]
    if login.engine == "mariadb":
        connection = await mariadb_connect(
            login, user=data["username"], password=secret, db=data["name"]
        )
        try:
            async with connection.cursor() as cursor:
                await cursor.execute("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY)")
                await cursor.execute("REPLACE INTO t VALUES (1)")
                await cursor.execute("SELECT id FROM t")
                return list(await cursor.fetchall())
        finally:
            connection.close()
    pg = await pg_connect(login, user=data["username"], password=secret, db=data["name"])
    try:
        await pg.execute("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY)")
        await pg.execute("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING")
        return [tuple(r) for r in await pg.fetch("SELECT id FROM t")]
    finally:
        await pg.close()


async def refused(login: HostLogin, user: str, password: str, database: str) -> str:
    """The host's refusal when ``user`` opens ``database`` (fails the test if it lets them in)."""
    try:
        if login.engine == "mariadb":
            connection = await mariadb_connect(login, user=user, password=password, db=database)
            connection.close()
        else:
            pg = await pg_connect(login, user=user, password=password, db=database)
            await pg.close()
    except (pymysql.err.MySQLError, asyncpg.PostgresError) as exc:
        return str(exc)
    pytest.fail(f"{user} could open {database}")


async def exists_on_host(login: HostLogin, name: str) -> bool:
    if login.engine == "mariadb":
        connection = await mariadb_connect(login)
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(
                    "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,)
                )
                return bool(await cursor.fetchall())
        finally:
            connection.close()
    pg = await pg_connect(login, user=login.username, password=login.password, db="postgres")
    try:
        return bool(await pg.fetch("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await pg.close()


async def as_admin(login: HostLogin, mariadb: str, postgresql: str) -> None:
    """Run one statement as the host's administrative user."""
    if login.engine == "mariadb":
        connection = await mariadb_connect(login)
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(mariadb)
        finally:
            connection.close()
        return
    pg = await pg_connect(login, user=login.username, password=login.password, db="postgres")
    try:
        await pg.execute(postgresql)
    finally:
        await pg.close()


# --- tests --------------------------------------------------------------------------------------


async def test_create_connect_rotate_delete(site: Site) -> None:
    owner = site.fleet.owner.headers
    server = site.fleet.server
    await site.db.execute(update(Server).where(Server.id == server.id).values(database_limit=2))
    await site.db.commit()
    created = await site.create(server, "app_data", owner)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert set(data) == FIELDS
    assert data["name"] == f"s{short_id(server)}_app_data"
    assert data["username"].startswith(f"u{short_id(server)}_") and len(data["username"]) <= 32
    assert len(data["password"]) >= 32
    assert (data["host"], data["port"], data["hostId"]) == (
        site.login.host,
        site.login.port,
        site.host_id,
    )
    assert data["hostName"] == f"{site.login.engine}-main"
    assert await use(site.login, data) == [(1,)]

    listed = await site.client.get(f"/api/servers/{server.id}/databases", headers=owner)
    assert listed.status_code == 200
    assert listed.json()["data"] == [data]

    # An open session of the old password is ended by the rotation.
    if site.login.engine == "mariadb":
        open_session: Any = await mariadb_connect(
            site.login, user=data["username"], password=data["password"], db=data["name"]
        )
    else:
        open_session = await pg_connect(
            site.login, user=data["username"], password=data["password"], db=data["name"]
        )
    rotated = await site.client.post(
        f"/api/servers/{server.id}/databases/{data['id']}/rotate", headers=owner
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]
    assert new["password"] != data["password"] and new | {"password": 0} == data | {"password": 0}
    await refused(site.login, data["username"], data["password"], data["name"])
    assert await use(site.login, new) == [(1,)]  # the table is still there
    if site.login.engine == "mariadb":
        with pytest.raises(pymysql.err.MySQLError):
            async with open_session.cursor() as cursor:
                await cursor.execute("SELECT 1")
        open_session.close()
    else:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await open_session.fetch("SELECT 1")
        open_session.terminate()

    deleted = await site.client.delete(
        f"/api/servers/{server.id}/databases/{data['id']}", headers=owner
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["success"] is True
    assert not await exists_on_host(site.login, data["name"])
    await refused(site.login, data["username"], new["password"], data["name"])
    assert (await site.client.get(f"/api/servers/{server.id}/databases", headers=owner)).json()[
        "data"
    ] == []


async def test_one_servers_user_cannot_open_anothers_database(site: Site) -> None:
    mine = await site.server(site.fleet.owner)
    theirs = await site.server(site.fleet.other)
    a = (await site.create(mine, "shop", site.fleet.owner.headers)).json()["data"]
    b = (await site.create(theirs, "shop", site.fleet.other.headers)).json()["data"]
    assert a["name"] != b["name"]  # the same requested name, prefixed per server
    assert await use(site.login, a) == [(1,)]
    assert await use(site.login, b) == [(1,)]
    reason = await refused(site.login, a["username"], a["password"], b["name"])
    assert "denied" in reason.lower() or "permission" in reason.lower(), reason
    # Nor may its owner reach it through the panel.
    path = f"/api/servers/{theirs.id}/databases"
    assert (await site.client.get(path, headers=site.fleet.owner.headers)).status_code == 404
    rotate = await site.client.post(f"{path}/{b['id']}/rotate", headers=site.fleet.owner.headers)
    assert rotate.status_code == 404
    mine_path = f"/api/servers/{mine.id}/databases/{b['id']}/rotate"
    wrong_server = await site.client.post(mine_path, headers=site.fleet.owner.headers)
    assert wrong_server.status_code == 404


async def test_limits(site: Site) -> None:
    owner = site.fleet.owner
    none_allowed = await site.server(owner, limit=0)
    refused_ = await site.create(none_allowed, "a", owner.headers)
    assert refused_.status_code == 409
    assert refused_.json()["error"]["code"] == "DATABASE_LIMIT_REACHED"
    # The operator raises it; the owner may not.
    path = f"/api/servers/{none_allowed.id}"
    own = await site.client.put(path, json={"databaseLimit": 5}, headers=owner.headers)
    assert own.status_code == 403
    raised = await site.client.put(path, json={"databaseLimit": 1}, headers=site.admin)
    assert raised.status_code == 200, raised.text
    assert raised.json()["data"]["databaseLimit"] == 1
    assert (await site.create(none_allowed, "a", owner.headers)).status_code == 201
    assert (await site.create(none_allowed, "b", owner.headers)).status_code == 409

    # The host's maxDatabases: it holds one now.
    host = f"{HOSTS}/{site.host_id}"
    full = await site.client.put(host, json={"maxDatabases": 1}, headers=site.admin)
    assert full.status_code == 200 and full.json()["data"]["databaseCount"] == 1
    other = await site.server(owner, limit=3)
    at_max = await site.create(other, "c", owner.headers)
    assert at_max.status_code == 409 and "full" in at_max.json()["error"]["message"]


async def test_bad_input_and_conflicts(site: Site) -> None:
    owner = site.fleet.owner.headers
    server = await site.server(site.fleet.owner)
    for name in ["Bad-Name", "x" * 49, "", "a;drop"]:
        response = await site.create(server, name, owner)
        assert response.status_code == 400, (name, response.text)
    unknown = await site.create(server, "ok", owner, host_id="01nosuchhost0000000000000")
    assert unknown.status_code == 400 and unknown.json()["error"]["details"]["hostId"]
    assert (await site.create(server, "dup", owner)).status_code == 201
    again = await site.create(server, "dup", owner)
    assert again.status_code == 409
    # A database the panel does not know about, already on the host.
    stray = f"s{short_id(server)}_stray"
    if site.login.engine == "mariadb":
        connection = await mariadb_connect(site.login)
        async with connection.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE `{stray}`")
        connection.close()
    else:
        pg = await pg_connect(
            site.login, user=site.login.username, password=site.login.password, db="postgres"
        )
        await pg.execute(f'CREATE DATABASE "{stray}"')
        await pg.close()
    on_host = await site.create(server, "stray", owner)
    assert on_host.status_code == 409, on_host.text
    assert await exists_on_host(site.login, stray)  # not dropped by the refusal
    rows = (await site.db.scalars(select(ServerDatabase.name))).all()
    assert stray not in rows


async def test_unavailable_host_leaves_nothing_behind(site: Site, db: AsyncSession) -> None:
    owner = site.fleet.owner.headers
    server = await site.server(site.fleet.owner)
    made = (await site.create(server, "kept", owner)).json()["data"]
    # The host moves away (as if it were down): nothing answers on port 9.
    await db.execute(update(DatabaseHost).where(DatabaseHost.id == site.host_id).values(port=9))
    await db.commit()
    down = await site.create(server, "lost", owner)
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "DATABASE_HOST_UNAVAILABLE"
    assert "unreachable" in down.json()["error"]["message"]
    names = (await db.scalars(select(ServerDatabase.name))).all()
    assert names == [made["name"]]
    path = f"/api/servers/{server.id}/databases/{made['id']}"
    assert (await site.client.post(f"{path}/rotate", headers=owner)).status_code == 503
    assert (await site.client.delete(path, headers=owner)).status_code == 503
    await db.execute(
        update(DatabaseHost).where(DatabaseHost.id == site.host_id).values(port=site.login.port)
    )
    await db.commit()
    # Nothing changed while it was away: the first password still works.
    assert await use(site.login, made) == [(1,)]


async def test_permissions_and_subusers(
    site: Site, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    from hostplane.core.db.tenancy import scope_to_tenant
    from hostplane.identity.access import service as access

    server = site.fleet.server
    await db.execute(update(Server).where(Server.id == server.id).values(database_limit=3))
    await db.commit()
    helper = await logged_in(client, db, tenant=site.fleet.tenant)
    scope_to_tenant(db, site.fleet.tenant.id)
    await access.set_grant(
        db,
        resource_type="server",
        resource_id=server.id,
        user_id=helper.user.id,
        permissions=["database.read", "database.create"],
        granted_by=site.fleet.owner.user.id,
    )
    await db.commit()
    scope_to_tenant(db, None)
    made = await site.create(server, "helper_db", helper.headers)
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    path = f"/api/servers/{server.id}/databases"
    assert (await client.get(path, headers=helper.headers)).json()["data"] == [data]
    assert (
        await client.post(f"{path}/{data['id']}/rotate", headers=helper.headers)
    ).status_code == 403
    assert (await client.delete(f"{path}/{data['id']}", headers=helper.headers)).status_code == 403
    assert (await client.get(path, headers=site.fleet.other.headers)).status_code == 404
    assert (await client.get(path, headers=site.admin)).status_code == 200


async def test_deleting_a_server_drops_its_databases(
    site: Site, runtime: Runtime, db: AsyncSession
) -> None:
    node, _ = await make_node(db, tenant=site.fleet.tenant, online=False, port_range=(31000, 31009))
    server = await site.server(site.fleet.owner, node=node)
    server_id = server.id
    owner = site.fleet.owner.headers
    first = (await site.create(server, "one", owner)).json()["data"]
    second = (await site.create(server, "two", owner)).json()["data"]
    # The host is down when the server goes: the leftover is recorded and retried.
    await db.execute(update(DatabaseHost).where(DatabaseHost.id == site.host_id).values(port=9))
    await db.commit()
    deleted = await site.client.delete(f"/api/servers/{server_id}", headers=owner)
    assert deleted.status_code in (200, 202), deleted.text
    await Worker(runtime).run_until_idle()
    db.expire_all()
    rows = (
        await db.scalars(select(ServerDatabase).where(ServerDatabase.server_id == server_id))
    ).all()
    assert {r.status for r in rows} == {"deleting"} and len(rows) == 2
    assert all("unreachable" in (r.last_error or "") for r in rows)
    await db.execute(
        update(DatabaseHost).where(DatabaseHost.id == site.host_id).values(port=site.login.port)
    )
    await db.commit()
    from hostplane.platform.jobs.models import Job

    await db.execute(
        update(Job).where(Job.type == "databases.drop_server").values(run_at=Job.created_at)
    )
    await db.commit()
    await Worker(runtime).run_until_idle()
    db.expire_all()
    left = (
        await db.scalars(select(ServerDatabase).where(ServerDatabase.server_id == server_id))
    ).all()
    assert left == []
    for data in (first, second):
        assert not await exists_on_host(site.login, data["name"])


async def test_hosts_are_checked_before_they_are_saved(site: Site) -> None:
    login = site.login
    listed = await site.client.get(HOSTS, headers=site.admin)
    assert listed.status_code == 200
    [host] = listed.json()["data"]
    assert "password" not in host and "passwordSealed" not in host
    assert host["engine"] == login.engine and host["databaseCount"] == 0

    wrong = await site.client.post(
        HOSTS,
        json=login.body("wrong", password="not-the-password", username="nosuchadmin"),
        headers=site.admin,
    )
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["error"]["code"] == "DATABASE_HOST_REJECTED"
    assert "nosuchadmin" in wrong.json()["error"]["message"]
    weak = f"weak{new_id()[-8:].lower()}"
    await as_admin(
        login,
        f"CREATE USER {weak!r}@'%' IDENTIFIED BY 'weak-pass'",
        f"CREATE ROLE {weak} LOGIN PASSWORD 'weak-pass'",
    )
    try:
        lacking = await site.client.post(
            HOSTS, json=login.body("weak", username=weak, password="weak-pass"), headers=site.admin
        )
    finally:
        await as_admin(login, f"DROP USER {weak!r}@'%'", f"DROP ROLE {weak}")
    assert lacking.status_code == 400, lacking.text
    assert weak in lacking.json()["error"]["message"]
    away = await site.client.post(HOSTS, json=login.body("away", port=9), headers=site.admin)
    assert away.status_code == 503, away.text
    assert away.json()["error"]["code"] == "DATABASE_HOST_UNAVAILABLE"
    assert "refused" in away.json()["error"]["message"].lower() or "111" in away.text
    assert len((await site.client.get(HOSTS, headers=site.admin)).json()["data"]) == 1
    taken = await site.client.post(
        HOSTS, json=login.body(f"{login.engine}-main"), headers=site.admin
    )
    assert taken.status_code == 409

    path = f"{HOSTS}/{site.host_id}"
    bad_update = await site.client.put(path, json={"password": "nope"}, headers=site.admin)
    assert bad_update.status_code == 400
    still = (await site.client.get(path, headers=site.admin)).json()["data"]
    assert still == host  # the refused change was not kept
    renamed = await site.client.put(
        path, json={"name": "renamed", "publicHost": "db.example.com"}, headers=site.admin
    )
    assert renamed.status_code == 200 and renamed.json()["data"]["publicHost"] == "db.example.com"
    stored = await site.db.scalar(select(DatabaseHost.password_sealed))
    assert stored and len(stored) > 30  # sealed, not in the clear
    assert not login.password or login.password not in stored

    # Only the nodes it names may use it.
    elsewhere, _ = await make_node(site.db, tenant=site.fleet.tenant, port_range=(31100, 31109))
    limited = await site.client.put(path, json={"nodeIds": [elsewhere.id]}, headers=site.admin)
    assert limited.status_code == 200
    response = await site.create(site.fleet.server, "x", site.fleet.owner.headers)
    assert response.status_code == 400
    assert (
        await site.client.put(path, json={"nodeIds": ["nope"]}, headers=site.admin)
    ).status_code == 400

    made = await site.create(
        await site.server(site.fleet.owner, node=elsewhere), "y", site.fleet.owner.headers
    )
    assert made.status_code == 201, made.text
    assert made.json()["data"]["host"] == "db.example.com"
    assert (await site.client.delete(path, headers=site.admin)).status_code == 409
    moved = await site.client.put(path, json={"remotePattern": "10.%"}, headers=site.admin)
    assert moved.status_code == 409
    assert (await site.client.get(path, headers=site.fleet.owner.headers)).status_code == 403


async def test_the_last_place_goes_to_one_request(site: Site) -> None:
    import asyncio

    owner = site.fleet.owner.headers
    server = await site.server(site.fleet.owner, limit=1)
    answers = await asyncio.gather(*(site.create(server, f"race{n}", owner) for n in range(3)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 409, 409], [a.text for a in answers]
    listed = await site.client.get(f"/api/servers/{server.id}/databases", headers=owner)
    assert len(listed.json()["data"]) == 1
