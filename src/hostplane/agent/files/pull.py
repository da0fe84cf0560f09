"""Downloading a URL into a server's folder.

The URL comes from a user, and the agent sits inside the node's network, so a
download must not become a way to reach the node's own services, its private
network or a cloud metadata endpoint. The host is resolved once, every
address it resolves to is judged (which also settles odd literal forms such
as ``2130706433`` or ``0x7f.1``), and the connection goes to the vetted
address itself with the original ``Host`` header and TLS server name, so a
DNS answer that changes between check and connect cannot redirect it.
Redirects are followed by hand and every hop is vetted again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx

from hostplane.agent.files.confine import ServerRoot, check_name
from hostplane.agent.files.errors import (
    DiskLimitExceeded,
    DownloadFailed,
    FileError,
    IsADirectory,
    NotADirectory,
    TooLarge,
    UrlRejected,
)
from hostplane.agent.files.operations import atomic_write

if TYPE_CHECKING:
    # Only the type: the disk module imports the file manager's confinement.
    from hostplane.agent.disk import Quota

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is an ordinary internet address a download may reach.

    IPv6 forms that embed an IPv4 address (mapped, 6to4, NAT64) are judged by
    the embedded address, since that is what they end up reaching.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64[0]:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if address in _NAT64[1] or address.is_site_local:
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UrlRejected("The URL is not valid") from None
    if parsed.scheme not in ("http", "https"):
        raise UrlRejected("Only http and https URLs can be downloaded")
    if parsed.userinfo:
        raise UrlRejected("URLs with a user name or password are not allowed")
    if not parsed.raw_host:
        raise UrlRejected("The URL has no host")
    return parsed


async def _vet(url: httpx.URL, allow_address: Callable[[IPAddress], bool]) -> IPAddress:
    """Resolve the URL's host and return the address to connect to, if every
    address the host resolves to is allowed."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise DownloadFailed(f"The host {host[:200]} could not be resolved") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # An IPv6 scope ("%eth0") says which link, not which address.
        addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    if not addresses:
        raise DownloadFailed(f"The host {host[:200]} could not be resolved")
    if not all(allow_address(address) for address in addresses):
        raise UrlRejected(f"{host[:200]} is not a public internet address")
    return addresses[0]


def _name_from_url(url: httpx.URL) -> str:
    raw_path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    last = unquote(raw_path.rsplit("/", 1)[-1])
    try:
        return check_name(last)
    except FileError:
        return "download"


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: IPAddress) -> httpx.Request:
    host = url.raw_host.decode("ascii")
    host_header = f"[{host}]" if ":" in host else host
    if url.port is not None:
        host_header += f":{url.port}"
    extensions: dict[str, Any] = {}
    if url.scheme == "https":
        # The certificate is checked against this name, not the address.
        extensions["sni_hostname"] = host
    return client.build_request(
        "GET",
        url.copy_with(host=str(address)),
        # Identity, so the bytes counted against the limit are the file's bytes.
        headers={"Host": host_header, "Accept-Encoding": "identity"},
        extensions=extensions,
    )


async def _save(
    root: ServerRoot,
    target_user: str,
    response: httpx.Response,
    max_bytes: int,
    quota: Quota | None,
) -> int:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{target_user}: the file is larger than {max_bytes} bytes")
    if quota is not None and declared.isdigit() and int(declared) > quota.remaining:
        # Announced: refused before a byte is fetched. Unannounced or
        # understated sizes are stopped by the charges as the bytes arrive.
        raise DiskLimitExceeded(
            f"{target_user}: the file ({int(declared)} bytes) does not fit in the"
            f" server's disk allocation ({quota.remaining} bytes free)"
        )
    manager = atomic_write(root, target_user, max_bytes=max_bytes, make_parents=False, quota=quota)
    writer = await asyncio.to_thread(manager.__enter__)
    try:
        async for chunk in response.aiter_raw():
            await asyncio.to_thread(writer.write, chunk)
    except BaseException as exc:
        # Synchronously: on cancellation another await might not get to run.
        manager.__exit__(type(exc), exc, exc.__traceback__)
        raise
    await asyncio.to_thread(manager.__exit__, None, None, None)
    return writer.bytes_written


async def _download(
    root: ServerRoot,
    url: httpx.URL,
    target_user: str,
    *,
    max_bytes: int,
    request_timeout: float,
    allow_address: Callable[[IPAddress], bool],
    max_redirects: int,
    quota: Quota | None,
) -> int:
    # trust_env=False: a proxy from the environment would connect on our
    # behalf to whatever the name resolves to, defeating the pinning.
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=httpx.Timeout(request_timeout)
    ) as client:
        for _hop in range(max_redirects + 1):
            address = await _vet(url, allow_address)
            response = await client.send(_pinned_request(client, url, address), stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    try:
                        url = _parse(str(url.join(location)))
                    except httpx.InvalidURL:
                        raise UrlRejected("The server redirected to an invalid URL") from None
                    continue
                if not response.is_success:
                    raise DownloadFailed(f"The server answered {response.status_code}")
                return await _save(root, target_user, response, max_bytes, quota)
            finally:
                await response.aclose()
    raise DownloadFailed(f"More than {max_redirects} redirects")


async def pull(
    root: ServerRoot,
    url: str,
    directory: str,
    filename: str | None = None,
    *,
    max_bytes: int,
    # The deadline is part of the agent's request; it is applied with asyncio.timeout below.
    timeout: float,  # noqa: ASYNC109
    allow_address: Callable[[IPAddress], bool] = is_public_address,
    max_redirects: int = 5,
    quota: Quota | None = None,
) -> dict[str, Any]:
    """Download ``url`` into ``directory``; returns ``{"path", "size"}``.

    The file is named ``filename``, else after the URL's last path segment,
    else ``download``, and replaces an existing file of that name only once
    complete. Raises :class:`UrlRejected` (scheme, credentials, an address
    ``allow_address`` refuses, on any hop), :class:`TooLarge` and
    :class:`DownloadFailed` (non-2xx answer, network error, ``timeout``
    seconds overall exceeded), and :class:`DiskLimitExceeded` when the file
    does not fit in what the server's ``quota`` leaves (the download stops
    there and nothing of it is kept).
    """
    parsed = _parse(url)
    folder = root.resolve(directory, must_exist=True)
    if not folder.is_dir():
        raise NotADirectory(f"{root.normalize(directory)} is not a folder")
    name = check_name(filename) if filename is not None else _name_from_url(parsed)
    target_user = root.display(folder).rstrip("/") + "/" + name
    if (folder / name).is_dir():
        raise IsADirectory(f"{target_user} is a folder")
    try:
        async with asyncio.timeout(timeout):
            size = await _download(
                root,
                parsed,
                target_user,
                max_bytes=max_bytes,
                request_timeout=timeout,
                allow_address=allow_address,
                max_redirects=max_redirects,
                quota=quota,
            )
    except TimeoutError:
        raise DownloadFailed(f"The download took longer than {timeout:g} seconds") from None
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"The download failed: {type(exc).__name__}") from None
    return {"path": target_user, "size": size}
