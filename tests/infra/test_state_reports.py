"""What the agent reports: status changes, crashes, restart policy and the crash-loop guard."""

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted
from hostplane.core.db.session import publish_pending
from hostplane.core.events.bus import Event
from hostplane.core.runtime import Runtime
from hostplane.infra.servers import commands, reports, service
from hostplane.infra.servers.models import Server
from hostplane.protocol import StartServer, StopServer, dump, parse_message
from tests.infra.conftest import Fleet
from tests.support.infra import set_status


async def report(
    db: AsyncSession, server_id: str, state: str, exit_code: int | None = None
) -> list[str]:
    sends = await reports.apply_state_report(db, server_id, state, exit_code)
    await db.commit()
    return sends


async def fresh(db: AsyncSession, server_id: str) -> Server:
    row = await db.scalar(
        select(Server).where(Server.id == server_id).execution_options(populate_existing=True)
    )
    assert row is not None
    return row


async def configure(
    db: AsyncSession, server_id: str, policy: str, max_crash_count: int = 5
) -> None:
    row = await fresh(db, server_id)
    row.restart_policy = policy
    row.max_crash_count = max_crash_count
    await db.commit()


async def test_normal_lifecycle_reports(db: AsyncSession, fleet: Fleet) -> None:
    sid = fleet.server.id
    await set_status(db, fleet.server, "installing")
    assert await report(db, sid, "stopped") == []
    assert (await fresh(db, sid)).status == "stopped"
    await set_status(db, fleet.server, "starting")
    assert await report(db, sid, "running") == []
    assert (await fresh(db, sid)).status == "running"
    await set_status(db, fleet.server, "stopping")
    assert await report(db, sid, "stopped", 0) == []
    row = await fresh(db, sid)
    assert row.status == "stopped" and row.crash_count == 0
    assert await report(db, "missing", "running") == []
    assert await report(db, sid, "flying") == []


@pytest.mark.parametrize(
    ("policy", "state", "exit_code", "restarts", "counts"),
    [
        ("on-failure", "crashed", 1, True, True),
        ("on-failure", "stopped", 137, True, True),
        ("on-failure", "stopped", 0, False, False),
        ("always", "stopped", 0, True, False),
        ("always", "crashed", None, True, True),
        ("never", "crashed", 1, False, True),
        ("never", "stopped", 0, False, False),
    ],
)
async def test_restart_policy(
    db: AsyncSession,
    fleet: Fleet,
    policy: str,
    state: str,
    exit_code: int | None,
    restarts: bool,
    counts: bool,
) -> None:
    await configure(db, fleet.server.id, policy)
    await set_status(db, fleet.server, "running")
    sends = await report(db, fleet.server.id, state, exit_code)
    row = await fresh(db, fleet.server.id)
    assert sends == (["start_server"] if restarts else [])
    assert row.crash_count == (1 if counts else 0)
    expected = "starting" if restarts else ("crashed" if counts else "stopped")
    assert row.status == expected
    if counts:
        assert row.last_crash_at is not None


async def test_max_crash_count_stops_restarts(db: AsyncSession, fleet: Fleet) -> None:
    await configure(db, fleet.server.id, "on-failure", max_crash_count=2)
    await set_status(db, fleet.server, "running")
    assert await report(db, fleet.server.id, "crashed", 1) == ["start_server"]
    await set_status(db, fleet.server, "running")
    assert await report(db, fleet.server.id, "crashed", 1) == []
    row = await fresh(db, fleet.server.id)
    assert row.status == "crashed" and row.crash_count == 2


async def test_crash_loop_guard(db: AsyncSession, fleet: Fleet) -> None:
    await configure(db, fleet.server.id, "always", max_crash_count=100)
    for _ in range(reports.CRASH_LOOP_LIMIT):
        await set_status(db, fleet.server, "running")
        assert await report(db, fleet.server.id, "crashed", 1) == ["start_server"]
    await set_status(db, fleet.server, "running")
    assert await report(db, fleet.server.id, "crashed", 1) == []
    assert (await fresh(db, fleet.server.id)).status == "crashed"
    # Once the window has passed, the policy restarts again.
    with shifted(reports.CRASH_LOOP_WINDOW + timedelta(seconds=1)):
        await set_status(db, fleet.server, "running")
        assert await report(db, fleet.server.id, "crashed", 1) == ["start_server"]


async def test_a_suspended_server_that_runs_is_stopped(db: AsyncSession, fleet: Fleet) -> None:
    await set_status(db, fleet.server, "suspended")
    assert await report(db, fleet.server.id, "running") == ["stop_server"]
    assert await report(db, fleet.server.id, "stopped") == []
    assert (await fresh(db, fleet.server.id)).status == "suspended"


async def test_state_changes_are_published_for_clients(
    db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await set_status(db, fleet.server, "starting")
    async with runtime.bus.subscribe(f"server.{fleet.server.id}.state") as subscription:
        await reports.apply_state_report(db, fleet.server.id, "running")
        await db.commit()
        await publish_pending(db, runtime.bus)
        event: Event = await subscription.get()
    assert event.type == "server.state_changed"
    assert event.data == {
        "serverId": fleet.server.id,
        "state": "running",
        "previous": "starting",
        "message": None,
    }


async def test_commands_are_the_protocol_models(db: AsyncSession, fleet: Fleet) -> None:
    server = await fresh(db, fleet.server.id)
    start = await commands.build(db, service.PlannedCommand(server, "start_server", "stopped"))
    assert isinstance(start, StartServer)
    assert start.server_uuid == fleet.server.uuid
    # The value travels in the environment; the command only refers to it.
    assert start.template.start_command == 'python3 -u echo.py --memory "${MEMORY}"'
    assert start.environment["MEMORY"] == "1024M"
    assert start.environment["SERVER_PORT"] == "30000"
    assert start.port_bindings == {"30000": 30000}
    stop = await commands.build(
        db, service.PlannedCommand(server, "stop_server", "running", stop_timeout=15)
    )
    assert isinstance(stop, StopServer) and stop.timeout_seconds == 15
    # What goes on the wire parses back into the same model.
    assert parse_message(dump(stop)) == stop
    await db.commit()


async def test_an_install_ends_install_failed_with_the_reason(
    db: AsyncSession, runtime: Runtime, fleet: Fleet
) -> None:
    await set_status(db, fleet.server, "installing")
    assert (
        await reports.apply_state_report(
            db, fleet.server.id, "install_failed", message="image busybox:nope is not available"
        )
        == []
    )
    await db.commit()
    row = await fresh(db, fleet.server.id)
    assert row.status == "install_failed"
    assert row.status_reason == "image busybox:nope is not available"


async def test_reconcile_ends_an_install_the_agent_lost(db: AsyncSession, fleet: Fleet) -> None:
    await set_status(db, fleet.server, "installing")
    # The agent restarted: it lists the server (an earlier run) as stopped.
    await reports.apply_state_report(db, fleet.server.id, "stopped", reconciling=True)
    await db.commit()
    row = await fresh(db, fleet.server.id)
    assert row.status == "install_failed"
    assert row.status_reason == reports.INSTALL_INTERRUPTED
    # Later reconciles do not turn the failed install into a ready server.
    await reports.apply_state_report(db, fleet.server.id, "stopped", reconciling=True)
    await db.commit()
    assert (await fresh(db, fleet.server.id)).status == "install_failed"
