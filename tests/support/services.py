"""Real services the tests talk to, and what to do when one is missing.

Locally a missing service skips the tests that need it. Under CI
(``CI=true``) or with ``HOSTPLANE_REQUIRE_SERVICES=1`` a missing service is a
failure: nothing may pass by not running.
"""

from __future__ import annotations

import os

import pytest

REDIS_URL = os.environ.get("HOSTPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def services_required() -> bool:
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("HOSTPLANE_REQUIRE_SERVICES") == "1"
    )


def missing_service(name: str, reason: str) -> None:
    message = f"{name} is not available: {reason}"
    if services_required():
        pytest.fail(message + " (services are required in this run)", pytrace=False)
    pytest.skip(message)


async def require_redis() -> str:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        missing_service("Redis", str(exc))
    finally:
        await client.aclose()
    return REDIS_URL
