"""Checkpoints: cutting the newest entries off and rewinding the head is noticed."""

from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime
from hostplane.core.runtime import Runtime
from hostplane.models import metadata
from hostplane.platform.audit.chain import GENESIS_HASH, PLATFORM_CHAIN, chain_for
from hostplane.platform.audit.checkpoint import (
    Checkpoint,
    HeadState,
    derive_key,
    inspect,
    sign,
)
from hostplane.platform.audit.models import AuditCheckpoint, AuditLog
from hostplane.platform.audit.reseal import reseal
from hostplane.platform.audit.service import AuditChainBroken
from tests.conftest import TEST_SECRET
from tests.platform.test_audit_chain import check, entries, write_entries
from tests.support.factories import make_tenant

audit_logs = metadata.tables["audit_logs"]
audit_heads = metadata.tables["audit_chain_heads"]
audit_checkpoints = metadata.tables["audit_checkpoints"]


async def truncate(runtime: Runtime, chain: str, *, keep: int) -> None:
    """What an attacker with write access to the database does: delete the
    entries after ``keep`` and rewind the head to the last one kept."""
    async with runtime.engine.begin() as connection:
        kept_hash = await connection.scalar(
            select(audit_logs.c.hash).where(audit_logs.c.chain == chain, audit_logs.c.seq == keep)
        )
        await connection.execute(
            delete(audit_logs).where(audit_logs.c.chain == chain, audit_logs.c.seq > keep)
        )
        await connection.execute(
            update(audit_heads).where(audit_heads.c.chain == chain).values(seq=keep, hash=kept_hash)
        )


