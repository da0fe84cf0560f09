"""Rate limiting (implementation in progress: this placeholder allows everything)."""

from __future__ import annotations

from hostplane.core.config import Settings


class RateLimiter:
    async def close(self) -> None:
        return None


def create_rate_limiter(settings: Settings) -> RateLimiter:
    return RateLimiter()
