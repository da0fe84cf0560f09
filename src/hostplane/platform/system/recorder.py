"""Writing the queue's events to the system event log, inside their own transaction.

The job worker, the webhook dispatcher and (later) alerts already record
domain events for the bus (``record_event``); right before a transaction
commits, this listener copies the ones the log keeps into ``system_events``.
So the log holds exactly what committed, and no producer needs a second call.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from hostplane.core.db.session import pending_events
from hostplane.core.events.bus import Event
from hostplane.platform.jobs.registry import registry as job_registry
from hostplane.platform.system.models import SystemEvent

# Exact names, and families ending in ".".
LOGGED_TYPES = frozenset({"job.started", "job.retrying", "job.failed", "job.succeeded"})
LOGGED_FAMILIES = ("webhook.delivery.", "webhook.endpoint.", "alert.")
_WRITTEN = "hostplane.system_events_written"
# The data keys that name the event's subject, in order of preference.
_SUBJECT_KEYS = ("jobId", "deliveryId", "alertId", "endpointId")


def is_logged(item: Event) -> bool:
    if item.type in LOGGED_TYPES:
        # Recurring maintenance (sweeps, retention) would drown the provisioning events.
        spec = job_registry.get(str(item.data.get("type")))
        routine = item.type in ("job.started", "job.succeeded")
        return spec is None or spec.every_seconds is None or not routine
    return item.type.startswith(LOGGED_FAMILIES)


@event.listens_for(Session, "before_commit")
def _write_system_events(session: Session) -> None:
    written: set[str] = session.info.setdefault(_WRITTEN, set())
    rows = []
    for item in pending_events(session):
        if item.id in written or not is_logged(item):
            continue
        written.add(item.id)
        subject = next((item.data[key] for key in _SUBJECT_KEYS if item.data.get(key)), None)
        rows.append(
            SystemEvent(
                id=item.id,
                tenant_id=item.tenant_id,
                type=item.type,
                subject_id=str(subject)[:64] if subject is not None else None,
                data=dict(item.data),
                created_at=item.occurred_at,
            )
        )
    if rows:
        session.add_all(rows)
