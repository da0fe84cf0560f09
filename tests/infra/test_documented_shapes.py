"""Fields the documents promise on servers and nodes (SkyPANEL's server list,
mPanel's infrastructure servers)."""

import httpx

from tests.infra.conftest import Fleet


async def test_skypanel_server_list_has_ip_address_and_plan(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    listed = await client.get("/api/servers", headers=fleet.owner.headers)
    assert listed.status_code == 200, listed.text
    [server] = listed.json()["data"]
    assert server["ipAddress"] == fleet.node.public_address == "203.0.113.10"
    assert "plan" in server and server["plan"] is None
    assert {"id", "name", "status", "createdAt"} <= server.keys()
    detail = await client.get(f"/api/servers/{fleet.server.id}", headers=fleet.owner.headers)
    assert detail.json()["data"]["ipAddress"] == "203.0.113.10"


async def test_mpanel_node_fields(client: httpx.AsyncClient, fleet: Fleet) -> None:
    listed = await client.get("/api/nodes", headers=fleet.admin.headers)
    [node] = listed.json()["data"]
    assert node["role"] == "node"
    assert node["ip"] == "203.0.113.10"
    assert node["status"] == "online"
    assert node["lastHeartbeatAt"] == node["lastSeenAt"] is not None
    changed = await client.put(
        f"/api/nodes/{fleet.node.id}", json={"role": "game"}, headers=fleet.admin.headers
    )
    assert changed.json()["data"]["role"] == "game"


async def test_overallocation_percentages_raise_or_lift_the_node_limits(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    # 8192 MB and 4 cores; the fleet's server holds 1024 MB and 1 core.
    body = {
        "name": "extra",
        "templateId": fleet.template.id,
        "nodeId": fleet.node.id,
        "allocatedMemoryMb": 8192,
        "allocatedCpuCores": 1,
        "allocatedDiskMb": 100,
        "environment": {"MEMORY": "1024M"},
    }
    headers = fleet.admin.headers
    refused = await client.post("/api/servers", json=body, headers=headers)
    assert refused.status_code == 400
    assert "memoryMb" in refused.json()["error"]["details"]["shortfalls"]
    node_url = f"/api/nodes/{fleet.node.id}"
    shown = await client.put(node_url, json={"memoryOverallocate": 25}, headers=headers)
    assert shown.json()["data"]["memoryOverallocate"] == 25
    # 8192 * 1.25 = 10240 MB: 1024 + 8192 fit, one more MB past the limit does not.
    fits = await client.post("/api/servers", json=body, headers=headers)
    assert fits.status_code == 201, fits.text
    over = await client.post(
        "/api/servers", json=body | {"name": "over", "allocatedMemoryMb": 1025}, headers=headers
    )
    assert over.status_code == 400
    cpu_bound = body | {"name": "cpu", "allocatedMemoryMb": 1, "allocatedCpuCores": 3}
    assert (await client.post("/api/servers", json=cpu_bound, headers=headers)).status_code == 400
    await client.put(node_url, json={"cpuOverallocate": -1}, headers=headers)
    assert (await client.post("/api/servers", json=cpu_bound, headers=headers)).status_code == 201
    bad = await client.put(node_url, json={"diskOverallocate": -2}, headers=headers)
    assert bad.status_code == 400
