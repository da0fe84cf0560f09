"""Every error path answers in the envelope; nothing internal leaks."""

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field
from sqlalchemy import text

from hostplane.core.config import Settings
from hostplane.core.errors import Conflict, Locked, NotFound, RateLimited
from hostplane.core.http.deps import PageDep, SessionDep
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.runtime import Runtime
from hostplane.identity.tenants.models import Tenant
from tests.support.auth import TokenBook

probe = APIRouter(prefix="/api/probe")
SECRET_DETAIL = "/srv/secret/path SELECT password FROM users"


class Body(BaseModel):
    name: str = Field(min_length=3)
    size: int


@probe.post("/echo")
async def echo(body: Body) -> Envelope[Body]:
    return ok(body)


@probe.get("/page")
async def paged(params: PageDep, flag: Annotated[int, Query()] = 0) -> Envelope[dict[str, int]]:
    return ok({"page": params.page, "limit": params.limit, "flag": flag})


@probe.get("/missing")
async def missing() -> None:
    raise NotFound("server", "abc")


@probe.get("/locked")
async def locked() -> None:
    raise Locked("Server is suspended")


@probe.get("/limited")
async def limited() -> None:
    raise RateLimited(
        "Rate limit exceeded. Try again in 60 seconds.", headers={"Retry-After": "60"}
    )


@probe.get("/crash")
async def crash() -> None:
    raise RuntimeError(SECRET_DETAIL)


@probe.post("/write-then-fail")
async def write_then_fail(session: SessionDep) -> None:
    session.add(Tenant(name="should vanish", slug="vanishing"))
    await session.flush()
    raise Conflict("refused after writing")


@probe.post("/bad-sql")
async def bad_sql(session: SessionDep) -> None:
    await session.execute(text("SELECT * FROM no_such_table"))


@pytest.fixture
async def client(
    settings: Settings, runtime: Runtime, tokens: TokenBook
) -> AsyncIterator[httpx.AsyncClient]:
    from hostplane.app import create_app

    app: FastAPI = create_app(settings, runtime=runtime)
    app.include_router(probe)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert response.headers["x-request-id"]
    return body["error"]  # type: ignore[no-any-return]


async def test_validation_errors_are_400_with_field_details(client: httpx.AsyncClient) -> None:
    error = assert_envelope(
        await client.post("/api/probe/echo", json={"name": "ab", "size": "big"}),
        400,
        "VALIDATION_ERROR",
    )
    fields = {item["field"]: item for item in error["details"]["fields"]}  # type: ignore[index]
    assert set(fields) == {"name", "size"}
    assert fields["name"]["in"] == "body"


async def test_malformed_json_is_a_validation_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/probe/echo", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")


async def test_query_validation_and_pagination_limits(client: httpx.AsyncClient) -> None:
    assert_envelope(
        await client.get("/api/probe/page", params={"limit": 101}), 400, "VALIDATION_ERROR"
    )
    assert_envelope(
        await client.get("/api/probe/page", params={"page": 0}), 400, "VALIDATION_ERROR"
    )
    assert_envelope(
        await client.get("/api/probe/page", params={"flag": "x"}), 400, "VALIDATION_ERROR"
    )
    response = await client.get("/api/probe/page", params={"limit": 100, "page": 3})
    assert response.json() == {"success": True, "data": {"page": 3, "limit": 100, "flag": 0}}


async def test_domain_errors_keep_status_code_and_details(client: httpx.AsyncClient) -> None:
    error = assert_envelope(await client.get("/api/probe/missing"), 404, "NOT_FOUND")
    assert error["details"] == {"resource": "server", "id": "abc"}
    assert_envelope(await client.get("/api/probe/locked"), 423, "LOCKED")
    response = await client.get("/api/probe/limited")
    assert_envelope(response, 429, "RATE_LIMITED")
    assert response.headers["retry-after"] == "60"


async def test_unknown_routes_and_methods_answer_in_the_envelope(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/api/nothing-here"), 404, "NOT_FOUND")
    assert_envelope(await client.delete("/api/probe/echo"), 405, "METHOD_NOT_ALLOWED")


async def test_unhandled_exceptions_never_leak(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/probe/crash")
    error = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert error["message"] == "An internal error occurred"
    assert error["details"] == {"requestId": response.headers["x-request-id"]}
    assert (
        "secret" not in response.text
        and "SELECT" not in response.text
        and "Traceback" not in response.text
    )


async def test_database_errors_never_leak_sql(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/probe/bad-sql")
    assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "no_such_table" not in response.text


async def test_a_failed_request_changes_nothing(client: httpx.AsyncClient, db: object) -> None:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession

    assert_envelope(await client.post("/api/probe/write-then-fail"), 409, "CONFLICT")
    assert isinstance(db, AsyncSession)
    assert await db.scalar(select(Tenant).where(Tenant.slug == "vanishing")) is None


async def test_a_sane_incoming_request_id_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/probe/missing", headers={"X-Request-ID": "lb-abcdef123456"})
    assert response.headers["x-request-id"] == "lb-abcdef123456"
    hostile = await client.get(
        "/api/probe/missing", headers={"X-Request-ID": "x\u00e9; DROP".encode("latin-1")}
    )
    assert hostile.headers["x-request-id"] != "x\u00e9; DROP"
    assert len(hostile.headers["x-request-id"]) == 26
