"""The test harness every domain reuses.

The backend is SQLite unless ``HOSTPLANE_TEST_DATABASE_URL`` names a PostgreSQL
database (the test command creates a fresh one per run). Each test gets a
clean database: a new SQLite file, or on PostgreSQL the schema created once
per run and every table truncated after each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime, create_app
from hostplane.core.config import JobSettings, RateLimitSettings, Settings, WebhookSettings
from hostplane.core.db.engine import create_engine
from hostplane.core.logging import configure_logging
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.models import metadata
from tests.support.auth import TokenBook

POSTGRES_URL = os.environ.get("HOSTPLANE_TEST_DATABASE_URL", "")
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


def backend() -> str:
    return "postgresql" if POSTGRES_URL else "sqlite"


def pytest_configure() -> None:
    configure_logging(level="info", fmt="console")


def pytest_report_header() -> str:
    return f"hostplane database backend: {backend()}"


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "secret_key": TEST_SECRET,
        "data_dir": tmp_path / "data",
        "database_url": POSTGRES_URL or f"sqlite+aiosqlite:///{tmp_path / 'test.db'}",
        "log_format": "console",
        # Tests log in far more often than 10 times a minute from one address;
        # tests of the limiter itself pass the documented limits explicitly.
        "rate_limits": RateLimitSettings(auth="10000/minute", default="10000/minute"),
        "jobs": JobSettings(
            poll_interval_seconds=0.05,
            backoff_base_seconds=0.05,
            backoff_max_seconds=1.0,
            lease_seconds=30,
        ),
        # Receivers in tests listen on 127.0.0.1; retries follow quickly.
        "webhooks": WebhookSettings(
            allow_private_destinations=True,
            retry_schedule_seconds=[0.05] * 9,
            retry_jitter=0,
            poll_interval_seconds=0.05,
        ),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def _postgres_schema() -> Iterator[None]:
    """On PostgreSQL, create the schema once for the whole run."""
    if not POSTGRES_URL:
        yield
        return

    async def create() -> None:
        engine = create_engine(make_settings(Path("/nonexistent")))
        async with engine.begin() as connection:
            await connection.run_sync(metadata.drop_all)
            await connection.run_sync(metadata.create_all)
        await engine.dispose()

    asyncio.run(create())
    yield


async def _truncate_all(runtime: Runtime) -> None:
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    async with runtime.engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def settings(tmp_path: Path, _postgres_schema: None) -> Settings:
    return make_settings(tmp_path)


@contextlib.asynccontextmanager
async def panel_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime on a clean database with an in-memory bus."""
    runtime = build_runtime(settings)
    if settings.is_sqlite:
        async with runtime.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
    await runtime.bus.start()
    try:
        yield runtime
    finally:
        await runtime.bus.close()
        if not settings.is_sqlite:
            await _truncate_all(runtime)
        await runtime.engine.dispose()


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime on a clean database with an in-memory bus."""
    async with panel_runtime(settings) as runtime:
        yield runtime


@pytest.fixture
async def db(runtime: Runtime) -> AsyncIterator[AsyncSession]:
    """A session for factories and for checking rows after an API call.

    Its transactions are deferred (read-only until a write), so holding it
    open never blocks the app under test on SQLite. End its transaction
    (``await db.commit()``) before reading what another connection changed.
    """
    assert runtime.read_sessions is not None
    async with runtime.read_sessions() as session:
        yield session


@pytest.fixture
def tokens(runtime: Runtime) -> TokenBook:
    book = TokenBook(fallback=runtime.authenticate)
    runtime.authenticate = book.authenticate
    return book


@pytest.fixture
async def app(settings: Settings, runtime: Runtime, tokens: TokenBook) -> AsyncIterator[object]:
    application = create_app(settings, runtime=runtime)
    async with application.router.lifespan_context(application):
        yield application


def _client(application: object, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://hostplane.test", headers=headers)


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous client on the ASGI app."""
    async with _client(app) as http:
        yield http


ClientAs = Callable[[Principal], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def client_as(app: object, tokens: TokenBook) -> AsyncIterator[ClientAs]:
    """``await client_as(principal)``: a client that acts as that caller."""
    opened: list[httpx.AsyncClient] = []

    async def make(principal: Principal) -> httpx.AsyncClient:
        http = _client(app, {"Authorization": f"Bearer {tokens.issue(principal)}"})
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()
