"""``page`` / ``limit`` pagination and the ``pagination`` block of the envelope.

Every numeric input a client can send is bounded here (or with the helpers of
:mod:`hostplane.core.bounds`): a number past the bound is a 400
``VALIDATION_ERROR``, never clamped silently and never handed to the database,
where a 64-bit overflow would surface as a 500.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# page x limit stays far below 2**63 (the offset the database receives).
MAX_PAGE = 1_000_000

T = TypeVar("T")


class PageParams(BaseModel):
    """Which page a client asks for. ``limit`` is capped at 100; ``pageSize``
    (mPanel's name) is an alias of ``limit``."""

    model_config = ConfigDict(populate_by_name=True)

    page: int = Field(default=1, ge=1, le=MAX_PAGE, description="Page number, from 1.")
    limit: int = Field(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page (max 100)."
    )
    page_size: int | None = Field(
        default=None,
        alias="pageSize",
        ge=1,
        le=MAX_LIMIT,
        description="The same as `limit` (mPanel's name); `limit` wins when both are sent.",
    )

    @model_validator(mode="after")
    def _page_size_is_limit(self) -> PageParams:
        if self.page_size is not None and "limit" not in self.model_fields_set:
            self.limit = self.page_size
        return self

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
    """One page of ``statement``'s rows and the block describing it.

    The total rides along the page as a window count (one query, not two);
    a page past the end has no row to carry it, and a DISTINCT or GROUP BY
    would be counted before it applies: those count separately.
    """
    plain = not statement._distinct and not statement._group_by_clauses
    if plain:
        paged = statement.add_columns(func.count().over()).limit(params.limit)
        found = (await session.execute(paged.offset(params.offset))).all()
        if found:
            return [row[0] for row in found], PageMeta.of(params, int(found[0][-1]))
    count_statement = select(func.count()).select_from(statement.order_by(None).subquery())
    total = (await session.execute(count_statement)).scalar_one()
    if plain and total == 0:
        return [], PageMeta.of(params, 0)
    rows = (await session.scalars(statement.limit(params.limit).offset(params.offset))).all()
    return rows, PageMeta.of(params, total)
