"""Alert actions: a JSON webhook, Discord's format, e-mail through a real SMTP server,
retries visible on the alert, the outbound webhook events, and the destination guard."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import create_app
from hostplane.core.config import SmtpSettings, WebhookSettings
from hostplane.core.runtime import Runtime
from hostplane.infra.alerts.actions import AlertActionDispatcher
from hostplane.infra.alerts.evaluator import AlertEvaluator
from hostplane.infra.alerts.notify import is_discord, webhook_body
from hostplane.platform.webhooks.models import WebhookDelivery
from tests.conftest import make_settings, panel_runtime
from tests.infra.alerts_helpers import actions_in_db, alerts_in_db, make_rule, report_stats
from tests.infra.conftest import Fleet
from tests.support.identity import logged_in, platform_tenant
from tests.support.infra import make_node, make_server, make_template
from tests.support.smtp import smtp_server
from tests.support.webhooks import Answer, receiver


async def test_a_webhook_action_posts_the_alert_when_it_opens_and_when_it_resolves(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    async with receiver() as hook:
        await make_rule(client, fleet.admin.headers, actions=[{"type": "webhook", "url": hook.url}])
        await report_stats(db, fleet.server.id, cpu=99)
        assert await AlertEvaluator(runtime).evaluate() == (1, 0)
        dispatcher = AlertActionDispatcher(runtime)
        assert await dispatcher.send_due() == 1
        await hook.wait_for(1)
        payload = hook.received[0].payload
        assert payload["event"] == "alert.created"
        assert payload["alert"]["serverId"] == fleet.server.id
        assert payload["alert"]["type"] == "resource_threshold"
        assert payload["alert"]["metadata"]["cpuUsage"] == 99

        [alert] = await alerts_in_db(db)
        shown = await client.get(f"/api/alerts/{alert.id}", headers=fleet.admin.headers)
        [action] = shown.json()["data"]["actions"]
        assert action["type"] == "webhook" and action["target"] == hook.url
        assert action["status"] == "succeeded" and action["attempts"] == 1
        assert action["event"] == "alert.created" and action["lastError"] is None

        resolved = await client.post(f"/api/alerts/{alert.id}/resolve", headers=fleet.admin.headers)
        assert resolved.status_code == 200
        assert await dispatcher.send_due() == 1
        await hook.wait_for(2)
        second = hook.received[1].payload
        assert second["event"] == "alert.resolved"
        assert second["alert"]["resolvedBy"] == fleet.admin.user.id


async def test_a_failed_action_is_retried_and_its_failure_is_visible(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    runtime.settings.alerts.action_retry_schedule_seconds = [0.0, 0.0]
    async with receiver(script=[Answer(status=500), Answer(status=503)]) as hook:
        await make_rule(client, fleet.admin.headers, actions=[{"type": "webhook", "url": hook.url}])
        await report_stats(db, fleet.server.id, cpu=99)
        await AlertEvaluator(runtime).evaluate()
        dispatcher = AlertActionDispatcher(runtime)
        [alert] = await alerts_in_db(db)

        # send_due sends again while something is due: 500, 503, then 200.
        assert await dispatcher.send_due() == 3
        assert len(hook.received) == 3
        [action] = await actions_in_db(db)
        assert action.status == "succeeded" and action.attempts == 3
        # The error of the last failure stays until a success replaces it.
        assert action.last_error is None

    # A receiver that never answers well: the action fails for good, visibly.
    async with receiver(default=Answer(status=500)) as hook:
        await client.put(
            f"/api/alert-rules/{alert.rule_id}",
            json={"actions": [{"type": "webhook", "url": hook.url}]},
            headers=fleet.admin.headers,
        )
        await client.post(f"/api/alerts/{alert.id}/resolve", headers=fleet.admin.headers)
        assert await dispatcher.send_due() == 3
        shown = await client.get(f"/api/alerts/{alert.id}", headers=fleet.admin.headers)
        failed = [a for a in shown.json()["data"]["actions"] if a["event"] == "alert.resolved"]
        assert len(failed) == 1
        assert failed[0]["status"] == "failed" and failed[0]["attempts"] == 3
        assert failed[0]["lastError"] == "The receiver answered 500"


async def test_discord_webhook_urls_get_discords_message_format() -> None:
    alert = {
        "id": "a1",
        "ruleId": "r1",
        "serverId": "s1",
        "nodeId": "n1",
        "type": "resource_threshold",
        "severity": "critical",
        "title": "High CPU usage",
        "message": "CPU usage of server mc is at 97.0%",
        "metadata": {},
        "resolved": False,
        "resolvedAt": None,
        "resolvedBy": None,
        "createdAt": "2026-01-25T02:29:17.414Z",
    }
    url = "https://discord.com/api/webhooks/123/abc"
    assert is_discord(url) and is_discord("https://discordapp.com/api/webhooks/1/x")
    assert not is_discord("https://discord.com/other") and not is_discord(
        "https://x.example/api/webhooks/1"
    )
    body = webhook_body(url, "alert.created", alert)
    assert set(body) == {"content", "embeds", "allowed_mentions"}
    assert body["content"] == "[CRITICAL] High CPU usage"
    [embed] = body["embeds"]
    assert embed["description"] == alert["message"] and embed["timestamp"] == alert["createdAt"]
    assert {"name": "Server", "value": "s1", "inline": True} in embed["fields"]
    plain = webhook_body("https://hooks.example.com/x", "alert.created", alert)
    assert plain["event"] == "alert.created" and plain["alert"] == alert


async def test_email_actions_are_sent_through_the_smtp_server(tmp_path: Path) -> None:
    async with smtp_server() as mailbox:
        settings = make_settings(
            tmp_path,
            smtp=SmtpSettings(
                host=mailbox.host, port=mailbox.port, starttls=False, sender="alerts@panel.test"
            ),
        )
        async with panel_runtime(settings) as runtime:
            app = create_app(settings, runtime=runtime)
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://t") as client,
                runtime.unit_of_work() as db,
            ):
                tenant = await platform_tenant(db)
                admin = await logged_in(client, db, tenant=tenant, role="admin")
                owner = await logged_in(client, db, tenant=tenant)
                node, _ = await make_node(db, tenant=tenant)
                template = await make_template(db, tenant=tenant)
                server = await make_server(
                    db, tenant=tenant, owner=owner.user, node=node, template=template
                )
                await make_rule(
                    client,
                    admin.headers,
                    actions=[{"type": "email", "to": ["ops@example.com", "oncall@example.com"]}],
                )
                await report_stats(db, server.id, cpu=99)
                assert await AlertEvaluator(runtime).evaluate() == (1, 0)
                assert await AlertActionDispatcher(runtime).send_due() == 1
                await mailbox.wait_for(1)
    [message] = mailbox.messages
    assert message["Subject"] == "[WARNING] High CPU usage"
    assert message["From"] == "alerts@panel.test"
    assert mailbox.recipients == [["ops@example.com", "oncall@example.com"]]
    assert "CPU usage of server" in message.get_payload()


async def test_email_actions_are_refused_without_a_mail_server(
    client: httpx.AsyncClient, db: AsyncSession, fleet: Fleet
) -> None:
    answer = await client.post(
        "/api/alert-rules",
        json={
            "name": "mail me",
            "type": "server_crashed",
            "actions": [{"type": "email", "to": "ops@example.com"}],
        },
        headers=fleet.admin.headers,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "HOSTPLANE_SMTP__HOST" in error["message"]
    assert error["details"]["fields"][0]["field"] == "actions.0"


async def test_alerts_emit_outbound_webhook_events(
    client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    endpoint = await client.post(
        "/api/webhooks",
        json={"url": "https://hooks.example.com/in", "events": ["alert.*"]},
        headers=fleet.admin.headers,
    )
    assert endpoint.status_code == 201, endpoint.text
    await make_rule(client, fleet.admin.headers)
    await report_stats(db, fleet.server.id, cpu=99)
    await AlertEvaluator(runtime).evaluate()
    await report_stats(db, fleet.server.id, cpu=1)
    await AlertEvaluator(runtime).evaluate()
    await db.commit()
    events = (
        await db.scalars(select(WebhookDelivery.event_type).order_by(WebhookDelivery.id))
    ).all()
    assert list(events) == ["alert.created", "alert.resolved"]


async def test_alert_webhooks_pass_the_destination_guard(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhooks=WebhookSettings(allow_private_destinations=False))
    async with panel_runtime(settings) as runtime:
        app = create_app(settings, runtime=runtime)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
            runtime.unit_of_work() as db,
        ):
            tenant = await platform_tenant(db)
            admin = await logged_in(client, db, tenant=tenant, role="admin")
            for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.0.0.8/x"):
                answer = await client.post(
                    "/api/alert-rules",
                    json={
                        "name": "private",
                        "type": "server_crashed",
                        "actions": [{"type": "webhook", "url": url}],
                    },
                    headers=admin.headers,
                )
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["code"] == "DESTINATION_REFUSED"
