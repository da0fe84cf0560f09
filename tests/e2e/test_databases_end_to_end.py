"""Server databases through the product as users run it (``hostplane up``, or the
production shape in the PostgreSQL pass): an operator adds the machine's MariaDB as
a database host, a customer creates a database over HTTP, connects with the returned
credentials, rotates the password and deletes the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from hostplane.core.ids import new_id
from tests.conftest import POSTGRES_URL
from tests.e2e.frontdoor import Deployment, embedded, production
from tests.support.database_hosts import (
    mariadb_cleanup,
    mariadb_connect,
    require_mariadb,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "hostplane" / "templates"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("databases")
    shape = production if POSTGRES_URL else embedded
    with shape(folder) as running:
        yield running


async def test_owner_creates_uses_rotates_and_deletes_a_mariadb_database(
    deployment: Deployment,
) -> None:
    login = await require_mariadb()
    async with deployment.operator() as ops:
        host = await ops.post("/api/admin/database-hosts", json=login.body(f"maria-{new_id()}"))
        assert host.status_code == 201, host.text
        assert "password" not in host.json()["data"]
        host_id = host.json()["data"]["id"]
        name = f"db{new_id()[-8:].lower()}"
        user = await ops.post(
            "/api/users", json={"email": f"{name}@example.com", "password": "a long passphrase"}
        )
        assert user.status_code == 201, user.text
        templates = (await ops.get("/api/templates")).json()["data"]
        if not templates:  # `up` bundles templates; the production shape starts with none
            body = json.loads((TEMPLATES / "python-echo.json").read_text())
            imported = await ops.post("/api/templates", json=body)
            assert imported.status_code == 201, imported.text
            templates = [imported.json()["data"]]
        server = await ops.post(
            "/api/servers",
            json={
                "name": name,
                "templateId": templates[0]["id"],
                "nodeId": deployment.node_id,
                "ownerId": user.json()["data"]["id"],
                "allocatedMemoryMb": 128,
                "allocatedCpuCores": 1,
                "allocatedDiskMb": 200,
                "databaseLimit": 1,
            },
        )
        assert server.status_code == 201, server.text
        server_id = server.json()["data"]["id"]
        prefix = server.json()["data"]["uuid"].replace("-", "")[:8]
    try:
        async with deployment.client() as anonymous:
            logged = await anonymous.post(
                "/api/auth/login",
                json={"email": f"{name}@example.com", "password": "a long passphrase"},
            )
            assert logged.status_code == 200, logged.text
            token = logged.json()["data"]["token"]
        async with deployment.client(token) as http:
            made = await http.post(
                f"/api/servers/{server_id}/databases", json={"hostId": host_id, "name": "game"}
            )
            assert made.status_code == 201, made.text
            data = made.json()["data"]
            assert data["name"] == f"s{prefix}_game"
            connection = await mariadb_connect(
                login, user=data["username"], password=data["password"], db=data["name"]
            )
            async with connection.cursor() as cursor:
                await cursor.execute("CREATE TABLE scores (player VARCHAR(32), points INT)")
                await cursor.execute("INSERT INTO scores VALUES ('ada', 3)")
            connection.close()

            second = await http.post(
                f"/api/servers/{server_id}/databases", json={"hostId": host_id, "name": "more"}
            )
            assert second.status_code == 409  # databaseLimit 1

            rotated = await http.post(f"/api/servers/{server_id}/databases/{data['id']}/rotate")
            assert rotated.status_code == 200, rotated.text
            new_password = rotated.json()["data"]["password"]
            with pytest.raises(pymysql.err.OperationalError):
                await mariadb_connect(
                    login, user=data["username"], password=data["password"], db=data["name"]
                )
            connection = await mariadb_connect(
                login, user=data["username"], password=new_password, db=data["name"]
            )
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT points FROM scores WHERE player = 'ada'")
                assert await cursor.fetchall() == ((3,),)
            connection.close()

            deleted = await http.delete(f"/api/servers/{server_id}/databases/{data['id']}")
            assert deleted.status_code == 200, deleted.text
            assert (await http.get(f"/api/servers/{server_id}/databases")).json()["data"] == []
            with pytest.raises(pymysql.err.OperationalError):
                await mariadb_connect(
                    login, user=data["username"], password=new_password, db=data["name"]
                )
    finally:
        await mariadb_cleanup(login, [prefix])
        async with deployment.operator() as ops:
            await ops.delete(f"/api/admin/database-hosts/{host_id}")
