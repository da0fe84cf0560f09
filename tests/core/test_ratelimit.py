"""Rate limits: per caller and route group, in the envelope, shared through Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Message

from hostplane.app import build_runtime, create_app
from hostplane.core.config import RateLimitSettings, Settings
from hostplane.core.errors import Unauthorized
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.ids import new_id
from hostplane.core.principal import ANONYMOUS, Principal
from hostplane.core.ratelimit import RateLimiter, address_key, caller_key, route_group
from hostplane.core.runtime import Runtime
from tests.conftest import make_settings
from tests.support.auth import TokenBook, operator
from tests.support.services import require_redis

probe = APIRouter()


@probe.post("/api/auth/probe")
async def auth_probe() -> Envelope[str]:
    return ok("auth")


@probe.get("/api/probe/ping")
async def ping() -> Envelope[str]:
    return ok("pong")


@probe.websocket("/ws-probe")
async def websocket_probe(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


@pytest.fixture
def rate_limits() -> RateLimitSettings:
    """The limits of the test's app; tests override it with ``parametrize``."""
    return RateLimitSettings()


@pytest.fixture
def settings(tmp_path: Path, _postgres_schema: None, rate_limits: RateLimitSettings) -> Settings:
    return make_settings(tmp_path, rate_limits=rate_limits)


@pytest.fixture
async def app(settings: Settings, runtime: Runtime, tokens: TokenBook) -> AsyncIterator[FastAPI]:
    application = create_app(settings, runtime=runtime)
    application.include_router(probe)
    async with application.router.lifespan_context(application):
        yield application


Connect = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def connect(app: FastAPI, tokens: TokenBook) -> AsyncIterator[Connect]:
    """``await connect(principal=..., ip=...)``: a client from that address, as that caller."""
    opened: list[httpx.AsyncClient] = []

    async def make(
        principal: Principal | None = None, ip: str = "127.0.0.1", application: FastAPI = app
    ) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {tokens.issue(principal)}"} if principal else None
        transport = httpx.ASGITransport(app=application, client=(ip, 40000))
        http = httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers)
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


def user(user_id: str, *permissions: str) -> Principal:
    return Principal(kind="user", id=user_id, permissions=frozenset(permissions or {"server.read"}))


