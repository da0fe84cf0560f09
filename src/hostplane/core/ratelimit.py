"""Request rate limits: how many requests a caller may make per route group.

Three groups, each with its own counter per caller: ``auth`` (paths under
``/api/auth/``), ``health`` (``/health``, ``/status``, ``/metrics``) and
``default`` (everything else). The limits come from ``settings.rate_limits``.

The strategy is the *moving window* of the ``limits`` library: a request is
admitted when fewer than ``N`` requests of the same key were admitted in the
last window (60 s for ``N/minute``), measured from now rather than from the
start of a clock-aligned window. A fixed window lets a caller spend ``N`` at
the end of one window and ``N`` again at the start of the next (2x in a few
seconds); the moving window never admits more than ``N`` in any window.
Its cost is one timestamp per admitted request (at most ``N`` per key: a
few KB per active caller at 200/minute), which is small at these limits. The sliding window
counter costs two integers per key but only approximates: it can admit more
than ``N`` in 60 s when the requests straddle its window boundary, so a
documented "10 per minute" would not be exact.

Counters live in process memory (one process, the embedded default) or in
Redis when ``redis_url`` is set, so every panel replica shares them. The Redis
storage runs on redis-py's asyncio client (the project's Redis client); the
library's default client for Redis, coredis, is not a dependency.

Beside the per-address limits, failed logins are counted per account
(:meth:`RateLimiter.begin_login`): addresses are cheap to an attacker (a
botnet, an IPv6 range), an account's password is not. That counter is a
fixed window in the same storage, reserved atomically before the password is
checked, so concurrent guesses cannot all slip under the limit.

A limiter that cannot reach its storage *fails open*: the request goes
through unlimited, a warning is logged, and the storage is left alone for
:data:`FAILURE_COOLDOWN_SECONDS` so that a Redis outage neither takes the API
down nor adds a connection timeout to every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from hostplane.core.config import RateLimitSettings, Settings
from hostplane.core.principal import Principal

log = structlog.get_logger(__name__)

RouteGroup = Literal["auth", "health", "default"]

AUTH_PREFIX = "/api/auth/"
# Under /api/auth/ but not credential checks: a client reads /me often, and a
# limit meant to slow password guessing must not lock it out.
AUTH_SESSION_PATHS = frozenset({"/api/auth/me", "/api/auth/logout"})
HEALTH_PATHS = frozenset({"/health", "/status", "/metrics"})
BYPASS_PERMISSION = "rate-limit.bypass"

# A Redis that does not answer must cost a request little: the limiter gives
# up after this and fails open.
REDIS_TIMEOUT_SECONDS = 0.5
# After a storage failure the limiter stays open this long before trying the
# storage again: one slow failure per period instead of one per request.
FAILURE_COOLDOWN_SECONDS = 5.0

_STORAGE_ERRORS = (StorageError, RedisError, OSError)


def route_group(path: str) -> RouteGroup:
    """The group of a route, from its path template (``/api/auth/login``)."""
    if path.startswith(AUTH_PREFIX) and path not in AUTH_SESSION_PATHS:
        return "auth"
    if path in HEALTH_PATHS:
        return "health"
    return "default"


def address_key(ip: str | None) -> str:
    """The counter key of a client address.

    An IPv6 client is counted by its /64: that is what one subscriber is
    usually given, so counting single addresses would let anyone rotate
    through billions of them. IPv4-mapped IPv6 addresses count as the IPv4
    address they carry.
    """
    if not ip:
        return "ip:unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"ip:{ip}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"ip:{address}"


def caller_key(group: RouteGroup, principal: Principal, ip: str | None) -> str:
    """Whose counter a request draws on.

    An authenticated caller is counted as itself (``user:<id>``,
    ``api_key:<id>``: a user's API keys do not share the user's budget), so
    many people behind one NAT do not starve each other. Auth routes are
    counted by address only, even for a caller presenting a token: they
    exist to slow password guessing, and a key the caller can vary (by
    presenting tokens of accounts it controls) would hand it a fresh budget
    per account.
    """
    if group != "auth" and principal.is_authenticated and principal.id is not None:
        return f"{principal.kind}:{principal.id}"
    return address_key(ip)


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The outcome of one counted request."""

    allowed: bool
    limit: int
    remaining: int
    # When the oldest request in the window leaves it (one more is
    # admitted then), in epoch seconds.
    reset_at: float
    # Whole seconds from now until then, at least 1: what a refused caller waits.
    retry_after: int

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-*``, plus ``Retry-After`` when the request was refused."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A login attempt counted against its account (see :meth:`RateLimiter.begin_login`)."""

    key: str
    expiry: int
    # The account has spent its failures: refuse without checking the password.
    locked: bool
    # Whole seconds until the account's window ends, at least 1.
    retry_after: int