async def test_an_untouched_log_verifies_with_a_checkpoint_per_chain(
    runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    await write_entries(runtime, 3)
    await write_entries(runtime, 2, tenant_id=tenant.id)
    report = await check(runtime)
    assert report.ok, report.breaks
    await db.commit()
    rows = {
        row.chain: row
        for row in await db.scalars(
            select(AuditCheckpoint).execution_options(populate_existing=True)
        )
    }
    assert set(rows) == {PLATFORM_CHAIN, chain_for(tenant.id)}
    platform = rows[PLATFORM_CHAIN]
    newest = await db.scalar(
        select(AuditLog).where(AuditLog.chain == PLATFORM_CHAIN).order_by(AuditLog.seq.desc())
    )
    assert newest is not None
    assert (platform.seq, platform.hash, platform.tampered_seq) == (3, newest.hash, None)


async def test_deleting_the_newest_entries_and_rewinding_the_head_is_noticed(
    runtime: Runtime,
) -> None:
    await write_entries(runtime, 6)
    await truncate(runtime, PLATFORM_CHAIN, keep=3)
    [problem] = (await check(runtime)).breaks
    assert (problem.chain, problem.seq) == (PLATFORM_CHAIN, 4)
    assert "truncated after checkpoint 6" in problem.reason
    assert "entries 4 to 6 were removed" in problem.reason


async def test_rewinding_the_checkpoint_too_is_noticed_without_the_secret(
    runtime: Runtime,
) -> None:
    await write_entries(runtime, 5)
    await truncate(runtime, PLATFORM_CHAIN, keep=2)
    async with runtime.engine.begin() as connection:
        head = (
            await connection.execute(
                select(audit_heads).where(audit_heads.c.chain == PLATFORM_CHAIN)
            )
        ).one()
        # The attacker's best guess at a key: a MAC made without the secret.
        forged = sign(
            derive_key("not the panel's secret"),
            PLATFORM_CHAIN,
            HeadState(head.seq, head.hash, head.anchor_seq, head.anchor_hash),
        )
        await connection.execute(
            update(audit_checkpoints)
            .where(audit_checkpoints.c.chain == PLATFORM_CHAIN)
            .values(seq=head.seq, hash=head.hash, mac=forged)
        )
    [problem] = (await check(runtime)).breaks
    assert problem.chain == PLATFORM_CHAIN
    assert "checkpoint was altered or forged" in problem.reason


async def test_deleting_the_checkpoint_is_noticed(runtime: Runtime) -> None:
    await write_entries(runtime, 2)
    async with runtime.engine.begin() as connection:
        await connection.execute(delete(audit_checkpoints))
    [problem] = (await check(runtime)).breaks
    assert "checkpoint is missing" in problem.reason


async def test_deleting_a_whole_chain_but_its_checkpoint_is_noticed(
    runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await make_tenant(db)
    await write_entries(runtime, 2, tenant_id=tenant.id)
    chain = chain_for(tenant.id)
    async with runtime.engine.begin() as connection:
        await connection.execute(delete(audit_logs).where(audit_logs.c.chain == chain))
        await connection.execute(delete(audit_heads).where(audit_heads.c.chain == chain))
    [problem] = (await check(runtime)).breaks
    assert problem.chain == chain
    assert "head and entries up to 2 were deleted" in problem.reason


async def test_appending_after_a_truncation_does_not_hide_it(runtime: Runtime) -> None:
    await write_entries(runtime, 5)
    await truncate(runtime, PLATFORM_CHAIN, keep=2)
    # The panel goes on writing: entry 3 again, then 4.
    await write_entries(runtime, 2)
    report = await check(runtime)
    [problem] = report.breaks
    assert (problem.chain, problem.seq) == (PLATFORM_CHAIN, 3)
    assert "truncated after checkpoint 5" in problem.reason
    # And again after more appends: the finding is carried under the MAC.
    await write_entries(runtime, 1)
    [again] = (await check(runtime)).breaks
    assert again == problem


def test_a_checkpoint_verifies_only_under_the_key_that_signed_it() -> None:
    key = derive_key(TEST_SECRET)
    state = HeadState(7, "a" * 64, 0, GENESIS_HASH)
    good = Checkpoint(PLATFORM_CHAIN, state, None, None, sign(key, PLATFORM_CHAIN, state))
    assert inspect(key, PLATFORM_CHAIN, state, good).first is None
    other_key = derive_key(TEST_SECRET + "x")
    assert inspect(other_key, PLATFORM_CHAIN, state, good).first is not None
    # The MAC binds the chain: a checkpoint cannot be moved to another chain.
    moved: Any = inspect(key, "tenant:x", state, good).first
    assert moved is not None and "forged" in moved.reason
    # Clearing a recorded finding breaks the MAC.
    flagged = Checkpoint(
        PLATFORM_CHAIN,
        state,
        3,
        "truncated",
        sign(key, PLATFORM_CHAIN, state, tampered_seq=3, tampered_reason="truncated"),
    )
    assert inspect(key, PLATFORM_CHAIN, state, flagged).first is not None
    cleared = Checkpoint(PLATFORM_CHAIN, state, None, None, flagged.mac)
    cleared_problem: Any = inspect(key, PLATFORM_CHAIN, state, cleared).first
    assert cleared_problem is not None and "forged" in cleared_problem.reason


async def test_reseal_accepts_a_reported_truncation_and_audits_that_it_did(
    runtime: Runtime, db: AsyncSession
) -> None:
    await write_entries(runtime, 5)
    await truncate(runtime, PLATFORM_CHAIN, keep=3)
    [finding] = (await check(runtime)).breaks
    async with runtime.unit_of_work() as session:
        report = await reseal(session)
    assert report.accepted == {PLATFORM_CHAIN: str(finding)}
    assert (await check(runtime)).ok
    newest = (await entries(db, PLATFORM_CHAIN))[-1]
    assert newest.action == "audit.reseal"
    assert newest.meta == {"accepted": {PLATFORM_CHAIN: str(finding)}}
    # Nothing left to accept: a second reseal changes nothing and records nothing.
    async with runtime.unit_of_work() as session:
        assert (await reseal(session)).accepted == {}
    assert (await entries(db, PLATFORM_CHAIN))[-1].id == newest.id


async def test_a_changed_secret_key_is_reported_until_resealed(runtime: Runtime) -> None:
    await write_entries(runtime, 2)
    changed = build_runtime(
        runtime.settings.model_copy(update={"secret_key": SecretStr(TEST_SECRET + "-new")})
    )
    try:
        [problem] = (await check(changed)).breaks
        assert "altered or forged" in problem.reason
        async with changed.unit_of_work() as session:
            await reseal(session)
        assert (await check(changed)).ok
        await write_entries(changed, 1)
        assert (await check(changed)).ok
        # The old secret no longer verifies what the new one signed.
        assert not (await check(runtime)).ok
    finally:
        await changed.engine.dispose()


async def test_reseal_refuses_a_chain_whose_entries_do_not_verify(runtime: Runtime) -> None:
    await write_entries(runtime, 3)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            update(audit_logs).where(audit_logs.c.seq == 2).values(action="thing.hidden")
        )
    with pytest.raises(AuditChainBroken, match="sequence 2"):
        async with runtime.unit_of_work() as session:
            await reseal(session)
