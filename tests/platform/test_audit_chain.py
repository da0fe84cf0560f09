"""The audit log's hash chains: sealing, tampering, retention and concurrent appends."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import shifted, utcnow
from hostplane.core.db.tenancy import CrossTenantWrite, scope_to_tenant
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.identity.tenants.models import Tenant
from hostplane.models import metadata
from hostplane.platform.audit.chain import GENESIS_HASH, PLATFORM_CHAIN, chain_for, entry_hash
from hostplane.platform.audit.models import AuditChainHead, AuditLog
from hostplane.platform.audit.service import AuditChainBroken, prune, record, verify
from tests.support.factories import make_tenant

# The table itself, for changing rows behind the application's back.
audit_logs = metadata.tables["audit_logs"]


async def write_entries(
    runtime: Runtime, count: int, *, tenant_id: str | None = None, action: str = "thing.poke"
) -> None:
    """``count`` entries, one unit of work each, as background work would write them."""
    for n in range(count):
        async with runtime.unit_of_work() as session:
            record(
                session,
                action=action,
                resource_type="thing",
                resource_id=f"thing-{n}",
                metadata={"n": n},
                tenant_id=tenant_id,
            )


async def entries(db: AsyncSession, chain: str | None = None) -> list[AuditLog]:
    await db.commit()  # a fresh snapshot: see what other connections wrote
    statement = select(AuditLog).order_by(AuditLog.chain, AuditLog.seq)
    if chain is not None:
        statement = statement.where(AuditLog.chain == chain)
    return list(await db.scalars(statement.execution_options(populate_existing=True)))


async def check(runtime: Runtime) -> Any:
    async with runtime.unit_of_work(read_only=True) as session:
        return await verify(session)


async def test_a_clean_chain_verifies_and_links_every_entry(
    runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    await write_entries(runtime, 3)
    await write_entries(runtime, 2, tenant_id=tenant.id)

    report = await check(runtime)
    assert report.ok, report.breaks
    assert (report.entries, report.chains) == (5, 2)

    platform = await entries(db, PLATFORM_CHAIN)
    assert [row.seq for row in platform] == [1, 2, 3]
    assert platform[0].prev_hash == GENESIS_HASH
    assert [row.prev_hash for row in platform[1:]] == [row.hash for row in platform[:-1]]
    assert all(row.hash == entry_hash(row.hashed_fields()) for row in platform)
    assert {row.tenant_id for row in platform} == {None}
    first = platform[0]
    assert (first.actor_type, first.actor_id, first.user_id) == ("system", "system", None)
    assert (first.action, first.resource_type, first.resource_id) == (
        "thing.poke",
        "thing",
        "thing-0",
    )
    assert first.meta == {"n": 0} and first.created_at.tzinfo is not None

    tenant_rows = await entries(db, chain_for(tenant.id))
    assert [row.seq for row in tenant_rows] == [1, 2]
    assert {row.tenant_id for row in tenant_rows} == {tenant.id}


async def test_editing_an_entry_breaks_the_chain_at_that_entry(
    runtime: Runtime, db: AsyncSession
) -> None:
    await write_entries(runtime, 5)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(audit_logs)
            .where(audit_logs.c.chain == PLATFORM_CHAIN, audit_logs.c.seq == 3)
            .values(metadata={"n": 300})
        )
    report = await check(runtime)
    assert not report.ok
    [problem] = report.breaks
    assert (problem.chain, problem.seq) == (PLATFORM_CHAIN, 3)
    assert "altered" in problem.reason


async def test_deleting_a_middle_entry_breaks_the_chain(runtime: Runtime, db: AsyncSession) -> None:
    tenant = await make_tenant(db)
    await write_entries(runtime, 5, tenant_id=tenant.id)
    await write_entries(runtime, 2)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            delete(audit_logs).where(
                audit_logs.c.chain == chain_for(tenant.id), audit_logs.c.seq == 2
            )
        )
    report = await check(runtime)
    [problem] = report.breaks
    assert (problem.chain, problem.seq) == (chain_for(tenant.id), 2)
    assert "missing" in problem.reason
    assert report.chains == 2, "the untouched platform chain was verified too"


async def test_cutting_off_the_newest_entries_is_noticed(runtime: Runtime) -> None:
    await write_entries(runtime, 4)
    async with runtime.engine.begin() as connection:
        await connection.execute(delete(audit_logs).where(audit_logs.c.seq >= 3))
    [problem] = (await check(runtime)).breaks
    assert (problem.chain, problem.seq) == (PLATFORM_CHAIN, 3)


async def test_prune_keeps_the_chain_verifiable_from_its_anchor(
    runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    with shifted(timedelta(days=-40)):
        await write_entries(runtime, 3)
        await write_entries(runtime, 2, tenant_id=tenant.id)
    await write_entries(runtime, 2)
    old_platform = await entries(db, PLATFORM_CHAIN)
    last_old_hash = old_platform[2].hash

    async with runtime.unit_of_work() as session:
        report = await prune(session, utcnow() - timedelta(days=30))
    assert (report.deleted, report.chains) == (5, 2)

    platform = await entries(db, PLATFORM_CHAIN)
    assert [row.seq for row in platform] == [4, 5, 6], "entries 1-3 are gone; 6 records the prune"
    assert platform[-1].action == "audit.prune" and platform[-1].meta["deleted"] == 5
    assert await entries(db, chain_for(tenant.id)) == []
    head = await db.get(AuditChainHead, PLATFORM_CHAIN, populate_existing=True)
    assert head is not None and (head.anchor_seq, head.anchor_hash) == (3, last_old_hash)
    tenant_head = await db.get(AuditChainHead, chain_for(tenant.id), populate_existing=True)
    assert tenant_head is not None and (tenant_head.anchor_seq, tenant_head.seq) == (2, 2)

    report_after = await check(runtime)
    assert report_after.ok, report_after.breaks
    assert (report_after.entries, report_after.chains) == (3, 2)

    # The chains go on from where they were; verification still passes.
    await write_entries(runtime, 1, tenant_id=tenant.id)
    assert [row.seq for row in await entries(db, chain_for(tenant.id))] == [3]
    assert (await check(runtime)).ok


async def test_prune_refuses_to_destroy_a_broken_stretch(
    runtime: Runtime, db: AsyncSession
) -> None:
    with shifted(timedelta(days=-40)):
        await write_entries(runtime, 3)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(audit_logs).where(audit_logs.c.seq == 2).values(action="thing.innocent")
        )
    with pytest.raises(AuditChainBroken) as raised:
        async with runtime.unit_of_work() as session:
            await prune(session, utcnow() - timedelta(days=30))
    assert (raised.value.problem.chain, raised.value.problem.seq) == (PLATFORM_CHAIN, 2)
    assert len(await entries(db)) == 3, "nothing was deleted"


async def test_concurrent_appends_never_fork_a_chain(runtime: Runtime, db: AsyncSession) -> None:
    tenant = await make_tenant(db)
    start = asyncio.Event()

    async def one(n: int) -> None:
        await start.wait()
        async with runtime.unit_of_work() as session:
            # Both chains, in an order that differs between units of work.
            first, second = (tenant.id, None) if n % 2 else (None, tenant.id)
            record(session, action="thing.poke", resource_type="thing", tenant_id=first)
            record(session, action="thing.poke", resource_type="thing", tenant_id=second)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(one(n)) for n in range(20)]
    start.set()
    await asyncio.gather(*tasks)

    report = await check(runtime)
    assert report.ok, report.breaks
    assert (report.entries, report.chains) == (40, 2)
    for chain in (PLATFORM_CHAIN, chain_for(tenant.id)):
        assert [row.seq for row in await entries(db, chain)] == list(range(1, 21))


async def test_a_rolled_back_unit_of_work_writes_nothing(
    runtime: Runtime, db: AsyncSession
) -> None:
    with pytest.raises(RuntimeError):
        async with runtime.unit_of_work() as session:
            record(session, action="thing.poke", resource_type="thing")
            raise RuntimeError("the change failed")
    async with runtime.unit_of_work() as session:
        pass
    assert await entries(db) == []
    assert (await db.scalars(select(AuditChainHead))).all() == []


async def test_an_entry_recorded_on_a_plain_session_is_sealed_on_commit(
    runtime: Runtime, db: AsyncSession
) -> None:
    actor = Principal(kind="user", id="u-1", user_id="u-1")
    async with runtime.sessions() as session:
        record(session, action="user.poke", resource_type="user", resource_id="u-1", actor=actor)
        await session.commit()
    [row] = await entries(db)
    assert (row.actor_type, row.actor_id, row.user_id, row.seq) == ("user", "u-1", "u-1", 1)
    assert (await check(runtime)).ok


async def test_a_savepoint_neither_seals_nor_drops_recorded_entries(
    runtime: Runtime, db: AsyncSession
) -> None:
    await make_tenant(db, slug="taken")
    async with runtime.unit_of_work() as session:
        record(session, action="thing.poke", resource_type="thing")
        async with session.begin_nested():
            session.add(Tenant(name="ok", slug="fresh"))
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                session.add(Tenant(name="clash", slug="taken"))
    [row] = await entries(db)
    assert row.action == "thing.poke" and row.seq == 1


async def test_a_tenant_confined_session_cannot_record_for_another_tenant(
    runtime: Runtime, db: AsyncSession
) -> None:
    mine, theirs = await make_tenant(db, name="Mine"), await make_tenant(db, name="Theirs")
    async with runtime.unit_of_work() as session:
        scope_to_tenant(session, mine.id)
        with pytest.raises(CrossTenantWrite):
            record(session, action="thing.poke", resource_type="thing", tenant_id=theirs.id)
        record(session, action="thing.poke", resource_type="thing")
    [row] = await entries(db)
    assert (row.tenant_id, row.chain) == (mine.id, chain_for(mine.id))


async def test_metadata_is_stored_so_that_it_still_verifies(
    runtime: Runtime, db: AsyncSession
) -> None:
    awkward = {
        "big": 1e16,
        "fraction": 0.1,
        "tiny": 1.5e-07,
        "nested": {
            "list": [1, "two", None, True],
            "when": datetime(2026, 1, 25, 2, 29, tzinfo=UTC),
        },
        "text": "nul\x00byte and ünïcödé",
        "nan": float("nan"),
        "tags": {"b", "a"},
    }
    async with runtime.unit_of_work() as session:
        record(session, action="thing.poke", resource_type="thing", metadata=awkward)
    [row] = await entries(db)
    assert row.meta["big"] == 10**16 and row.meta["fraction"] == 0.1
    assert row.meta["nested"]["when"] == "2026-01-25T02:29:00Z"
    assert row.meta["text"] == "nulbyte and ünïcödé" and row.meta["tags"] == ["a", "b"]
    assert (await check(runtime)).ok


async def test_actions_must_name_a_resource_and_an_action(runtime: Runtime) -> None:
    async with runtime.unit_of_work() as session:
        with pytest.raises(ValueError, match=r"resource\.action"):
            record(session, action="poke", resource_type="thing")