def login_account_key(tenant_id: str, email: str) -> str:
    """The counter of an account: hashed, so the storage holds no email addresses.

    The same for an email that has no account, so the limit (and its answer)
    does not reveal which accounts exist.
    """
    digest = hashlib.sha256(f"{tenant_id}\x00{email}".encode()).hexdigest()
    return f"login-failures/{digest}"


class RateLimiter:
    """Counts requests per (route group, caller key) and says whether to admit them.

    With no arguments: the default limits, counted in memory.
    """

    def __init__(
        self,
        config: RateLimitSettings | None = None,
        *,
        redis_url: str | None = None,
        failure_cooldown_seconds: float = FAILURE_COOLDOWN_SECONDS,
    ) -> None:
        config = config or RateLimitSettings()
        self.enabled = config.enabled
        self.limits: dict[RouteGroup, RateLimitItem] = {
            "auth": parse(config.auth),
            "health": parse(config.health),
            "default": parse(config.default),
        }
        self.login_failures = parse(config.login_failures_per_account)
        self._failure_cooldown = failure_cooldown_seconds
        self._open_until = 0.0
        self._pool: aioredis.ConnectionPool | None = None
        storage: Storage
        if redis_url and self.enabled:
            # redis-py parses the URL itself (redis://, rediss://, unix://) and
            # owns the connections, so close() can release them; the URI given
            # to the storage only selects the Redis flavour of the library.
            self._pool = aioredis.ConnectionPool.from_url(
                redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
            options: dict[str, Any] = {"connection_pool": self._pool}
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=config.key_prefix,
                wrap_exceptions=True,
                **options,
            )
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)

    def configure(self, *, auth: str, default: str) -> None:
        """Change the auth and default limits of a running limiter (the runtime configuration).

        Counters are kept: a lower limit refuses a caller who already spent it.
        """
        self.limits = {**self.limits, "auth": parse(auth), "default": parse(default)}

    async def hit(self, group: RouteGroup, key: str) -> RateLimitResult | None:
        """Count one request of ``key`` in ``group``.

        Returns ``None`` when nothing was counted: limits are disabled, or the
        storage failed (the request must then go through).
        """
        if not self.enabled:
            return None
        if time.monotonic() < self._open_until:
            return None
        item = self.limits[group]
        try:
            allowed = await self._strategy.hit(item, group, key)
            # A second round trip: the strategy's hit() answers only yes or no.
            stats = await self._strategy.get_window_stats(item, group, key)
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return None
        return RateLimitResult(
            allowed=allowed,
            limit=item.amount,
            remaining=stats.remaining,
            reset_at=stats.reset_time,
            retry_after=max(1, math.ceil(stats.reset_time - time.time())),
        )

    async def begin_login(self, account_key: str) -> LoginAttempt | None:
        """Reserve one failure of ``account_key`` before its password is checked.

        The window starts with the account's first counted failure and lasts
        the configured period (15 minutes by default); once its failures are
        spent, every attempt is refused until it ends, a right password
        included (otherwise the answer would tell a guesser when it found it).
        A success hands its reservation back with :meth:`end_login`; it does
        not reset the window, so the owner logging in between an attacker's
        guesses gives the attacker no fresh budget.

        ``None`` when nothing was counted (limits disabled, storage down).
        """
        if not self.enabled or time.monotonic() < self._open_until:
            return None
        expiry = self.login_failures.get_expiry()
        try:
            # incr is atomic in both storages, so N concurrent guesses get
            # N distinct counts and only the first ones proceed.
            count = await self._storage.incr(account_key, expiry)
            locked = count > self.login_failures.amount
            retry_after = 1
            if locked:
                ends_at = await self._storage.get_expiry(account_key)
                retry_after = max(1, math.ceil(ends_at - time.time()))
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return None
        return LoginAttempt(account_key, expiry, locked, retry_after)

    async def end_login(self, attempt: LoginAttempt | None, *, succeeded: bool) -> None:
        """Settle an attempt: a success gives back its reservation, a failure keeps it."""
        if attempt is None or attempt.locked or not succeeded:
            return
        try:
            await self._storage.incr(attempt.key, attempt.expiry, amount=-1)
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc)

    def _storage_failed(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + self._failure_cooldown
        log.warning(
            "ratelimit.storage_unavailable",
            error=str(exc.storage_error if isinstance(exc, StorageError) else exc),
            open_for_seconds=self._failure_cooldown,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if isinstance(self._storage, MemoryStorage):
            # The memory storage prunes expired entries in a background task;
            # it must not outlive the event loop that the app runs on.
            timer = self._storage.timer
            if timer is not None and not timer.done():
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer


def create_rate_limiter(settings: Settings) -> RateLimiter:
    """The limiter of a process: shared through Redis when ``redis_url`` is set."""
    return RateLimiter(settings.rate_limits, redis_url=settings.redis_url)
