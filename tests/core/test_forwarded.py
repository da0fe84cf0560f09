"""Forwarded headers: believed from configured trusted proxies only, right-most first."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import ValidationError

from hostplane.app import build_runtime, create_app
from hostplane.core.config import HttpSettings
from hostplane.core.http.middleware_forwarded import forwarded_client, parse_networks
from tests.conftest import make_settings

LOOPBACK = parse_networks(["127.0.0.1"])
PROXIES = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


def headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in pairs]


def test_without_trusted_proxies_the_headers_are_ignored() -> None:
    sent = headers(("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "203.0.113.8"))
    assert forwarded_client("127.0.0.1", sent, ()) == "127.0.0.1"


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client() -> None:
    sent = headers(("X-Forwarded-For", "203.0.113.9"))
    assert forwarded_client("198.51.100.4", sent, PROXIES) == "198.51.100.4"


def test_the_right_most_untrusted_hop_is_the_client() -> None:
    # The client wrote "1.1.1.1"; our proxies appended what they saw.
    sent = headers(("X-Forwarded-For", "1.1.1.1, 198.51.100.7, 10.0.0.5"))
    assert forwarded_client("10.0.0.2", sent, PROXIES) == "198.51.100.7"


def test_several_header_lines_are_one_list() -> None:
    sent = headers(("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "198.51.100.7"))
    assert forwarded_client("10.0.0.2", sent, PROXIES) == "198.51.100.7"


def test_a_chain_of_trusted_proxies_only_names_its_first() -> None:
    sent = headers(("X-Forwarded-For", "10.1.1.1, 10.2.2.2"))
    assert forwarded_client("10.0.0.2", sent, PROXIES) == "10.1.1.1"


def test_ports_and_ipv6_as_proxies_write_them() -> None:
    sent = headers(("X-Forwarded-For", "[2001:db9::1]:4711, 198.51.100.7:80"))
    assert forwarded_client("10.0.0.2", sent, PROXIES) == "198.51.100.7"
    sent = headers(("X-Forwarded-For", "[2001:db9::1]:4711"))
    assert forwarded_client("2001:db8::5", sent, PROXIES) == "2001:db9::1"


def test_an_invented_hop_leaves_the_proxy_as_the_client() -> None:
    sent = headers(("X-Forwarded-For", "1.1.1.1, not-an-address"))
    assert forwarded_client("10.0.0.2", sent, PROXIES) == "10.0.0.2"


def test_x_real_ip_only_without_x_forwarded_for() -> None:
    assert forwarded_client("10.0.0.2", headers(("X-Real-IP", "198.51.100.3")), PROXIES) == (
        "198.51.100.3"
    )
    both = headers(("X-Real-IP", "198.51.100.3"), ("X-Forwarded-For", "198.51.100.4"))
    assert forwarded_client("10.0.0.2", both, PROXIES) == "198.51.100.4"


def test_the_setting_refuses_what_is_not_an_address_or_network() -> None:
    assert HttpSettings(trusted_proxies=[" 10.0.0.0/8", "::1"]).trusted_proxies == [
        "10.0.0.0/8",
        "::1",
    ]
    with pytest.raises(ValidationError, match="not an IP address or network"):
        HttpSettings(trusted_proxies=["proxy.example.com"])


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTPLANE_HTTP__TRUSTED_PROXIES", '["127.0.0.1", "10.0.0.0/8"]')
    settings = make_settings(Path("/nonexistent"))
    assert settings.http.trusted_proxies == ["127.0.0.1", "10.0.0.0/8"]


probe = APIRouter()


@probe.get("/api/probe/client")
async def client_of(request: Request) -> dict[str, str | None]:
    return {
        "ip": request.client.host if request.client else None,
        "scheme": request.url.scheme,
    }


@pytest.mark.parametrize(
    ("trusted", "expected_ip", "expected_scheme"),
    [([], "127.0.0.1", "http"), (["127.0.0.1"], "198.51.100.7", "https")],
)
async def test_the_app_sees_the_forwarded_client_only_from_a_trusted_proxy(
    tmp_path: Path,
    trusted: list[str],
    expected_ip: str,
    expected_scheme: str,
) -> None:
    settings = make_settings(tmp_path, http=HttpSettings(trusted_proxies=trusted))
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    app.include_router(probe)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get(
                "/api/probe/client",
                headers={"X-Forwarded-For": "1.1.1.1, 198.51.100.7", "X-Forwarded-Proto": "https"},
            )
    finally:
        await runtime.engine.dispose()
    assert response.json() == {"ip": expected_ip, "scheme": expected_scheme}
