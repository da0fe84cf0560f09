"""Templates: CRUD, ``{{VAR}}`` substitution, bundled templates, egg import."""

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import ValidationFailed
from hostplane.infra.templates import service as templates
from tests.support.identity import logged_in, other_tenant, platform_tenant
from tests.support.infra import in_tenant, make_node, make_server, make_template

MINECRAFT: dict[str, Any] = {
    "name": "Minecraft Java Edition",
    "description": "Latest Minecraft server",
    "dockerImage": "itzg/minecraft-server:latest",
    "startCommand": "java -Xmx{{MEMORY}} -jar server.jar",
    "stopCommand": "stop",
    "ports": [{"internal": 25565, "external": 25565}],
    "environment": {"EULA": "TRUE", "MEMORY": "{{MEMORY}}", "PORT": "{{PORT}}"},
    "requiredVariables": ["MEMORY", "PORT", "EULA"],
    "features": {"configFiles": ["/server.properties"]},
}


def _template(**values: Any) -> Any:
    return SimpleNamespace(
        start_command=values.get(
            "start_command", "java -Xmx{{MEMORY}} -jar server.jar --port {{PORT}}"
        ),
        environment=values.get("environment", {"MEMORY": "{{MEMORY}}", "PORT": "{{PORT}}"}),
        required_variables=values.get("required_variables", ["MEMORY", "PORT"]),
        variables=values.get("variables", []),
    )


def test_render_puts_references_in_the_command_and_values_in_the_environment() -> None:
    command, env = templates.render(_template(), {"MEMORY": "4096M", "PORT": "25565"})
    assert command == 'java -Xmx"${MEMORY}" -jar server.jar --port "${PORT}"'
    assert env == {"MEMORY": "4096M", "PORT": "25565"}


def test_render_keeps_declared_names_and_builtins_only_and_tolerates_spaces() -> None:
    command, env = templates.render(
        _template(
            start_command="run {{ MEMORY }}",
            environment={"A": "x{{PORT}}y", "MEMORY": "{{MEMORY}}", "PORT": "{{PORT}}"},
        ),
        {"MEMORY": "1G", "PORT": "1", "EXTRA": "e", "LD_PRELOAD": "/x.so", "SERVER_MEMORY": "9"},
    )
    assert command == 'run "${MEMORY}"'
    # Derived entries are filled from the values; undeclared names never reach the process.
    assert env == {"MEMORY": "1G", "PORT": "1", "SERVER_MEMORY": "9", "A": "x1y"}


def test_references_follow_the_shell_quoting_around_them() -> None:
    command, _env = templates.render(
        _template(
            start_command='a {{MEMORY}} "b {{MEMORY}}" \'c {{MEMORY}}\' \\"{{PORT}}',
        ),
        {"MEMORY": "1", "PORT": "2"},
    )
    assert command == 'a "${MEMORY}" "b ${MEMORY}" \'c \'"${MEMORY}"\'\' \\""${PORT}"'


