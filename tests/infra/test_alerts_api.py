"""``/api/alerts`` and ``/api/alert-rules``: rules as admin resources, alerts seen by who may
read their server, filters, statistics, resolving one or many, and refused input."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.runtime import Runtime
from hostplane.infra.alerts.evaluator import AlertEvaluator
from tests.infra.alerts_helpers import alerts_in_db, make_rule, report_stats
from tests.infra.conftest import Fleet
from tests.support.infra import make_node, make_server


async def test_an_admin_manages_rules_and_customers_may_not(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    rule = await make_rule(
        client,
        fleet.admin.headers,
        actions=[{"type": "webhook", "url": "https://discord.com/api/webhooks/1/abc"}],
    )
    assert rule["target"] == "server" and rule["targetId"] == "*"
    assert rule["conditions"] == {"metric": "cpu", "operator": ">", "value": 50, "duration": 0}
    assert rule["actions"] == [{"type": "webhook", "url": "https://discord.com/api/webhooks/1/abc"}]
    assert rule["enabled"] is True and rule["keepOpen"] is False and rule["severity"] == "warning"

    listed = await client.get("/api/alert-rules", headers=fleet.admin.headers)
    assert [r["id"] for r in listed.json()["data"]] == [rule["id"]]
    one = await client.get(f"/api/alert-rules/{rule['id']}", headers=fleet.admin.headers)
    assert one.json()["data"]["name"] == "High CPU"

    changed = await client.put(
        f"/api/alert-rules/{rule['id']}",
        json={
            "name": "Hot",
            "enabled": False,
            "severity": "critical",
            "targetId": fleet.server.id,
            "conditions": {"metric": "memory", "operator": ">=", "value": 80, "duration": 30},
        },
        headers=fleet.admin.headers,
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert data["name"] == "Hot" and data["enabled"] is False and data["severity"] == "critical"
    assert data["targetId"] == fleet.server.id and data["conditions"]["metric"] == "memory"

    for method, path in (
        ("GET", "/api/alert-rules"),
        ("GET", f"/api/alert-rules/{rule['id']}"),
        ("DELETE", f"/api/alert-rules/{rule['id']}"),
    ):
        denied = await client.request(method, path, headers=fleet.owner.headers)
        assert denied.status_code == 403, (method, path, denied.text)

    deleted = await client.delete(f"/api/alert-rules/{rule['id']}", headers=fleet.admin.headers)
    assert deleted.status_code == 200
    gone = await client.get(f"/api/alert-rules/{rule['id']}", headers=fleet.admin.headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"


async def test_bad_rules_are_refused_with_a_clear_error(
    client: httpx.AsyncClient, fleet: Fleet
) -> None:
    base = {"name": "r", "type": "resource_threshold"}
    threshold = {"metric": "cpu", "operator": ">", "value": 90}
    for body in (
        {**base},  # no conditions
        {**base, "conditions": {"metric": "gpu", "operator": ">", "value": 1}},
        {**base, "conditions": {"metric": "cpu", "operator": "!=", "value": 1}},
        {**base, "conditions": {**threshold, "value": -1}},
        {**base, "conditions": {**threshold, "duration": "soon"}},
        {**base, "conditions": threshold, "target": "node"},
        {**base, "conditions": threshold, "targetId": "no-such-server"},
        {"name": "r", "type": "node_offline", "target": "server"},
        {"name": "r", "type": "node_offline", "targetId": "no-such-node"},
        {"name": "r", "type": "server_crashed", "severity": "apocalyptic"},
        {"name": "r", "type": "disk_on_fire"},
        {"name": "", "type": "server_crashed"},
        {"name": "r", "type": "server_crashed", "actions": [{"type": "sms", "to": "1"}]},
        {"name": "r", "type": "server_crashed", "actions": [{"type": "webhook", "url": "ftp://x"}]},
        {"name": "r", "type": "server_crashed", "actions": [{"type": "email", "to": ["nobody"]}]},
        {"name": "r", "type": "server_crashed", "extra": True},
        [1, 2],
    ):
        answer = await client.post("/api/alert-rules", json=body, headers=fleet.admin.headers)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["code"] in ("VALIDATION_ERROR", "DESTINATION_REFUSED")
    rule = await make_rule(client, fleet.admin.headers)
    wrong = await client.put(
        f"/api/alert-rules/{rule['id']}",
        json={"conditions": {"metric": "cpu"}},
        headers=fleet.admin.headers,
    )
    assert wrong.status_code == 400, wrong.text


async def test_users_see_the_alerts_of_servers_they_may_read(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    theirs = await make_server(
        db, tenant=fleet.tenant, owner=fleet.other.user, node=fleet.node, template=fleet.template
    )
    quiet, _ = await make_node(db, tenant=fleet.tenant, online=False)
    await make_rule(client, fleet.admin.headers)
    await make_rule(
        client,
        fleet.admin.headers,
        name="offline",
        type="node_offline",
        severity="critical",
        targetId=quiet.id,
        conditions={"duration": 60},
    )
    await report_stats(db, fleet.server.id, cpu=99)
    await report_stats(db, theirs.id, cpu=99)
    assert await AlertEvaluator(runtime).evaluate() == (3, 0)
    alerts = {(a.server_id, a.node_id): a for a in await alerts_in_db(db)}
    mine = alerts[(fleet.server.id, fleet.node.id)]
    node_alert = alerts[(None, quiet.id)]

    async def ids(headers: dict[str, str], query: str = "") -> set[str]:
        answer = await client.get(f"/api/alerts{query}", headers=headers)
        assert answer.status_code == 200, answer.text
        return {item["id"] for item in answer.json()["data"]}

    assert await ids(fleet.owner.headers) == {mine.id}
    assert len(await ids(fleet.other.headers)) == 1
    assert len(await ids(fleet.admin.headers)) == 3
    assert await ids(fleet.admin.headers, f"?serverId={fleet.server.id}") == {mine.id}
    assert await ids(fleet.admin.headers, f"?nodeId={quiet.id}") == {node_alert.id}
    assert await ids(fleet.admin.headers, "?type=node_offline") == {node_alert.id}
    assert await ids(fleet.admin.headers, "?severity=critical") == {node_alert.id}
    assert await ids(fleet.admin.headers, "?resolved=true") == set()
    paged = await client.get("/api/alerts?limit=2&page=2", headers=fleet.admin.headers)
    assert len(paged.json()["data"]) == 1 and paged.json()["pagination"]["total"] == 3

    shown = await client.get(f"/api/alerts/{mine.id}", headers=fleet.owner.headers)
    assert shown.status_code == 200
    body = shown.json()["data"]
    assert body["serverId"] == fleet.server.id and body["resolved"] is False
    assert body["metadata"]["cpuUsage"] == 99 and body["actions"] == []
    hidden = await client.get(f"/api/alerts/{node_alert.id}", headers=fleet.owner.headers)
    assert hidden.status_code == 404

    stats = await client.get("/api/alerts/stats", headers=fleet.admin.headers)
    assert stats.json()["data"] == {
        "total": 3,
        "unresolved": 3,
        "byType": {"resource_threshold": 2, "node_offline": 1, "server_crashed": 0},
        "bySeverity": {"info": 0, "warning": 2, "critical": 1},
    }
    own_stats = await client.get("/api/alerts/stats", headers=fleet.owner.headers)
    assert own_stats.json()["data"]["total"] == 1

    # Customers may not resolve; an admin resolves one, then the rest in bulk.
    denied = await client.post(f"/api/alerts/{mine.id}/resolve", headers=fleet.owner.headers)
    assert denied.status_code == 403
    one = await client.post(f"/api/alerts/{mine.id}/resolve", headers=fleet.admin.headers)
    assert one.status_code == 200 and one.json()["data"]["resolved"] is True
    bulk = await client.post(
        "/api/alerts/bulk-resolve",
        json={"alertIds": [a.id for a in alerts.values()] + ["unknown"]},
        headers=fleet.admin.headers,
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["success"] is True and bulk.json()["resolved"] == 2
    assert await ids(fleet.admin.headers, "?resolved=false") == set()
    after = await client.get("/api/alerts/stats", headers=fleet.admin.headers)
    assert after.json()["data"]["unresolved"] == 0 and after.json()["data"]["total"] == 3


async def test_bad_alert_queries_are_refused(client: httpx.AsyncClient, fleet: Fleet) -> None:
    for query in ("?resolved=maybe", "?type=bogus", "?severity=loud", "?page=0", "?limit=1000"):
        answer = await client.get(f"/api/alerts{query}", headers=fleet.admin.headers)
        assert answer.status_code == 400, (query, answer.text)
    for body in ({}, {"alertIds": []}, {"alertIds": "a"}, {"alertIds": [1]}):
        answer = await client.post(
            "/api/alerts/bulk-resolve", json=body, headers=fleet.admin.headers
        )
        assert answer.status_code == 400, (body, answer.text)
    missing = await client.get("/api/alerts/nope", headers=fleet.admin.headers)
    assert missing.status_code == 404
    anonymous = await client.get("/api/alerts")
    assert anonymous.status_code == 401
