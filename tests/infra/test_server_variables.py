"""Server variables: only declared ones, checked by their rules, never spliced into a shell
line, and shown only to callers allowed ``server.details``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.infra.servers.models import Server
from tests.infra.conftest import Fleet
from tests.support.agents import live_agents
from tests.support.identity import logged_in
from tests.support.infra import make_node

# Writes what it received (its arguments and its environment) and stays up.
PROBE = """\
import json, os, sys, time
with open("seen.json", "w") as out:
    json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, out)
time.sleep(60)
"""

HOSTILE = "x; touch pwned && touch pwned2 | $(touch pwned3) `touch pwned4` ${HOME} *"


async def _row(db: AsyncSession, server_id: str) -> Server:
    await db.commit()  # a fresh snapshot: the agent's reports commit in other sessions
    db.expire_all()
    server = await db.get(Server, server_id)
    assert server is not None
    return server


async def _until(check: Any, what: str, seconds: float = 15) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.1)
    assert await check(), what


def _template_body(**values: Any) -> dict[str, Any]:
    return {
        "name": "Probe",
        "dockerImage": "docker.io/library/python:3.12-slim",
        "startCommand": "python3 probe.py {{MOTD}} '{{MOTD}}' \"{{MOTD}}\"",
    } | values


async def _server(
    client: httpx.AsyncClient, fleet: Fleet, template_id: str, node_id: str, **values: Any
) -> str:
    created = await client.post(
        "/api/servers",
        json={
            "name": "probe",
            "templateId": template_id,
            "nodeId": node_id,
            "ownerId": fleet.owner.user.id,
            "allocatedMemoryMb": 256,
            "allocatedCpuCores": 1,
            "allocatedDiskMb": 100,
        }
        | values,
        headers=fleet.admin.headers,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["data"]["id"])


# --- the value reaches the process verbatim, and nothing runs ------------------------------------


async def test_hostile_values_reach_the_process_verbatim_and_run_nothing(
    app: object, client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    node, secret = await make_node(db, tenant=fleet.tenant, port_range=(31000, 31009))
    # The older template shape: MOTD is a variable because the environment refers to it.
    template = await client.post(
        "/api/templates",
        json=_template_body(environment={"MOTD": "{{MOTD}}"}, requiredVariables=["MOTD"]),
        headers=fleet.admin.headers,
    )
    assert template.status_code == 201, template.text
    sid = await _server(
        client, fleet, template.json()["data"]["id"], node.id, environment={"MOTD": "hello"}
    )
    path = f"/api/servers/{sid}"
    changed = await client.put(
        path, json={"environment": {"MOTD": HOSTILE}}, headers=fleet.owner.headers
    )
    assert changed.status_code == 200, changed.text

    async with live_agents(app, [(node.id, secret)]) as [agent]:
        folder = agent.server_dir(sid)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "probe.py").write_text(PROBE)
        started = await client.post(f"{path}/start", headers=fleet.owner.headers)
        assert started.status_code == 200, started.text
        seen_file = folder / "seen.json"

        async def seen() -> bool:
            return seen_file.exists() and seen_file.read_text().endswith("}")

        async def running() -> bool:
            return (await _row(db, sid)).status == "running"

        await _until(seen, "the probe never wrote what it saw")
        await _until(running, "the agent never reported the server running")
        seen_data = json.loads(seen_file.read_text())
        await agent.runtime.kill(sid)
        # Unquoted, single-quoted and double-quoted placeholders: each one word, verbatim.
        assert seen_data["argv"] == [HOSTILE, HOSTILE, HOSTILE]
        assert seen_data["env"]["MOTD"] == HOSTILE
        assert sorted(p.name for p in folder.iterdir()) == ["probe.py", "seen.json"]


# --- names nobody may set ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("LD_PRELOAD", "denied"),
        ("PATH", "denied"),
        ("PYTHONSTARTUP", "denied"),
        ("NODE_OPTIONS", "denied"),
        ("SERVER_MEMORY", "builtin"),
        ("SERVER_PORT", "builtin"),
        ("UNDECLARED", "declared"),
    ],
)
async def test_builtin_dangerous_and_undeclared_names_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet, name: str, rule: str
) -> None:
    path = f"/api/servers/{fleet.server.id}"
    before = (await client.get(path, headers=fleet.admin.headers)).json()["data"]
    for caller in (fleet.owner, fleet.admin):
        refused = await client.put(
            path,
            json={"name": "renamed", "environment": {"MEMORY": "2G", name: "/data/evil.so"}},
            headers=caller.headers,
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"] == {"variable": name, "rule": rule}
        assert name in error["message"]
    after = (await client.get(path, headers=fleet.admin.headers)).json()["data"]
    assert after["environment"] == before["environment"] == {"MEMORY": "1024M"}
    assert after["name"] == before["name"]
    # Nor at creation.
    created = await client.post(
        "/api/servers",
        json={
            "name": "made",
            "templateId": fleet.template.id,
            "nodeId": fleet.node.id,
            "allocatedMemoryMb": 256,
            "allocatedCpuCores": 1,
            "allocatedDiskMb": 100,
            "environment": {"MEMORY": "1G", name: "x"},
        },
        headers=fleet.admin.headers,
    )
    assert created.status_code == 400 and created.json()["error"]["details"]["variable"] == name


async def test_templates_cannot_declare_dangerous_or_builtin_names(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    for name in ("LD_PRELOAD", "BASH_ENV", "JAVA_TOOL_OPTIONS", "SERVER_MEMORY"):
        refused = await client.post(
            "/api/templates",
            json=_template_body(variables=[{"envVariable": name}]),
            headers=fleet.admin.headers,
        )
        assert refused.status_code == 400, (name, refused.text)
        assert refused.json()["error"]["details"]["variable"] == name
    fixed = await client.post(
        "/api/templates",
        json=_template_body(environment={"LD_PRELOAD": "/x.so"}),
        headers=fleet.admin.headers,
    )
    assert fixed.status_code == 400


# --- rules ---------------------------------------------------------------------------------------

DECLARED = [
    {"envVariable": "MOTD", "rules": "required|string|max:20", "defaultValue": "hi"},
    {"envVariable": "PLAYERS", "rules": "nullable|integer|between:1,100"},
    {"envVariable": "MODE", "rules": "required|in:survival,creative", "defaultValue": "survival"},
    {"envVariable": "SEED", "rules": ["nullable", "regex:/^([0-9a-f]+|random)$/"]},
    {"envVariable": "HARDCORE", "rules": "nullable|boolean"},
    {"envVariable": "LOCKED", "userEditable": False, "defaultValue": "fixed"},
    {
        "envVariable": "LICENSE_KEY",
        "userViewable": False,
        "userEditable": False,
        "defaultValue": "k",
    },
]


async def _declared_server(client: httpx.AsyncClient, fleet: Fleet) -> str:
    template = await client.post(
        "/api/templates", json=_template_body(variables=DECLARED), headers=fleet.admin.headers
    )
    assert template.status_code == 201, template.text
    names = [v["envVariable"] for v in template.json()["data"]["variables"]]
    assert names == [v["envVariable"] for v in DECLARED]
    return await _server(
        client,
        fleet,
        template.json()["data"]["id"],
        fleet.node.id,
        environment={"LICENSE_KEY": "secret-license"},
    )


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("MOTD", "x" * 21, "max:20"),
        ("MOTD", "", "required"),
        ("PLAYERS", "101", "between:1,100"),
        ("PLAYERS", "ten", "integer"),
        ("MODE", "peaceful", "in:survival,creative"),
        ("SEED", "xyz", "regex:/^([0-9a-f]+|random)$/"),
        ("HARDCORE", "yes", "boolean"),
        ("LOCKED", "changed", "user_editable"),
        ("LICENSE_KEY", "mine", "user_editable"),
    ],
)
async def test_owners_values_are_held_to_the_declared_rules(
    client: httpx.AsyncClient, fleet: Fleet, name: str, value: str, rule: str
) -> None:
    sid = await _declared_server(client, fleet)
    path = f"/api/servers/{sid}"
    before = (await client.get(path, headers=fleet.admin.headers)).json()["data"]["environment"]
    refused = await client.put(
        path, json={"environment": {name: value}}, headers=fleet.owner.headers
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"] == {"variable": name, "rule": rule}
    after = (await client.get(path, headers=fleet.admin.headers)).json()["data"]["environment"]
    assert after == before


async def test_valid_values_pass_and_operators_set_what_owners_cannot(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    sid = await _declared_server(client, fleet)
    path = f"/api/servers/{sid}"
    good = {"MOTD": "welcome", "PLAYERS": "20", "SEED": "random", "HARDCORE": "1"}
    accepted = await client.put(path, json={"environment": good}, headers=fleet.owner.headers)
    assert accepted.status_code == 200, accepted.text
    # The owner never sees the hidden licence key, and it survives their update.
    assert accepted.json()["data"]["environment"] == good
    hidden = {v["envVariable"] for v in accepted.json()["data"]["variables"]}
    assert "LICENSE_KEY" not in hidden and "LOCKED" in hidden
    # The map stands for every variable the caller may edit (operators: all of them).
    operator = await client.put(
        path,
        json={"environment": {"LOCKED": "by-operator", "LICENSE_KEY": "secret-license"}},
        headers=fleet.admin.headers,
    )
    assert operator.status_code == 200, operator.text
    seen = operator.json()["data"]["environment"]
    assert seen == {"LICENSE_KEY": "secret-license", "LOCKED": "by-operator"}
    # An owner sending back a locked value unchanged is not a change.
    echoed = await client.put(
        path,
        json={"environment": {"LOCKED": "by-operator", "MOTD": "again"}},
        headers=fleet.owner.headers,
    )
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["data"]["environment"] == {"LOCKED": "by-operator", "MOTD": "again"}
    kept = (await client.get(path, headers=fleet.admin.headers)).json()["data"]["environment"]
    assert kept["LICENSE_KEY"] == "secret-license"


async def test_unknown_or_malformed_rules_are_refused_at_import(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    for rules, bad in (
        ("required|uuid_v9", "uuid_v9"),
        ("nullable|max", "max"),
        ("regex:/(unclosed/", "regex:/(unclosed/"),
    ):
        refused = await client.post(
            "/api/templates",
            json=_template_body(variables=[{"envVariable": "MOTD", "rules": rules}]),
            headers=fleet.admin.headers,
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["details"] == {"variable": "MOTD", "rule": bad}
    egg = {
        "name": "Odd egg",
        "docker_images": {"x": "ghcr.io/pterodactyl/yolks:java_21"},
        "startup": "java -jar {{JARFILE}}",
        "variables": [{"env_variable": "JARFILE", "rules": "required|string|timezone"}],
    }
    imported = await client.post(
        "/api/admin/templates/import", json=egg, headers=fleet.admin.headers
    )
    assert imported.status_code == 400
    assert imported.json()["error"]["details"] == {"variable": "JARFILE", "rule": "timezone"}


async def test_egg_import_carries_the_variables_over(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    egg = {
        "name": "Paper",
        "docker_images": {"Java 21": "ghcr.io/pterodactyl/yolks:java_21"},
        "startup": "java -Xmx{{SERVER_MEMORY}}M -jar {{SERVER_JARFILE}}",
        "variables": [
            {
                "name": "Server Jar File",
                "description": "The jar to run",
                "env_variable": "SERVER_JARFILE",
                "default_value": "server.jar",
                "user_viewable": True,
                "user_editable": True,
                "rules": "required|regex:/^([\\w\\d._-]+)(\\.jar)$/",
            },
            {
                "name": "Build",
                "env_variable": "BUILD_NUMBER",
                "default_value": "latest",
                "user_viewable": 1,
                "user_editable": 0,
                "rules": "required|string|max:20",
            },
        ],
    }
    imported = await client.post(
        "/api/admin/templates/import", json=egg, headers=fleet.admin.headers
    )
    assert imported.status_code == 201, imported.text
    variables = imported.json()["data"]["variables"]
    assert variables[0] == {
        "name": "Server Jar File",
        "description": "The jar to run",
        "envVariable": "SERVER_JARFILE",
        "defaultValue": "server.jar",
        "userViewable": True,
        "userEditable": True,
        "rules": "required|regex:/^([\\w\\d._-]+)(\\.jar)$/",
    }
    assert variables[1]["userEditable"] is False
    sid = await _server(client, fleet, imported.json()["data"]["id"], fleet.node.id)
    path = f"/api/servers/{sid}"
    bad = await client.put(
        path, json={"environment": {"SERVER_JARFILE": "x.sh"}}, headers=fleet.owner.headers
    )
    assert bad.status_code == 400
    locked = await client.put(
        path, json={"environment": {"BUILD_NUMBER": "1"}}, headers=fleet.owner.headers
    )
    assert locked.status_code == 400
    good = await client.put(
        path,
        json={"environment": {"SERVER_JARFILE": "paper-1.21.jar"}},
        headers=fleet.owner.headers,
    )
    assert good.status_code == 200, good.text


# --- server.details ------------------------------------------------------------------------------


async def test_only_callers_with_server_details_see_the_environment(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    path = f"/api/servers/{fleet.server.id}"
    reader = fleet.other
    shared = await client.post(
        f"{path}/users",
        json={"userId": reader.user.id, "permissions": ["server.read"]},
        headers=fleet.owner.headers,
    )
    assert shared.status_code == 201, shared.text
    plain = (await client.get(path, headers=reader.headers)).json()["data"]
    assert plain["id"] == fleet.server.id and plain["name"] == fleet.server.name
    assert plain["environment"] is None
    assert plain["startupCommand"] is None and plain["variables"] is None
    # Support staff read servers, not their secrets.
    support = await logged_in(client, db, tenant=fleet.tenant, role="support")
    staff = (await client.get(path, headers=support.headers)).json()["data"]
    assert staff["environment"] is None and staff["startupCommand"] is None

    regranted = await client.put(
        f"{path}/users/{reader.user.id}",
        json={"permissions": ["server.read", "server.details"]},
        headers=fleet.owner.headers,
    )
    assert regranted.status_code == 200
    detailed = (await client.get(path, headers=reader.headers)).json()["data"]
    assert detailed["environment"] == {"MEMORY": "1024M"}
    assert detailed["startupCommand"] == "python3 -u echo.py --memory {{MEMORY}}"
    assert {v["envVariable"] for v in detailed["variables"]} == {"MEMORY", "MODE"}
    for caller in (fleet.owner, fleet.admin):
        seen = (await client.get(path, headers=caller.headers)).json()["data"]
        assert seen["environment"] == {"MEMORY": "1024M"}
