"""Catalyst's Flow 5 end to end: a scheduled task fires on its cron time and restarts a
running server, through separate processes (``hostplane up`` in the SQLite pass; ``serve``
replicas, a ``worker`` and an ``agent`` in the PostgreSQL pass)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets

from tests.conftest import POSTGRES_URL
from tests.e2e.frontdoor import (
    Deployment,
    embedded,
    eventually,
    next_matching,
    production,
    state_is,
    wait_status,
)
from tests.e2e.test_catalyst_flows import installed_server
from tests.e2e.test_catalyst_flows import template_id as template_id  # a fixture

# ``* * * * *`` fires at the next minute boundary; the scheduler ticks every 5 s.
FIRES_WITHIN = 60 + 5 + 30


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("schedules")
    shape = production if POSTGRES_URL else embedded
    with shape(folder) as running:
        yield running


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_flow_5_a_scheduled_task_restarts_the_server(
    deployment: Deployment, template_id: str
) -> None:
    server_id, token = await installed_server(deployment, template_id)
    async with (
        websockets.connect(deployment.ws_url(token)) as socket,
        deployment.client(token) as http,
    ):
        assert (await http.post(f"/api/servers/{server_id}/start")).status_code == 200
        await wait_status(http, server_id, "running")
        await socket.send(json.dumps({"type": "subscribe", "serverId": server_id}))
        await next_matching(socket, lambda m: m.get("type") == "subscribed")

        # 1. Create the task with a cron expression (the next minute: under a minute away).
        created = await http.post(
            "/api/tasks",
            json={
                "serverId": server_id,
                "name": "Every minute restart",
                "action": "restart",
                "schedule": "* * * * *",
                "enabled": True,
            },
        )
        assert created.status_code == 201, created.text
        task = created.json()["data"]
        next_run = _at(task["nextRunAt"])
        now = datetime.now(UTC)
        assert 0 < (next_run - now).total_seconds() <= 60
        assert next_run.second == 0

        # 2-6. The scheduler fires it; the agent stops and starts the server, and the
        # state updates reach the socket.
        async def fired() -> dict[str, Any] | None:
            runs = (await http.get(f"/api/tasks/{task['id']}/runs")).json()["data"]
            return runs[0] if runs and runs[0]["status"] in ("succeeded", "failed") else None

        run = await eventually(fired, what="the scheduled run", timeout=FIRES_WITHIN, every=1)
        assert run["status"] == "succeeded", run
        assert run["trigger"] == "schedule"
        assert _at(run["scheduledFor"]) == next_run
        await next_matching(socket, state_is(server_id, "stopping"))
        await next_matching(socket, state_is(server_id, "running"))
        assert await wait_status(http, server_id, "running") == "running"

        # 7. The task's history: lastRunAt, runCount, and the next run a minute on.
        after = (await http.get(f"/api/tasks/{task['id']}")).json()["data"]
        assert after["runCount"] >= 1
        assert after["lastRunAt"] is not None
        assert _at(after["lastRunAt"]) >= next_run
        assert _at(after["nextRunAt"]) > next_run

        # Stop the schedule before the server is stopped for good.
        disabled = await http.put(f"/api/tasks/{task['id']}", json={"enabled": False})
        assert disabled.status_code == 200
        assert disabled.json()["data"]["nextRunAt"] is None
        assert (await http.post(f"/api/servers/{server_id}/stop")).status_code == 200
        await wait_status(http, server_id, "stopped")
