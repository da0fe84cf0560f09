"""One HTTP request to a receiver: signed, pinned to a checked address, bounded in time."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from hostplane.core.clock import isoformat, utcnow
from hostplane.core.net.destinations import DestinationRefused, pinned_request, resolve
from hostplane.platform.webhooks import signing
from hostplane.platform.webhooks.models import RESPONSE_KEPT_BYTES

USER_AGENT = "hostplane-webhooks/1"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: a status (None when no answer came) and why not."""

    status_code: int | None
    duration_ms: int
    body: str | None
    error: str | None
    retry_after_seconds: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410: the receiver says the endpoint no longer exists."""
        return self.status_code == 410


def body_of(event_type: str, data: dict[str, Any], created_at: datetime) -> bytes:
    """SkyPANEL's payload: ``{"event", "data", "timestamp"}``, compact JSON."""
    payload = {"event": event_type, "data": data, "timestamp": isoformat(created_at)}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max((moment - utcnow()).total_seconds(), 0.0)


async def send(
    client: httpx.AsyncClient,
    *,
    url: str,
    message_id: str,
    body: bytes,
    secrets: list[str],
    timeout_seconds: float,
    allow_private: bool,
) -> Outcome:
    """POST ``body`` to ``url``; never raises for what the receiver or the network does."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        async with asyncio.timeout(timeout_seconds):
            destination = await resolve(url, allow_private=allow_private)
            pinned = pinned_request(destination)
            headers = {
                "Host": pinned.host_header,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                **signing.headers(secrets, message_id, int(time.time()), body),
            }
            request = client.build_request(
                "POST", pinned.url, content=body, headers=headers, extensions=pinned.extensions
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                kept = bytearray()
                async for chunk in response.aiter_bytes():
                    kept.extend(chunk)
                    if len(kept) >= RESPONSE_KEPT_BYTES:
                        break
            finally:
                await response.aclose()
    except DestinationRefused as exc:
        return Outcome(None, elapsed(), None, exc.message[:500])
    except TimeoutError:
        return Outcome(None, elapsed(), None, f"No answer within {timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return Outcome(None, elapsed(), None, f"{type(exc).__name__}: {exc}"[:500] or "error")
    text = bytes(kept[:RESPONSE_KEPT_BYTES]).decode("utf-8", errors="replace")
    error = None
    if 300 <= response.status_code < 400:
        error = "Redirects are not followed"
    elif not 200 <= response.status_code < 300:
        error = f"The receiver answered {response.status_code}"
    return Outcome(
        response.status_code,
        elapsed(),
        text,
        error,
        retry_after(response.headers.get("retry-after")),
    )


def new_client() -> httpx.AsyncClient:
    # No proxies from the environment: the checked address is the one dialled.
    # The whole attempt is bounded by ``send``'s own timeout.
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=60.0)
