"""What an agent reports about a server: state changes, crashes and the restart policy."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.infra.alerts import service as alerts
from hostplane.infra.servers import lifecycle, service
from hostplane.infra.servers.lifecycle import LIVE, OFF, STATES
from hostplane.infra.servers.models import Server

log = structlog.get_logger(__name__)

# Crash-loop guard: this many automatic restarts within the window and the
# server stays crashed until someone starts it (or resets the count).
CRASH_LOOP_LIMIT: Final = 3
CRASH_LOOP_WINDOW: Final = timedelta(minutes=10)
INSTALL_INTERRUPTED: Final = "the install was interrupted (the node's agent restarted)"


def _recent(server: Server, now: datetime) -> list[str]:
    cutoff = now - CRASH_LOOP_WINDOW
    return [t for t in server.recent_crashes or [] if datetime.fromisoformat(t) >= cutoff]


async def apply_state_report(
    session: AsyncSession,
    server_id: str,
    state: str,
    exit_code: int | None = None,
    *,
    message: str | None = None,
    reconciling: bool = False,
) -> list[str]:
    """Apply a ``server_state_update`` from the agent; returns the message kinds to send back.

    The agent reports reality, so any known state is recorded (a change outside
    the table is logged, not refused). An exit the panel did not ask for (state
    ``crashed``, or ``stopped`` with a non-zero exit code while running) counts
    as a crash. The restart policy then decides: ``always`` restarts after any
    unexpected exit, ``on-failure`` after crashes, ``never`` does not; and
    nothing restarts once ``crash_count`` reaches ``max_crash_count`` or after
    :data:`CRASH_LOOP_LIMIT` automatic restarts within :data:`CRASH_LOOP_WINDOW`
    (the crash-loop guard). A suspended server that reports running gets a stop.

    ``install_failed`` (with the agent's ``message``) ends an install. With
    ``reconciling`` (the list an agent sends when it connects) a server whose
    install was under way and that the agent no longer installs has lost its
    install, and the leftovers of an earlier run say nothing about a failed
    install.
    """
    server = await session.get(Server, server_id)
    if server is None or state not in STATES or state == "suspended":
        return []
    previous = server.status
    if exit_code is not None:
        server.last_exit_code = exit_code
    if previous == "suspended":
        return ["stop_server"] if state in LIVE else []
    if previous == "transferring" and state != "crashed":
        return []
    if reconciling and previous == "install_failed" and state in OFF:
        return []
    if reconciling and previous == "installing" and state != "installing":
        service.set_status(session, server, "install_failed", reason=INSTALL_INTERRUPTED)
        await session.flush()
        return []
    if state == "install_failed":
        service.set_status(
            session, server, "install_failed", reason=message or "the install failed"
        )
        await session.flush()
        return []
    was_live = previous in LIVE
    crashed = state == "crashed" or (
        state == "stopped" and was_live and exit_code is not None and exit_code != 0
    )
    clean_exit = state == "stopped" and was_live and not crashed
    now = utcnow()
    if not crashed and not clean_exit:
        if not lifecycle.can_transition(previous, state) and previous != state:
            log.info(
                "servers.unexpected_transition", server_id=server.id, previous=previous, state=state
            )
        service.set_status(session, server, state, reason=message)
        await session.flush()
        return []

    if crashed:
        server.crash_count += 1
        server.last_crash_at = now
        reason = message or (f"exit code {exit_code}" if exit_code is not None else None)
        service.set_status(session, server, "crashed", reason=reason)
        # In the same transaction as the crash: the alert exists if and only if the crash does.
        await alerts.server_crashed(session, server, reason)
    recent = _recent(server, now)
    wants_restart = server.restart_policy == "always" or (
        crashed and server.restart_policy == "on-failure"
    )
    below_limit = server.crash_count < server.max_crash_count
    looping = len(recent) >= CRASH_LOOP_LIMIT
    if wants_restart and below_limit and not looping:
        server.recent_crashes = [*recent, now.isoformat()]
        service.set_status(session, server, "starting", reason="restarted by policy")
        await session.flush()
        return ["start_server"]
    server.recent_crashes = recent
    if looping:
        log.warning("servers.crash_loop", server_id=server.id, crashes=len(recent))
    if clean_exit:
        service.set_status(session, server, "stopped")
    await session.flush()
    return []
