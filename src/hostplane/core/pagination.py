"""``page`` / ``limit`` pagination and the ``pagination`` block of the envelope."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

T = TypeVar("T")


class PageParams(BaseModel):
    """Which page a client asks for. ``limit`` is capped at 100."""

    page: int = Field(default=1, ge=1, description="Page number, from 1.")
    limit: int = Field(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page (max 100)."
    )

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


class PageMeta(BaseModel):
    page: int
    limit: int
    total: int
    pages: int

    @classmethod
    def of(cls, params: PageParams, total: int) -> PageMeta:
        return cls(
            page=params.page, limit=params.limit, total=total, pages=math.ceil(total / params.limit)
        )


async def paginate(
    session: AsyncSession, statement: Select[T], params: PageParams
) -> tuple[Sequence[T], PageMeta]:
    """One page of ``statement``'s rows and the block describing it."""
    count_statement = select(func.count()).select_from(statement.order_by(None).subquery())
    total = (await session.execute(count_statement)).scalar_one()
    rows = (await session.scalars(statement.limit(params.limit).offset(params.offset))).all()
    return rows, PageMeta.of(params, total)
