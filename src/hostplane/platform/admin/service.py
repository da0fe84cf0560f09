"""Reading and changing the runtime configuration.

A change is validated as a whole (the stored overrides plus the PATCH must
make a valid configuration), stored with a new version, audited, and
announced with ``config.changed`` once the transaction commits; every
process applies it from that event (see :mod:`hostplane.platform.admin.live`).
"""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.config import Settings
from hostplane.core.db.session import record_event
from hostplane.core.errors import ValidationFailed
from hostplane.core.events.bus import Event
from hostplane.core.principal import Principal
from hostplane.platform.admin.models import GLOBAL_KEY, PlatformConfig
from hostplane.platform.admin.schemas import ConfigOut, RuntimeConfig, defaults_from
from hostplane.platform.audit import service as audit

log = structlog.get_logger(__name__)

CONFIG_CHANGED = "config.changed"


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it, section by section."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build(settings: Settings, overrides: dict[str, Any]) -> RuntimeConfig:
    """The configuration the overrides make over the static defaults.

    Overrides stored by an older release that no longer validate are
    dropped with a warning rather than keeping the panel from starting.
    """
    base = defaults_from(settings).model_dump(by_alias=False, mode="json")
    try:
        return RuntimeConfig.model_validate(merge(base, overrides))
    except ValidationError as exc:
        log.warning("config.stored_overrides_invalid", errors=exc.error_count())
        return defaults_from(settings)


def describe(settings: Settings, row: PlatformConfig | None) -> ConfigOut:
    config = build(settings, row.overrides if row is not None else {})
    return ConfigOut(
        **config.model_dump(by_alias=False),
        version=row.version if row is not None else 0,
        updated_at=row.updated_at if row is not None else None,
        updated_by_user_id=row.updated_by_user_id if row is not None else None,
    )


async def load(session: AsyncSession, settings: Settings) -> ConfigOut:
    return describe(settings, await session.get(PlatformConfig, GLOBAL_KEY))


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "in": "body",
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors()
    ]


async def update(
    session: AsyncSession, settings: Settings, principal: Principal, changes: dict[str, Any]
) -> ConfigOut:
    """Apply a PATCH (snake_case, nested). 400 naming the field when the result is invalid."""
    row = await session.get(PlatformConfig, GLOBAL_KEY, with_for_update=True)
    if row is None:
        row = PlatformConfig(key=GLOBAL_KEY, version=0, overrides={})
        session.add(row)
    overrides = merge(row.overrides or {}, changes)
    base = defaults_from(settings).model_dump(by_alias=False, mode="json")
    try:
        RuntimeConfig.model_validate(merge(base, overrides))
    except ValidationError as exc:
        fields = _field_errors(exc)
        summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields[:5])
        raise ValidationFailed(
            f"Invalid configuration: {summary}", details={"fields": fields}
        ) from None
    row.overrides = overrides
    row.version = (row.version or 0) + 1
    row.updated_at = utcnow()
    row.updated_by_user_id = principal.user_id
    await session.flush()
    out = describe(settings, row)
    audit.record(
        session,
        action="config.update",
        resource_type="config",
        resource_id=GLOBAL_KEY,
        metadata={"version": row.version, "changes": changes},
    )
    record_event(
        session,
        Event(
            CONFIG_CHANGED,
            {"version": row.version, "config": out.model_dump(by_alias=False, mode="json")},
        ),
    )
    return out
