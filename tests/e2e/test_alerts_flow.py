"""Catalyst's Flow 6 (alert generation) through the front door.

``hostplane up`` in the SQLite pass, ``serve`` x2 + ``worker`` + ``agent`` in the
PostgreSQL pass (see :mod:`tests.e2e.frontdoor`). A server burns CPU; a rule
with a low threshold and a short duration fires within seconds of the
duration; a local HTTP receiver gets the notification; the operator resolves
the alert and the receiver hears that too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from hostplane.core.ids import new_id
from tests.conftest import POSTGRES_URL
from tests.e2e.frontdoor import Deployment, embedded, eventually, production, wait_status
from tests.support.webhooks import receiver

BURNER = {
    "name": "CPU Burner",
    "description": "Spins one core forever.",
    "docker_image": "docker.io/library/python:3.12-slim",
    "start_command": "python3 -c 'while True: pass'",
    "stop_command": "^C",
    "ports": [],
    "environment": {},
    "required_variables": [],
    "variables": [],
    "install_script": "#!/bin/sh\necho 'Nothing to install'\n",
    "install_image": "docker.io/library/python:3.12-slim",
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("alerts-flow")
    shape = production if POSTGRES_URL else embedded
    # The receiver listens on 127.0.0.1, which the operator allows here; stats every second.
    with shape(
        folder,
        HOSTPLANE_WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS="true",
        HOSTPLANE_AGENT__STATS_INTERVAL="1",
        HOSTPLANE_ALERTS__EVALUATE_SECONDS="1",
    ) as running:
        yield running


async def test_flow_6_alert_generation(deployment: Deployment) -> None:
    async with receiver() as hook, deployment.operator() as ops:
        template = await ops.post(
            "/api/templates", json=BURNER | {"name": f"Burner {new_id()[-6:]}"}
        )
        assert template.status_code == 201, template.text
        me = (await ops.get("/api/auth/me")).json()["data"]
        created = await ops.post(
            "/api/servers",
            json={
                "name": f"burner-{new_id()[-6:].lower()}",
                "templateId": template.json()["data"]["id"],
                "nodeId": deployment.node_id,
                "ownerId": me["id"],
                "allocatedMemoryMb": 128,
                "allocatedCpuCores": 1,
                "allocatedDiskMb": 200,
            },
        )
        assert created.status_code == 201, created.text
        server_id = created.json()["data"]["id"]
        assert (await ops.post(f"/api/servers/{server_id}/install")).status_code == 200
        await wait_status(ops, server_id, "stopped")

        rule = await ops.post(
            "/api/alert-rules",
            json={
                "name": "Burning",
                "type": "resource_threshold",
                "target": "server",
                "targetId": server_id,
                "conditions": {"metric": "cpu", "operator": ">", "value": 5, "duration": 2},
                "actions": [{"type": "webhook", "url": hook.url}],
                # Stays open until the operator resolves it (the server keeps burning).
                "keepOpen": True,
            },
        )
        assert rule.status_code == 201, rule.text

        assert (await ops.post(f"/api/servers/{server_id}/start")).status_code == 200
        await wait_status(ops, server_id, "running")
        started = time.monotonic()

        async def fired() -> dict[str, Any] | None:
            listed = await ops.get("/api/alerts", params={"serverId": server_id})
            assert listed.status_code == 200, listed.text
            items = listed.json()["data"]
            return items[0] if items else None

        alert = await eventually(fired, what="an alert for the burning server", every=0.5)
        waited = time.monotonic() - started
        assert 2 <= waited < 30, waited  # held for the duration, then within seconds
        assert alert["type"] == "resource_threshold" and alert["resolved"] is False
        assert alert["metadata"]["cpuUsage"] > 5 and alert["metadata"]["threshold"] == 5

        await hook.wait_for(1, timeout=30)
        notified = hook.received[0].payload
        assert notified["event"] == "alert.created" and notified["alert"]["id"] == alert["id"]

        detail = (await ops.get(f"/api/alerts/{alert['id']}")).json()["data"]
        assert [a["status"] for a in detail["actions"]] == ["succeeded"]
        stats = (await ops.get("/api/alerts/stats")).json()["data"]
        assert stats["unresolved"] >= 1 and stats["byType"]["resource_threshold"] >= 1

        assert (await ops.post(f"/api/servers/{server_id}/kill")).status_code == 200
        resolved = await ops.post(f"/api/alerts/{alert['id']}/resolve")
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["data"]["resolvedBy"] == me["id"]
        shown = (await ops.get(f"/api/alerts/{alert['id']}")).json()["data"]
        assert shown["resolved"] is True and shown["resolvedAt"] is not None

        await hook.wait_for(2, timeout=30)
        assert hook.received[1].payload["event"] == "alert.resolved"
