from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.identity.tenants.models import Tenant


async def test_datetimes_come_back_aware_in_utc(db: AsyncSession) -> None:
    moment = datetime(
        2026, 1, 24, 19, 29, 23, 274000, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    tenant = Tenant(name="T", slug="tz", created_at=moment)
    db.add(tenant)
    await db.commit()
    db.expunge_all()
    loaded = await db.scalar(select(Tenant).where(Tenant.slug == "tz"))
    assert loaded is not None
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at == moment
    assert loaded.created_at.hour == 13  # 19:29 at +05:30 is 13:59 UTC


async def test_naive_datetimes_are_refused(db: AsyncSession) -> None:
    db.add(Tenant(name="T", slug="naive", created_at=datetime(2026, 1, 1)))  # noqa: DTZ001 - the point of the test
    with pytest.raises(StatementError, match="naive datetime"):
        await db.flush()


async def test_datetime_comparisons_work_in_queries(db: AsyncSession) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for offset in range(3):
        db.add(Tenant(name="T", slug=f"s{offset}", created_at=base + timedelta(days=offset)))
    await db.commit()
    later = await db.scalars(
        select(Tenant.slug).where(Tenant.created_at > base).order_by(Tenant.created_at)
    )
    assert list(later) == ["s1", "s2"]
