from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from hostplane.core.schemas import ApiInput, ApiModel
from hostplane.platform.webhooks.events import is_subscription

DeliveryStatus = Literal["pending", "sending", "succeeded", "failed"]
MAX_EVENTS = 100


def _check_events(value: list[str]) -> list[str]:
    unknown = [name for name in value if not is_subscription(name)]
    if unknown:
        raise ValueError(
            f"unknown event {unknown[0]!r}: use an event name (server.created), "
            "a family (alert.*) or *"
        )
    return list(dict.fromkeys(value))


class WebhookEndpointCreate(ApiInput):
    url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(min_length=1, max_length=MAX_EVENTS)
    enabled: bool = True
    description: str | None = Field(default=None, max_length=500)

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        return _check_events(value)


class WebhookEndpointUpdate(ApiInput):
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[str] | None = Field(default=None, min_length=1, max_length=MAX_EVENTS)
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=500)
    rotate_secret: bool = Field(
        default=False,
        description="Issue a new signing secret (returned once); the old one keeps signing "
        "for 24 hours.",
    )

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_events(value)


class WebhookEndpointOut(ApiModel):
    id: str
    url: str
    description: str | None
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    previous_secret_expires_at: datetime | None = Field(
        description="While set and in the future, the previous secret signs too."
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointOut):
    secret: str = Field(description="The signing secret (whsec_...). Shown only now.")


class WebhookEndpointUpdated(WebhookEndpointOut):
    secret: str | None = Field(
        default=None, description="The new signing secret after `rotateSecret`, else null."
    )


class WebhookAttemptOut(ApiModel):
    number: int
    status_code: int | None
    duration_ms: int
    response_body: str | None = Field(description="The first 2 KB of the answer.")
    error: str | None
    created_at: datetime


class WebhookDeliveryOut(ApiModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None
    created_at: datetime
    attempt_log: list[WebhookAttemptOut] = Field(default_factory=list)