def limited(**values: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("rate_limits", [RateLimitSettings(**values)])


def assert_refused(response: httpx.Response, limit: int) -> int:
    """A 429 in the envelope with every header; returns ``Retry-After``."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert response.json() == {
        "success": False,
        "error": {
            "code": "RATE_LIMITED",
            "message": f"Rate limit exceeded. Try again in {retry_after} seconds.",
            "details": {"limit": limit, "retryAfter": retry_after},
        },
    }
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert int(response.headers["x-ratelimit-reset"]) >= time.time()
    return retry_after


def remaining(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.headers["x-ratelimit-remaining"])


def test_the_documented_limits_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(environment="development").rate_limits
    assert defaults.enabled is True
    assert (defaults.auth, defaults.default, defaults.health) == (
        "10/minute",
        "200/minute",
        "1000/minute",
    )
    limiter = RateLimiter()
    assert {group: item.amount for group, item in limiter.limits.items()} == {
        "auth": 10,
        "default": 200,
        "health": 1000,
    }
    assert {item.get_expiry() for item in limiter.limits.values()} == {60}

    monkeypatch.setenv("HOSTPLANE_RATE_LIMITS__DEFAULT", "1000 per 15 minutes")
    monkeypatch.setenv("HOSTPLANE_RATE_LIMITS__ENABLED", "false")
    configured = Settings(environment="development").rate_limits
    assert configured.default == "1000 per 15 minutes"
    assert configured.enabled is False


@pytest.mark.parametrize("value", ["ten a minute", "0/minute", "10/minute;100/hour", ""])
def test_a_limit_that_is_not_one_positive_limit_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="auth"):
        RateLimitSettings(auth=value)


def test_route_groups_and_caller_keys() -> None:
    assert route_group("/api/auth/login") == "auth"
    assert route_group("/api/auth/refresh") == "auth"
    assert route_group("/api/auth/me") == "default", "reading the session is not a credential check"
    assert route_group("/api/authors") == "default"
    assert {route_group(path) for path in ("/health", "/status", "/metrics")} == {"health"}
    assert route_group("/api/jobs/{job_id}") == "default"

    alice = user("u1")
    key = Principal(kind="api_key", id="u1", user_id="u1")
    assert caller_key("default", alice, "10.0.0.1") == "user:u1"
    # A user's API key has its own budget, not a share of the user's.
    assert caller_key("default", key, "10.0.0.1") == "api_key:u1"
    assert caller_key("health", ANONYMOUS, "10.0.0.1") == "ip:10.0.0.1"
    # Auth routes count the address even when the caller sends a token.
    assert caller_key("auth", alice, "10.0.0.1") == "ip:10.0.0.1"

    # An IPv6 subscriber is one /64; a mapped IPv4 address is that address.
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == address_key("192.0.2.7") == "ip:192.0.2.7"
    assert address_key(None) == "ip:unknown"


async def test_auth_routes_allow_ten_a_minute_then_answer_429(connect: Connect) -> None:
    http = await connect()
    started = time.time()
    responses = [await http.post("/api/auth/probe") for _ in range(10)]
    assert [remaining(response) for response in responses] == list(range(9, -1, -1))
    for response in responses:
        assert response.headers["x-ratelimit-limit"] == "10"
        # The oldest request leaves the 60 s window about a minute from now.
        assert started + 59 <= int(response.headers["x-ratelimit-reset"]) <= time.time() + 61
    assert_refused(await http.post("/api/auth/probe"), 10)

    # The address is spent on auth routes whoever the caller claims to be;
    # the other routes keep their own budget.
    signed_in = await connect(user("u1"))
    assert_refused(await signed_in.post("/api/auth/probe"), 10)
    assert remaining(await signed_in.get("/api/probe/ping")) == 199
    assert remaining(await http.get("/api/probe/ping")) == 199
    # Another address starts afresh.
    assert remaining(await (await connect(ip="10.9.9.9")).post("/api/auth/probe")) == 9


@limited(default="3/minute")
async def test_default_routes_allow_the_limit_then_answer_429(connect: Connect) -> None:
    http = await connect(user("u1"))
    assert [remaining(await http.get("/api/probe/ping")) for _ in range(3)] == [2, 1, 0]
    assert_refused(await http.get("/api/probe/ping"), 3)
    assert_refused(await http.get("/api/probe/ping"), 3)


@limited(health="4/minute", default="2/minute")
async def test_health_routes_have_their_own_limit(connect: Connect) -> None:
    http = await connect()
    assert [remaining(await http.get(path)) for path in ("/health", "/status", "/health")] == [
        3,
        2,
        1,
    ]
    response = await http.get("/health")
    assert response.headers["x-ratelimit-limit"] == "4"
    assert remaining(response) == 0
    assert_refused(await http.get("/status"), 4)
    # The same caller's API budget is untouched by its health checks.
    assert remaining(await http.get("/api/probe/ping")) == 1


@limited(default="2/minute")
async def test_each_caller_has_its_own_counter(connect: Connect) -> None:
    async def spend(http: httpx.AsyncClient) -> None:
        assert [remaining(await http.get("/api/probe/ping")) for _ in range(2)] == [1, 0]
        assert_refused(await http.get("/api/probe/ping"), 2)

    # Same address, different callers: users, an API key with the same id,
    # and anonymous callers counted by their address.
    await spend(await connect(user("u1")))
    await spend(await connect(user("u2")))
    await spend(await connect(Principal(kind="api_key", id="u1", user_id="u1")))
    await spend(await connect(ip="10.0.0.1"))
    await spend(await connect(ip="10.0.0.2"))
    # A second client of a spent caller shares its counter.
    assert_refused(await (await connect(user("u1"), ip="10.0.0.3")).get("/api/probe/ping"), 2)


@limited(auth="1/minute", default="1/minute", health="1/minute")
async def test_rate_limit_bypass_is_never_limited(connect: Connect) -> None:
    for principal in (operator(None, "rate-limit.bypass", "server.read"), operator()):
        http = await connect(principal)
        for _ in range(5):
            for response in (
                await http.get("/api/probe/ping"),
                await http.post("/api/auth/probe"),
                await http.get("/health"),
            ):
                assert response.status_code == 200, response.text
                # Not counted, so no counter to report.
                assert "x-ratelimit-limit" not in response.headers
                assert "x-ratelimit-remaining" not in response.headers
    # Nothing was consumed from the address the bypassing callers used.
    anonymous = await connect()
    assert remaining(await anonymous.post("/api/auth/probe")) == 0


@limited(default="2/minute")
async def test_requests_that_match_no_route_are_not_counted(connect: Connect) -> None:
    http = await connect()
    for _ in range(5):
        response = await http.get("/api/no-such-route")
        assert response.status_code == 404
        assert "x-ratelimit-remaining" not in response.headers
        assert (await http.delete("/api/probe/ping")).status_code == 405
    assert remaining(await http.get("/api/probe/ping")) == 1


@limited(default="2/minute")
async def test_an_unresolvable_caller_is_counted_against_the_address(
    connect: Connect, runtime: Runtime, tokens: TokenBook
) -> None:
    async def strict(connection: HTTPConnection, runtime: Runtime) -> Principal:
        match connection.headers.get("authorization"):
            case "Bearer expired":
                raise Unauthorized("Token expired")
            case "Bearer unverifiable":
                raise ConnectionRefusedError("the database behind the authenticator is down")
        return await tokens.authenticate(connection, runtime)

    runtime.authenticate = strict
    stale = await connect(ip="10.0.0.7")
    stale.headers["Authorization"] = "Bearer expired"
    # The route decides what a bad token means: this one is public.
    assert remaining(await stale.get("/api/probe/ping")) == 1
    assert remaining(await (await connect(ip="10.0.0.7")).get("/api/probe/ping")) == 0
    assert_refused(await stale.get("/api/probe/ping"), 2)

    # A caller that cannot be resolved at all is counted by address too, and
    # a public route still answers.
    unverifiable = await connect(ip="10.0.0.8")
    unverifiable.headers["Authorization"] = "Bearer unverifiable"
    assert remaining(await unverifiable.get("/api/probe/ping")) == 1
    assert remaining(await unverifiable.get("/health")) == 999


@limited(enabled=False, auth="1/minute")
async def test_disabled_limits_count_nothing(connect: Connect) -> None:
    http = await connect()
    for _ in range(5):
        response = await http.post("/api/auth/probe")
        assert response.status_code == 200
        assert "x-ratelimit-limit" not in response.headers


async def test_websocket_routes_are_not_request_counted(app: FastAPI) -> None:
    """The app-wide dependency must not break WebSocket routes."""
    inbox: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws-probe",
        "raw_path": b"/ws-probe",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "server": ("t", 80),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert [message["type"] for message in sent] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert sent[1]["text"] == "hello"


async def test_redis_shares_counters_between_two_app_instances(
    tmp_path: Path, connect: Connect
) -> None:
    redis_url = await require_redis()
    settings = make_settings(
        tmp_path,
        redis_url=redis_url,
        event_channel_prefix=f"test-{new_id()}",
        rate_limits=RateLimitSettings(auth="3/minute", key_prefix=f"test-ratelimit-{new_id()}"),
    )
    apps = [create_app(settings, runtime=build_runtime(settings)) for _ in range(2)]
    for application in apps:
        application.include_router(probe)
    async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
        first = await connect(ip="10.1.1.1", application=apps[0])
        second = await connect(ip="10.1.1.1", application=apps[1])
        assert remaining(await first.post("/api/auth/probe")) == 2
        assert remaining(await second.post("/api/auth/probe")) == 1
        assert remaining(await first.post("/api/auth/probe")) == 0
        assert_refused(await second.post("/api/auth/probe"), 3)
        assert_refused(await first.post("/api/auth/probe"), 3)
        # Another address on the same Redis is counted apart.
        other = await connect(ip="10.1.1.2", application=apps[1])
        assert remaining(await other.post("/api/auth/probe")) == 2


async def test_an_unreachable_redis_lets_requests_through(
    tmp_path: Path, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path,
        redis_url="redis://127.0.0.1:1/0",
        rate_limits=RateLimitSettings(auth="1/minute"),
    )
    application = create_app(settings, runtime=build_runtime(settings))
    application.include_router(probe)
    caplog.set_level(logging.WARNING, logger="hostplane.core.ratelimit")
    async with application.router.lifespan_context(application):
        http = await connect(application=application)
        for _ in range(3):
            response = await http.post("/api/auth/probe")
            assert response.status_code == 200, response.text
            assert "x-ratelimit-limit" not in response.headers
    # One warning, not one per request: after a failure the limiter leaves
    # the storage alone for a while.
    assert storage_warnings(caplog) == 1


async def test_the_limiter_tries_the_storage_again_after_its_cooldown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hostplane.core.ratelimit")
    limiter = RateLimiter(
        RateLimitSettings(default="5/minute"),
        redis_url="redis://127.0.0.1:1/0",
        failure_cooldown_seconds=0.05,
    )
    try:
        assert await limiter.hit("default", "ip:10.0.0.1") is None
        assert await limiter.hit("default", "ip:10.0.0.1") is None
        assert storage_warnings(caplog) == 1
        await asyncio.sleep(0.06)
        assert await limiter.hit("default", "ip:10.0.0.1") is None
        assert storage_warnings(caplog) == 2
    finally:
        await limiter.close()


def storage_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("ratelimit.storage_unavailable" in str(record.msg) for record in caplog.records)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_login_failures_are_counted_per_account_across_limiters(backend: str) -> None:
    """Two replicas share an account's failures through Redis; a success gives its count back."""
    from hostplane.core.ratelimit import login_account_key

    config = RateLimitSettings(
        login_failures_per_account="2 per 15 minutes", key_prefix=f"test-login-{new_id()}"
    )
    redis_url = await require_redis() if backend == "redis" else None
    first = RateLimiter(config, redis_url=redis_url)
    second = RateLimiter(config, redis_url=redis_url) if redis_url else first
    key = login_account_key("tenant-1", "someone@example.com")
    try:
        attempt = await first.begin_login(key)
        assert attempt is not None and not attempt.locked
        await first.end_login(attempt, succeeded=True)
        for limiter in (first, second):
            attempt = await limiter.begin_login(key)
            assert attempt is not None and not attempt.locked
            await limiter.end_login(attempt, succeeded=False)
        locked = await second.begin_login(key)
        assert locked is not None and locked.locked
        assert 15 * 60 - 5 <= locked.retry_after <= 15 * 60
        # Another account has its own count.
        other = await first.begin_login(login_account_key("tenant-1", "other@example.com"))
        assert other is not None and not other.locked
    finally:
        await first.close()
        if second is not first:
            await second.close()
    assert "someone" not in key, "the storage holds no email addresses"
