"""Scheduled tasks through the API: Catalyst's shape, exact nextRunAt, bad input, access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.identity.access import service as access
from tests.infra.conftest import Fleet
from tests.support.infra import in_tenant

CATALYST_FIELDS = {
    "id",
    "serverId",
    "name",
    "action",
    "schedule",
    "payload",
    "enabled",
    "lastRunAt",
    "nextRunAt",
    "runCount",
    "createdAt",
}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def create(
    client: httpx.AsyncClient, fleet: Fleet, headers: dict[str, str] | None = None, **values: Any
) -> httpx.Response:
    body = {
        "serverId": fleet.server.id,
        "name": "Daily Restart",
        "action": "restart",
        "schedule": "0 3 * * *",
    } | values
    return await client.post("/api/tasks", json=body, headers=headers or fleet.owner.headers)


async def test_create_list_update_delete_in_catalysts_shape(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    before = datetime.now(UTC)
    created = await create(client, fleet)
    assert created.status_code == 201, created.text
    task = created.json()["data"]
    assert set(task) >= CATALYST_FIELDS
    assert task["payload"] is None
    assert task["enabled"] is True
    assert task["runCount"] == 0
    assert task["lastRunAt"] is None
    assert task["timezone"] == "UTC"
    assert task["catchUp"] == "skip"
    assert task["onlyWhenOnline"] is False
    # Exact: the next 03:00 UTC after now.
    expected = before.replace(hour=3, minute=0, second=0, microsecond=0)
    if expected <= before:
        expected += timedelta(days=1)
    assert _at(task["nextRunAt"]) == expected

    command = await create(
        client,
        fleet,
        name="Daily Announcement",
        action="command",
        schedule="0 12 * * *",
        payload={"command": "say Server restart in 3 hours"},
    )
    assert command.status_code == 201, command.text
    assert command.json()["data"]["payload"] == {"command": "say Server restart in 3 hours"}

    listed = await client.get("/api/tasks", headers=fleet.owner.headers)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()["data"]] == [task["id"], command.json()["data"]["id"]]
    filtered = await client.get(
        "/api/tasks", params={"serverId": fleet.server.id}, headers=fleet.owner.headers
    )
    assert len(filtered.json()["data"]) == 2

    # Catalyst's update body: disabled tasks have no next run; enabling recomputes it.
    path = f"/api/tasks/{task['id']}"
    updated = await client.put(
        path, json={"enabled": False, "schedule": "0 4 * * *"}, headers=fleet.owner.headers
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["data"]["schedule"] == "0 4 * * *"
    assert updated.json()["data"]["nextRunAt"] is None
    enabled = await client.put(path, json={"enabled": True}, headers=fleet.owner.headers)
    assert _at(enabled.json()["data"]["nextRunAt"]).hour == 4

    deleted = await client.delete(path, headers=fleet.owner.headers)
    assert deleted.status_code == 200
    assert (await client.get(path, headers=fleet.owner.headers)).status_code == 404


async def test_next_run_is_exact_in_the_tasks_time_zone(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    created = await create(client, fleet, schedule="30 9 * * *", timezone="Asia/Kolkata")
    assert created.status_code == 201, created.text
    next_run = _at(created.json()["data"]["nextRunAt"])
    local = next_run.astimezone(ZoneInfo("Asia/Kolkata"))
    assert (local.hour, local.minute, local.second) == (9, 30, 0)
    assert (next_run.hour, next_run.minute) == (4, 0)  # IST is UTC+05:30
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)
    # Changing the zone recomputes it.
    moved = await client.put(
        f"/api/tasks/{created.json()['data']['id']}",
        json={"timezone": "America/New_York"},
        headers=fleet.owner.headers,
    )
    local = _at(moved.json()["data"]["nextRunAt"]).astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (9, 30)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"schedule": "61 * * * *"}, "schedule.minute"),
        ({"schedule": "0 24 * * *"}, "schedule.hour"),
        ({"schedule": "0 0 0 * *"}, "schedule.dayOfMonth"),
        ({"schedule": "0 0 * 13 *"}, "schedule.month"),
        ({"schedule": "0 0 * * 8"}, "schedule.dayOfWeek"),
        ({"schedule": "*/0 * * * *"}, "schedule.minute"),
        ({"schedule": "* * *"}, "schedule"),
        ({"schedule": "0 0 31 2 *"}, "schedule"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"action": "command"}, "payload.command"),
        ({"action": "command", "payload": {"command": "a\nb"}}, "payload.command"),
        ({"action": "backup", "payload": {"name": 5}}, "payload.name"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    client: httpx.AsyncClient, fleet: Fleet, values: dict[str, Any], field: str
) -> None:
    response = await create(client, fleet, **values)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["field"] == field


@pytest.mark.parametrize(
    "values",
    [
        {"action": "explode"},
        {"steps": [{"action": "stop", "delaySeconds": 901}]},
        {"steps": [{"action": "stop", "delaySeconds": -1}]},
        {"steps": [{"action": "stop"}] * 11},
        {"catchUp": "always"},
        {"unknown": 1},
    ],
)
async def test_schema_errors_are_400(
    client: httpx.AsyncClient, fleet: Fleet, values: dict[str, Any]
) -> None:
    response = await create(client, fleet, **values)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_bad_update_changes_nothing(client: httpx.AsyncClient, fleet: Fleet) -> None:
    task = (await create(client, fleet)).json()["data"]
    path = f"/api/tasks/{task['id']}"
    refused = await client.put(
        path, json={"name": "x", "schedule": "0 25 * * *"}, headers=fleet.owner.headers
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["details"]["field"] == "schedule.hour"
    again = (await client.get(path, headers=fleet.owner.headers)).json()["data"]
    assert (again["name"], again["schedule"]) == ("Daily Restart", "0 3 * * *")


async def test_steps_are_kept_in_order(client: httpx.AsyncClient, fleet: Fleet) -> None:
    steps = [
        {"action": "command", "payload": {"command": "say bye"}, "delaySeconds": 0},
        {"action": "stop", "delaySeconds": 30, "continueOnFailure": True},
        {"action": "backup", "delaySeconds": 900},
    ]
    created = await create(
        client, fleet, action="command", payload={"command": "say soon"}, steps=steps,
        onlyWhenOnline=True, catchUp="runOnce",
    )  # fmt: skip
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert [s["action"] for s in data["steps"]] == ["command", "stop", "backup"]
    assert [s["delaySeconds"] for s in data["steps"]] == [0, 30, 900]
    assert data["steps"][1]["continueOnFailure"] is True
    assert (data["onlyWhenOnline"], data["catchUp"]) == (True, "runOnce")


async def test_who_may_do_what(client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet) -> None:
    task = (await create(client, fleet)).json()["data"]
    path = f"/api/tasks/{task['id']}"
    # Another customer cannot see the server or its tasks: 404, as for a made-up id.
    assert (await client.get(path, headers=fleet.other.headers)).status_code == 404
    assert (await create(client, fleet, headers=fleet.other.headers)).status_code == 404
    for method, url in (("PUT", path), ("DELETE", path), ("POST", f"{path}/execute")):
        body = {"name": "x"} if method == "PUT" else None
        response = await client.request(method, url, json=body, headers=fleet.other.headers)
        assert response.status_code == 404, (method, url)
    mine = await client.get("/api/tasks", headers=fleet.other.headers)
    assert mine.status_code == 200
    assert mine.json()["data"] == []
    hidden = await client.get(
        "/api/tasks", params={"serverId": fleet.server.id}, headers=fleet.other.headers
    )
    assert hidden.status_code == 404

    # A subuser with read access sees the tasks but may not change them (403).
    async with in_tenant(db, fleet.tenant):
        await access.set_grant(
            db,
            resource_type="server",
            resource_id=fleet.server.id,
            user_id=fleet.other.user.id,
            permissions=["server.read", "task.read"],
            granted_by=fleet.owner.user.id,
        )
    assert (await client.get(path, headers=fleet.other.headers)).status_code == 200
    assert len((await client.get("/api/tasks", headers=fleet.other.headers)).json()["data"]) == 1
    for method, url in (("PUT", path), ("DELETE", path), ("POST", f"{path}/execute")):
        body = {"name": "x"} if method == "PUT" else None
        response = await client.request(method, url, json=body, headers=fleet.other.headers)
        assert response.status_code == 403, (method, url)
    assert (await create(client, fleet, headers=fleet.other.headers)).status_code == 403

    # An operator (global task.*) sees and runs every task.
    assert (await client.get(path, headers=fleet.admin.headers)).status_code == 200
    executed = await client.post(f"{path}/execute", headers=fleet.admin.headers)
    assert executed.status_code == 200, executed.text
    assert executed.json()["data"]["message"] == "Task execution queued"
    assert (await client.get("/api/tasks")).status_code == 401


async def test_deleting_the_server_deletes_its_tasks(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    task = (await create(client, fleet)).json()["data"]
    deleted = await client.delete(f"/api/servers/{fleet.server.id}", headers=fleet.owner.headers)
    assert deleted.status_code in (200, 202), deleted.text
    gone = await client.get(f"/api/tasks/{task['id']}", headers=fleet.admin.headers)
    assert gone.status_code == 404
    assert (await client.get("/api/tasks", headers=fleet.admin.headers)).json()["data"] == []
