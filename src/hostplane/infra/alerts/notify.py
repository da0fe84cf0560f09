"""Sending one alert notification: a JSON webhook (Discord's format for Discord) or an e-mail.

Nothing here raises for what a receiver, a mail server or the network does:
every failure comes back as a short reason the alert shows.
"""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
import httpx

from hostplane.core.clock import isoformat, utcnow
from hostplane.core.config import Settings
from hostplane.core.net.destinations import DestinationRefused, pinned_request, resolve

USER_AGENT = "hostplane-alerts/1"
DISCORD_HOSTS = frozenset(
    {"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"}
)
# Discord embed colours by severity.
COLOURS = {"info": 0x3498DB, "warning": 0xF1C40F, "critical": 0xE74C3C}
RESOLVED_COLOUR = 0x2ECC71


def is_discord(url: str) -> bool:
    parts = urlsplit(url)
    return (parts.hostname or "").lower() in DISCORD_HOSTS and parts.path.startswith(
        "/api/webhooks/"
    )


def _headline(event: str, alert: dict[str, Any]) -> str:
    state = "Resolved" if event == "alert.resolved" else str(alert["severity"]).upper()
    return f"[{state}] {alert['title']}"


def webhook_body(url: str, event: str, alert: dict[str, Any]) -> dict[str, Any]:
    """The JSON a receiver gets: Discord's message format for a Discord webhook URL."""
    if not is_discord(url):
        return {"event": event, "alert": alert, "timestamp": isoformat(utcnow())}
    fields = [
        {"name": "Type", "value": alert["type"], "inline": True},
        {"name": "Severity", "value": alert["severity"], "inline": True},
    ]
    if alert.get("serverId"):
        fields.append({"name": "Server", "value": alert["serverId"], "inline": True})
    if alert.get("nodeId"):
        fields.append({"name": "Node", "value": alert["nodeId"], "inline": True})
    resolved = event == "alert.resolved"
    return {
        "content": _headline(event, alert)[:2000],
        "embeds": [
            {
                "title": str(alert["title"])[:256],
                "description": str(alert["message"])[:4096],
                "color": RESOLVED_COLOUR if resolved else COLOURS.get(alert["severity"], 0),
                "fields": fields,
                "timestamp": alert["resolvedAt"] if resolved else alert["createdAt"],
                "footer": {"text": f"alert {alert['id']}"},
            }
        ],
        "allowed_mentions": {"parse": []},
    }


async def send_webhook(
    client: httpx.AsyncClient, url: str, event: str, alert: dict[str, Any], settings: Settings
) -> str | None:
    """POST the notification; None when the receiver answered 2xx, else why not."""
    body = json.dumps(webhook_body(url, event, alert), separators=(",", ":")).encode()
    timeout = settings.alerts.action_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            destination = await resolve(
                url, allow_private=settings.webhooks.allow_private_destinations
            )
            pinned = pinned_request(destination)
            request = client.build_request(
                "POST",
                pinned.url,
                content=body,
                headers={
                    "Host": pinned.host_header,
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                },
                extensions=pinned.extensions,
            )
            response = await client.send(request, follow_redirects=False)
    except DestinationRefused as exc:
        return exc.message[:500]
    except TimeoutError:
        return f"No answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return None
    if 300 <= response.status_code < 400:
        return f"The receiver answered {response.status_code} (redirects are not followed)"
    return f"The receiver answered {response.status_code}"


def email_message(to: list[str], event: str, alert: dict[str, Any], sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = _headline(event, alert)[:200]
    lines = [
        str(alert["message"]),
        "",
        f"Type: {alert['type']}",
        f"Severity: {alert['severity']}",
    ]
    if alert.get("serverId"):
        lines.append(f"Server: {alert['serverId']}")
    if alert.get("nodeId"):
        lines.append(f"Node: {alert['nodeId']}")
    lines.append(f"Opened: {alert['createdAt']}")
    if event == "alert.resolved":
        lines.append(f"Resolved: {alert['resolvedAt']} by {alert['resolvedBy']}")
    lines.append(f"Alert: {alert['id']}")
    message.set_content("\n".join(lines) + "\n")
    return message


async def send_email(
    to: list[str], event: str, alert: dict[str, Any], settings: Settings
) -> str | None:
    """Send the notification through the configured SMTP server; None on success, else why not."""
    smtp = settings.smtp
    if not smtp.host:
        return "No mail server is configured (HOSTPLANE_SMTP__HOST)"
    message = email_message(to, event, alert, smtp.sender)
    try:
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=smtp.password.get_secret_value() if smtp.password else None,
            start_tls=smtp.starttls,
            timeout=smtp.timeout_seconds,
        )
    except aiosmtplib.SMTPException as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    except (OSError, TimeoutError) as exc:
        return f"The mail server could not be reached: {exc}"[:500]
    return None
