"""``POST /api/auth/sync`` against a real JWKS endpoint served by the test."""

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.app import build_runtime, create_app
from hostplane.core.config import ExternalIssuer, IdentitySettings
from hostplane.models import metadata
from tests.conftest import POSTGRES_URL, make_settings
from tests.support.identity import platform_tenant

ISSUER = "https://auth.example.test"
AUDIENCE = "hostplane"
SHARED_ISSUER = "https://shared.example.test"
SHARED_SECRET = "a-shared-secret-that-is-long-enough-for-hs256"


class JwksServer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.document = {"keys": [jwk | {"kid": "key-1", "alg": "RS256", "use": "sig"}]}
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "ext-1",
            "email": "ext@example.com",
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(body | claims, self.key, algorithm="RS256", headers={"kid": "key-1"})


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.server.shutdown()


@pytest.fixture
async def sync_client(
    tmp_path: Path, jwks_server: JwksServer, db: AsyncSession
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with two external issuers configured, on the test's database."""
    await platform_tenant(db)
    identity = IdentitySettings(
        external_issuers=[
            ExternalIssuer(
                name="central",
                issuer=ISSUER,
                audience=AUDIENCE,
                jwks_url=jwks_server.url,
                algorithms=["RS256"],
            ),
            ExternalIssuer(
                name="legacy",
                issuer=SHARED_ISSUER,
                audience=AUDIENCE,
                shared_secret=SHARED_SECRET,
                algorithms=["HS256"],
            ),
        ]
    )
    settings = make_settings(
        tmp_path,
        identity=identity,
        database_url=POSTGRES_URL or f"sqlite+aiosqlite:///{tmp_path / 'test.db'}",
    )
    runtime = build_runtime(settings)
    if settings.is_sqlite:
        async with runtime.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
    app = create_app(settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_a_valid_external_token_creates_then_reuses_the_local_user(
    sync_client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    first = await sync_client.post(
        "/api/auth/sync", headers={"Authorization": f"Bearer {jwks_server.token(given_name='Ada')}"}
    )
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert data["email"] == "ext@example.com"
    assert data["user"]["roles"] == ["customer"]
    assert data["user"]["firstName"] == "Ada"
    me = await sync_client.get("/api/auth/me", headers={"Authorization": f"Bearer {data['token']}"})
    assert me.status_code == 200

    second = await sync_client.post(
        "/api/auth/sync", json={"token": jwks_server.token(email="renamed@example.com")}
    )
    assert second.status_code == 200
    assert second.json()["data"]["userId"] == data["userId"]
    assert second.json()["data"]["email"] == "renamed@example.com"
    assert jwks_server.hits == 1, "the JWKS is cached"
    # A synced account has no password: password login is impossible.
    login = await sync_client.post(
        "/api/auth/login", json={"email": "renamed@example.com", "password": "anything at all"}
    )
    assert login.status_code == 401


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        {"iss": "https://unknown.example.test"},
    ],
)
async def test_wrong_audience_expired_and_unknown_issuer_are_refused(
    sync_client: httpx.AsyncClient, jwks_server: JwksServer, claims: dict[str, Any]
) -> None:
    response = await sync_client.post("/api/auth/sync", json={"token": jwks_server.token(**claims)})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_EXTERNAL_TOKEN"


async def test_a_token_signed_by_another_key_is_refused(
    sync_client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    impostor = JwksServer()
    try:
        response = await sync_client.post("/api/auth/sync", json={"token": impostor.token()})
    finally:
        impostor.server.shutdown()
    assert response.status_code == 401


async def test_shared_secret_issuers_work_too(sync_client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": SHARED_ISSUER,
            "aud": AUDIENCE,
            "sub": "legacy-7",
            "email": "legacy@example.com",
            "iat": now,
            "exp": now + 60,
        },
        SHARED_SECRET,
        algorithm="HS256",
    )
    response = await sync_client.post("/api/auth/sync", json={"token": token})
    assert response.status_code == 200, response.text
    forged = jwt.encode(
        {
            "iss": SHARED_ISSUER,
            "aud": AUDIENCE,
            "sub": "x",
            "email": "x@example.com",
            "iat": now,
            "exp": now + 60,
        },
        "wrong-secret-wrong-secret-wrong-secret",
        algorithm="HS256",
    )
    assert (await sync_client.post("/api/auth/sync", json={"token": forged})).status_code == 401


async def test_existing_local_accounts_link_only_with_a_verified_email(
    sync_client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    registered = await sync_client.post(
        "/api/auth/register", json={"email": "local@example.com", "password": "long enough 1"}
    )
    assert registered.status_code == 200
    unverified = await sync_client.post(
        "/api/auth/sync", json={"token": jwks_server.token(sub="ext-9", email="local@example.com")}
    )
    assert unverified.status_code == 409
    verified = await sync_client.post(
        "/api/auth/sync",
        json={
            "token": jwks_server.token(sub="ext-9", email="local@example.com", email_verified=True)
        },
    )
    assert verified.status_code == 200
    assert verified.json()["data"]["userId"] == registered.json()["data"]["userId"]


async def test_a_preferred_username_taken_in_another_case_gets_another_name(
    sync_client: httpx.AsyncClient, jwks_server: JwksServer
) -> None:
    registered = await sync_client.post(
        "/api/auth/register",
        json={"email": "bob@example.com", "username": "Bob", "password": "long enough 1"},
    )
    assert registered.status_code == 200, registered.text
    synced = await sync_client.post(
        "/api/auth/sync",
        json={
            "token": jwks_server.token(
                sub="ext-7", email="b2@example.com", preferred_username="bob"
            )
        },
    )
    assert synced.status_code == 200, synced.text
    assert synced.json()["data"]["username"].lower() != "bob"
