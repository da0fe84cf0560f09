"""Where the panel may send a tenant's HTTP requests (webhooks, alert actions).

A tenant chooses the URL, so without a guard a webhook is a way to make the
panel call its own database, the cloud's metadata service or anything else on
the operator's private network. The guard:

- accepts only ``http``/``https`` URLs with a host and no credentials;
- resolves the host once, and refuses it if *any* resolved address is
  private, loopback, link-local, multicast, reserved or unspecified (an
  attacker's name that resolves to one public and one private address gets
  nothing);
- hands back the checked address, so the caller connects to it and not to a
  second resolution (a name whose DNS answer changes between the check and the
  connection, "DNS rebinding", cannot slip through). :func:`pinned_request`
  builds such a request: the address in the URL, the name in ``Host`` and, for
  HTTPS, in SNI and the certificate check.

Operators whose receivers are on their own network turn the address check off
with ``allow_private`` (``HOSTPLANE_WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hostplane.core.errors import ValidationFailed

RESOLVE_TIMEOUT_SECONDS = 5.0
MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(ValidationFailed):
    """The URL is malformed, or names a place the panel must not call."""

    code = "DESTINATION_REFUSED"


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked URL and the address to connect to."""

    url: str
    scheme: str
    host: str  # the name as written (lower case, no brackets)
    port: int
    address: str  # the checked address the connection must use


def _refuse(message: str) -> DestinationRefused:
    return DestinationRefused(message, details={"fields": [{"field": "url", "message": message}]})


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and friends are IPv4 in disguise.
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public(mapped)
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def parse_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a URL the panel may call, or :class:`DestinationRefused`."""
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"The URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise _refuse("The URL is not valid") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse("The URL must start with http:// or https://")
    if not parts.hostname:
        raise _refuse("The URL has no host")
    if parts.username is not None or parts.password is not None:
        raise _refuse("The URL must not contain credentials")
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def check_address(address: IPAddress, *, allow_private: bool) -> None:
    if not allow_private and not is_public(address):
        raise _refuse(
            "The URL points to a private, loopback or link-local address; "
            "the operator has not allowed such destinations"
        )


def check_url(url: str, *, allow_private: bool) -> None:
    """What can be checked without the network: the shape, and a literal address."""
    _scheme, host, _port = parse_url(url)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if not allow_private and (host == "localhost" or host.endswith(".localhost")):
            raise _refuse("The URL points to this machine") from None
        return
    check_address(literal, allow_private=allow_private)


async def resolve(url: str, *, allow_private: bool) -> Destination:
    """Check ``url`` and every address its host resolves to; pick the one to use.

    Raises :class:`DestinationRefused` for a refused URL and for a name that
    does not resolve (within :data:`RESOLVE_TIMEOUT_SECONDS`).
    """
    check_url(url, allow_private=allow_private)
    scheme, host, port = parse_url(url)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return Destination(url, scheme, host, port, str(literal))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        raise _refuse(f"The host {host} could not be resolved") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _refuse(f"The host {host} could not be resolved")
    for address in addresses:
        check_address(address, allow_private=allow_private)
    # Prefer IPv4: more receivers listen on it than on IPv6.
    chosen = next((a for a in addresses if a.version == 4), addresses[0])
    return Destination(url, scheme, host, port, str(chosen))


@dataclass(frozen=True, slots=True)
class PinnedRequest:
    """What to hand ``httpx``: the URL with the address, and the name elsewhere."""

    url: str
    host_header: str
    extensions: dict[str, Any]


def pinned_request(destination: Destination) -> PinnedRequest:
    """A request to ``destination.address`` that still speaks to ``destination.host``."""
    parts = urlsplit(destination.url.strip())
    address = ipaddress.ip_address(destination.address)
    netloc_host = f"[{address}]" if address.version == 6 else str(address)
    default_port = 443 if destination.scheme == "https" else 80
    netloc = netloc_host if parts.port is None else f"{netloc_host}:{parts.port}"
    url = urlunsplit((destination.scheme, netloc, parts.path or "/", parts.query, ""))
    host = f"[{destination.host}]" if ":" in destination.host else destination.host
    host_header = host if destination.port == default_port else f"{host}:{destination.port}"
    extensions: dict[str, Any] = {}
    if destination.scheme == "https":
        # SNI and the certificate's name check use the name, not the address.
        extensions["sni_hostname"] = destination.host
    return PinnedRequest(url, host_header, extensions)
