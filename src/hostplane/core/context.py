"""What a unit of work knows about the request that opened it.

The session dependency stores a :class:`RequestContext` in the session, so
code that runs inside the transaction without seeing the request (the audit
hook before commit, say) knows who acted, from where, and on which route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hostplane.core.principal import Principal

_CONTEXT_KEY = "hostplane.request_context"


@dataclass(frozen=True, slots=True)
class RequestContext:
    principal: Principal
    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    method: str | None = None
    # The route template ("/api/jobs/{job_id}/retry") and its parameters.
    route: str | None = None
    path_params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_mutating(self) -> bool:
        return self.method not in (None, "GET", "HEAD", "OPTIONS")


def attach_context(session: Any, context: RequestContext) -> None:
    """Store ``context`` on a (sync or async) session."""
    getattr(session, "sync_session", session).info[_CONTEXT_KEY] = context


def request_context(session: Any) -> RequestContext | None:
    value = getattr(session, "sync_session", session).info.get(_CONTEXT_KEY)
    return value if isinstance(value, RequestContext) else None
