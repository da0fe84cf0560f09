"""The rate-limit dependency applied to every route (placeholder: allows everything)."""

from __future__ import annotations


async def enforce_rate_limit() -> None:
    return None
