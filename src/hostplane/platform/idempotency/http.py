"""``Idempotency-Key`` at the HTTP edge: the header and the replayed response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.principal import Principal
from hostplane.platform.idempotency import service
from hostplane.platform.idempotency.models import IdempotencyRecord

REPLAYED_HEADER = "Idempotent-Replayed"
_Answer = TypeVar("_Answer", bound=BaseModel)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a request safely: the same key and body replays the first "
        "answer; the same key with another body is 409 IDEMPOTENCY_KEY_REUSED. Kept 24 hours.",
    ),
]


@dataclass
class Slot:
    """Where a request under a key finds the first answer, or keeps its own."""

    replay: JSONResponse | None = None
    _record: IdempotencyRecord | None = field(default=None, repr=False)

    def keep(self, answer: _Answer, *, status_code: int = 200) -> _Answer:
        """Store ``answer`` as the one to replay; returns it unchanged."""
        if self._record is not None:
            self._record.status_code = status_code
            self._record.response = answer.model_dump(mode="json")
        return answer


@asynccontextmanager
async def replayable(
    session: AsyncSession,
    principal: Principal,
    key: str | None,
    *,
    scope: str,
    body: BaseModel | dict[str, Any] | None,
) -> AsyncIterator[Slot]:
    """A :class:`Slot` for the request; without a key, one that replays nothing.

    The same key with another body raises 409 ``IDEMPOTENCY_KEY_REUSED``.
    """
    caller = principal.user_id or principal.id
    if key is None or principal.tenant_id is None or caller is None:
        if key is not None:
            service.check_key(key)
        yield Slot()
        return
    claim = await service.claim(
        session, tenant_id=principal.tenant_id, caller=caller, scope=scope, key=key, body=body
    )
    if isinstance(claim, service.Stored):
        yield Slot(
            replay=JSONResponse(
                claim.response, status_code=claim.status_code, headers={REPLAYED_HEADER: "true"}
            )
        )
        return
    yield Slot(_record=claim)
