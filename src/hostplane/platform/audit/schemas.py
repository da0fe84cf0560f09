"""Audit entries on the wire, in the two documents' shapes, and parsing their filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from hostplane.core.errors import ValidationFailed
from hostplane.core.schemas import ApiModel
from hostplane.platform.audit.models import AuditLog

# Actions and resource types: dotted words of letters, digits, "_", "-", ":".
ACTION_PATTERN = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$"
# The mPanel ``type`` filter also takes a trailing ".*" (``subscription.*``).
ACTION_PREFIX_PATTERN = r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*(\.\*)?$"


class AuditLogOut(ApiModel):
    """An entry as Catalyst's ``GET /api/admin/audit-logs`` shows it."""

    id: str
    user_id: str | None = Field(description="The user who acted (an API key's creator).")
    username: str | None = Field(description="That user's username, while the account exists.")
    action: str = Field(description="resource.action, e.g. server.start")
    resource_type: str
    resource_id: str | None
    metadata: dict[str, Any]
    ip_address: str | None
    created_at: datetime

    @classmethod
    def of(cls, entry: AuditLog, username: str | None) -> AuditLogOut:
        return cls(
            id=entry.id,
            user_id=entry.user_id,
            username=username,
            action=entry.action,
            resource_type=entry.resource_type,
            resource_id=entry.resource_id,
            metadata=entry.meta,
            ip_address=entry.ip_address,
            created_at=entry.created_at,
        )


class AuditEntryOut(ApiModel):
    """An entry as mPanel's ``GET /api/audit`` shows it."""

    id: str
    tenant_id: str | None = Field(description="Null for the platform's own entries.")
    actor_id: str | None = Field(
        description="Who acted: a user, API key or node id; 'system' for background work."
    )
    action: str = Field(description="resource.action, e.g. subscription.created")
    resource_type: str
    resource_id: str | None
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, entry: AuditLog) -> AuditEntryOut:
        return cls(
            id=entry.id,
            tenant_id=entry.tenant_id,
            actor_id=entry.actor_id,
            action=entry.action,
            resource_type=entry.resource_type,
            resource_id=entry.resource_id,
            metadata=entry.meta,
            created_at=entry.created_at,
        )


def parse_since(value: str | None) -> datetime | None:
    """An ISO 8601 date or date-time; one without an offset is taken as UTC."""
    if value is None:
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValidationFailed(
            "Invalid request: since: not an ISO 8601 date or date-time",
            details={
                "fields": [
                    {
                        "field": "since",
                        "in": "query",
                        "message": "an ISO 8601 date or date-time, e.g. 2026-01-25T02:29:17Z",
                        "type": "datetime_parsing",
                    }
                ]
            },
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def action_prefix(value: str | None) -> str | None:
    """The mPanel ``type`` filter without its optional ``.*`` suffix."""
    return value.removesuffix(".*") if value is not None else None