def test_hostile_values_stay_one_word_in_a_real_shell(tmp_path: Path) -> None:
    command, env = templates.render(
        _template(
            start_command="printf '%s|' {{MEMORY}} \"{{PORT}}\" 'q {{PORT}}'",
            environment={"MEMORY": "{{MEMORY}}", "PORT": "{{PORT}}"},
        ),
        {"MEMORY": "x; touch pwned", "PORT": "$(touch pwned2) `touch pwned3` *"},
    )
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        env=env | {"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    hostile = "$(touch pwned2) `touch pwned3` *"
    assert done.stdout == f"x; touch pwned|{hostile}|q {hostile}|"
    assert list(tmp_path.iterdir()) == []


def test_render_names_every_missing_variable() -> None:
    with pytest.raises(ValidationFailed) as raised:
        templates.render(_template(required_variables=["MEMORY", "PORT", "EULA"]), {"EULA": "TRUE"})
    assert raised.value.message == "Missing required template variables: MEMORY, PORT"
    assert raised.value.status == 400
    with pytest.raises(ValidationFailed, match="PORT"):
        templates.render(_template(required_variables=[]), {"MEMORY": "1"})
    with pytest.raises(ValidationFailed, match="MEMORY"):
        templates.render(_template(), {"MEMORY": "  ", "PORT": "1"})


async def test_crud(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await logged_in(client, db, role="admin")
    customer = await logged_in(client, db)
    created = await client.post("/api/templates", json=MINECRAFT, headers=admin.headers)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["dockerImage"] == "itzg/minecraft-server:latest"
    assert data["requiredVariables"] == ["MEMORY", "PORT", "EULA"]
    assert data["features"] == {"configFiles": ["/server.properties"]}
    template_id = data["id"]

    # Any authenticated caller reads; only template.manage writes.
    assert (await client.get("/api/templates", headers=customer.headers)).status_code == 200
    one = await client.get(f"/api/templates/{template_id}", headers=customer.headers)
    assert one.json()["data"]["ports"] == [{"internal": 25565, "external": 25565}]
    assert (
        await client.post("/api/templates", json=MINECRAFT, headers=customer.headers)
    ).status_code == 403
    assert (await client.get("/api/templates")).status_code == 401

    changed = await client.put(
        f"/api/templates/{template_id}", json={"stopCommand": "end"}, headers=admin.headers
    )
    assert changed.status_code == 200 and changed.json()["data"]["stopCommand"] == "end"
    bad = await client.post(
        "/api/templates",
        json=MINECRAFT | {"requiredVariables": ["not valid"]},
        headers=admin.headers,
    )
    assert bad.status_code == 400
    assert (
        await client.delete(f"/api/templates/{template_id}", headers=admin.headers)
    ).status_code == 200
    assert (
        await client.get(f"/api/templates/{template_id}", headers=admin.headers)
    ).status_code == 404


async def test_delete_refused_while_servers_use_it(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    admin = await logged_in(client, db, role="admin")
    node, _ = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    await make_server(db, tenant=tenant, owner=admin.user, node=node, template=template)
    refused = await client.delete(f"/api/templates/{template.id}", headers=admin.headers)
    assert refused.status_code == 409


async def test_another_tenants_template_is_not_found(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    home = await platform_tenant(db)
    template = await make_template(db, tenant=home)
    foreign = await logged_in(client, db, tenant=await other_tenant(db), role="admin")
    assert (
        await client.get(f"/api/templates/{template.id}", headers=foreign.headers)
    ).status_code == 404


async def test_bundled_templates_install_once(db: AsyncSession) -> None:
    tenant = await platform_tenant(db)
    async with in_tenant(db, tenant):
        first = await templates.install_bundled_templates(db)
    async with in_tenant(db, tenant):
        again = await templates.install_bundled_templates(db)
    assert {t.name for t in first} == {"Python Echo", "Python HTTP Server"}
    assert again == []
    echo = next(t for t in first if t.name == "Python Echo")
    assert echo.start_command == "python3 -u echo.py"
    assert echo.install_script is not None and "echo.py" in echo.install_script


EGG: dict[str, Any] = {
    "meta": {"version": "PTDL_v2"},
    "name": "Paper",
    "description": "High performance Spigot fork",
    "docker_images": {"Java 21": "ghcr.io/pterodactyl/yolks:java_21"},
    "startup": "java -Xms128M -Xmx{{SERVER_MEMORY}}M -jar {{SERVER_JARFILE}} --port {{server.build.default.port}}",
    "config": {"files": '{"server.properties": {}}', "stop": "stop"},
    "scripts": {
        "installation": {
            "script": "#!/bin/bash\ncurl -o server.jar ...",
            "container": "ghcr.io/pterodactyl/installers:alpine",
        }
    },
    "variables": [
        {
            "env_variable": "SERVER_JARFILE",
            "default_value": "server.jar",
            "rules": "required|string|max:20",
        },
        {"env_variable": "BUILD_NUMBER", "default_value": "latest", "rules": "nullable|string"},
    ],
}


async def test_egg_import(client: httpx.AsyncClient, db: AsyncSession) -> None:
    admin = await logged_in(client, db, role="admin")
    imported = await client.post("/api/admin/templates/import", json=EGG, headers=admin.headers)
    assert imported.status_code == 201, imported.text
    data = imported.json()["data"]
    assert data["dockerImage"] == "ghcr.io/pterodactyl/yolks:java_21"
    assert data["startCommand"].endswith("--port {{SERVER_PORT}}")
    assert data["stopCommand"] == "stop"
    assert data["environment"] == {"SERVER_JARFILE": "server.jar", "BUILD_NUMBER": "latest"}
    assert data["requiredVariables"] == ["SERVER_JARFILE"]
    assert data["installImage"] == "ghcr.io/pterodactyl/installers:alpine"
    assert data["features"] == {"configFiles": ["server.properties"]}
    refused = await client.post("/api/admin/templates/import", json={"x": 1}, headers=admin.headers)
    assert refused.status_code == 400


async def test_egg_import_refuses_odd_shapes_with_400_not_500(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    admin = await logged_in(client, db, role="admin")
    odd = await client.post(
        "/api/admin/templates/import",
        json=EGG | {"scripts": "not an object", "description": ["x"]},
        headers=admin.headers,
    )
    assert odd.status_code == 201, odd.text
    assert odd.json()["data"]["installScript"] is None
    assert odd.json()["data"]["description"] is None
    long_image = await client.post(
        "/api/admin/templates/import",
        json=EGG | {"docker_images": {"x": "ghcr.io/" + "a" * 300}},
        headers=admin.headers,
    )
    assert long_image.status_code == 400
    assert "255" in long_image.json()["error"]["message"]
    bad_variables = await client.post(
        "/api/admin/templates/import", json=EGG | {"variables": ["x"]}, headers=admin.headers
    )
    assert bad_variables.status_code == 400
