"""The client's address behind reverse proxies, believed only from proxies we trust.

``X-Forwarded-For`` is whatever the sender wrote, unless a proxy we run wrote
it. So the headers are read only when the connection's peer is one of
``settings.http.trusted_proxies`` (none by default), and then the client is
the right-most address of the chain that is not itself a trusted proxy: each
trusted proxy appends the address it saw, so everything left of that is what
the client claimed and may be invented. Without a trusted peer the headers
are ignored and the peer is the client.

This replaces uvicorn's ``proxy_headers`` (the server runs with it off):
uvicorn trusts 127.0.0.1 by default, and under ``hostplane up`` the game
servers run on the same host, so any of them could claim any address.

The result is written into the ASGI scope (``client`` and ``scheme``), so
everything that reads ``request.client`` (rate limits, API key allowlists,
sessions, the audit log) sees the same address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED_FOR = b"x-forwarded-for"
_REAL_IP = b"x-real-ip"
_FORWARDED_PROTO = b"x-forwarded-proto"


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """The trusted proxies as networks (a single address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, ``1.2.3.4:port`` or ``[v6]:port``; else None."""
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        # IPv4 with a port; a bare IPv6 address has at least two colons.
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def is_trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def forwarded_client(
    peer: str, headers: Iterable[tuple[bytes, bytes]], networks: tuple[IPNetwork, ...]
) -> str:
    """The client's address of a request that reached us from ``peer``."""
    peer_address = parse_address(peer)
    if not networks or peer_address is None or not is_trusted(peer_address, networks):
        return peer
    hops: list[str] = []
    real_ip: str | None = None
    for name, value in headers:
        if name == _FORWARDED_FOR:
            # Several header lines are one list, in order (RFC 9110 5.3).
            hops.extend(part for part in value.decode("latin-1").split(",") if part.strip())
        elif name == _REAL_IP:
            real_ip = value.decode("latin-1")
    if not hops:
        if real_ip is None:
            return peer
        hops = [real_ip]
    client: IPAddress | None = None
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            # Not something a proxy of ours writes: the sender made it up.
            # The proxy is then the only address we know to be true.
            return peer
        client = address
        if not is_trusted(address, networks):
            break
    # Every hop a trusted proxy: the left-most is the first of them.
    return str(client) if client is not None else peer


def _forwarded_scheme(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == _FORWARDED_PROTO:
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                if scope["type"] == "websocket":
                    return "wss" if proto == "https" else "ws"
                return str(proto)
    return None


class ForwardedClientMiddleware:
    """Rewrites the scope's client (and scheme) from a trusted proxy's headers."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.networks = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.networks and scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client:
                peer = str(client[0])
                address = forwarded_client(peer, scope.get("headers", ()), self.networks)
                if address != peer:
                    scope["client"] = (address, 0)
                peer_address = parse_address(peer)
                if peer_address is not None and is_trusted(peer_address, self.networks):
                    scheme = _forwarded_scheme(scope)
                    if scheme is not None:
                        scope["scheme"] = scheme
        await self.app(scope, receive, send)
