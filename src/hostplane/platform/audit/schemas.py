"""Audit entries on the wire, in the two documents' shapes, and parsing their filters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from hostplane.core.bounds import parse_moment
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
    return None if value is None else parse_moment(value, field="since")


def action_prefix(value: str | None) -> str | None:
    """The mPanel ``type`` filter without its optional ``.*`` suffix."""
    return value.removesuffix(".*") if value is not None else None
