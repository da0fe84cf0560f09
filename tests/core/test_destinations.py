"""The destination guard: which URLs the panel may call, and pinning to the checked address."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from hostplane.core.net.destinations import (
    Destination,
    DestinationRefused,
    check_url,
    is_public,
    pinned_request,
    resolve,
)
from tests.support.webhooks import receiver


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address under test, nothing binds it
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "2002:7f00:0001::1",
        "::",
    ],
)
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://",
        "https://user:secret@example.com/",
        "http://example.com:99999/",
        "http://localhost:8080/",
        "http://api.localhost/",
        "http://127.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://" + "a" * 3000 + ".com/",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(DestinationRefused):
        check_url(url, allow_private=False)


async def test_every_resolved_address_is_checked() -> None:
    # ``localhost`` resolves (through the resolver, not as a literal) to loopback only.
    name = "localhost"
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    assert addresses and not any(
        is_public(ipaddress.ip_address(a.split("%")[0])) for a in addresses
    )
    with pytest.raises(DestinationRefused):
        await resolve(f"http://{name}/hook", allow_private=False)
    allowed = await resolve(f"http://{name}/hook", allow_private=True)
    assert allowed.address in addresses


async def test_names_that_do_not_resolve_are_refused() -> None:
    with pytest.raises(DestinationRefused, match="could not be resolved"):
        await resolve("http://no-such-host.invalid/", allow_private=True)


def test_pinned_requests_carry_the_name_in_host_and_sni() -> None:
    plain = pinned_request(
        Destination(
            "http://hooks.example.com:8080/in?x=1", "http", "hooks.example.com", 8080, "203.0.113.7"
        )
    )
    assert plain.url == "http://203.0.113.7:8080/in?x=1"
    assert plain.host_header == "hooks.example.com:8080" and plain.extensions == {}
    tls = pinned_request(
        Destination(
            "https://hooks.example.com/in", "https", "hooks.example.com", 443, "2001:db8::7"
        )
    )
    assert tls.url == "https://[2001:db8::7]/in" and tls.host_header == "hooks.example.com"
    assert tls.extensions == {"sni_hostname": "hooks.example.com"}


async def test_the_request_goes_to_the_checked_address_with_the_name() -> None:
    async with receiver() as hook:
        port = hook.url.rsplit(":", 1)[1].split("/")[0]
        destination = await resolve(f"http://localhost:{port}/hooks", allow_private=True)
        assert ipaddress.ip_address(destination.address).is_loopback
        pinned = pinned_request(destination)
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.post(
                pinned.url, content=b"{}", headers={"Host": pinned.host_header}
            )
        assert response.status_code == 200
    assert hook.received[0].headers["Host"] == f"localhost:{port}"
