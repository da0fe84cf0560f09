"""Downloads: addresses that must never be reached, and a real local HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hostplane.agent.files import (
    DownloadFailed,
    InvalidPath,
    ServerRoot,
    TooLarge,
    UrlRejected,
    is_public_address,
    pull,
)
from tests.agent.files import make_root, outside

BODY = random.Random(3).randbytes(200_000)
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def root(tmp_path: Path) -> Iterator[ServerRoot]:
    server = make_root(tmp_path)
    (server.path / "plugins").mkdir()
    before = outside(tmp_path)
    yield server
    assert outside(tmp_path) == before


def only_test_server(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address == LOOPBACK


@dataclass
class HttpServer:
    port: int
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def _respond(
    server: HttpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines if line)
    }
    path = request_line.split(" ")[1]
    server.requests.append((path, headers))
    if path.startswith("/files/"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
    elif path.startswith("/redirect?to="):
        target = path.split("=", 1)[1].replace("PORT", str(server.port))
        writer.write(
            f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode()
        )
    elif path == "/endless":
        # No length announced: only counting the body can stop it.
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for _ in range(100):
            writer.write(bytes(64 * 1024))
            await writer.drain()
    elif path == "/announced":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n")
    elif path == "/stall":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + bytes(10))
        await writer.drain()
        await asyncio.sleep(30)
    else:
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    handlers: set[asyncio.Task[None]] = set()
    state = HttpServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await _respond(state, reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


REFUSED = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://017700000001/",
    "http://0/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a00:1]/",
    "http://[64:ff9b:1::1]/",
    "ftp://example.com/file",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://user:secret@example.com/file",
    "http://user@example.com/file",
    "http:///file",
    "not a url at all",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_refused_urls(root: ServerRoot, url: str) -> None:
    with pytest.raises(UrlRejected):
        await pull(root, url, "/plugins", max_bytes=1000, timeout=5)
    assert os.listdir(root.path / "plugins") == []


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


async def test_a_download_lands_in_the_folder(root: ServerRoot, http_server: HttpServer) -> None:
    result = await pull(
        root,
        http_server.url("/files/server.jar"),
        "/plugins",
        max_bytes=len(BODY),
        timeout=5,
        allow_address=only_test_server,
    )
    assert result == {"path": "/plugins/server.jar", "size": len(BODY)}
    assert (root.path / "plugins" / "server.jar").read_bytes() == BODY
    renamed = await pull(
        root,
        http_server.url("/redirect?to=/files/server.jar"),
        "/",
        "paper.jar",
        max_bytes=len(BODY),
        timeout=5,
        allow_address=only_test_server,
    )
    assert renamed == {"path": "/paper.jar", "size": len(BODY)}
    assert (root.path / "paper.jar").read_bytes() == BODY


async def test_the_vetted_address_is_the_one_connected_to(
    root: ServerRoot, http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    lookups: list[str] = []

    async def rebinding_dns(host: str, port: int, **kwargs: Any) -> list[Any]:
        # First answer passes the check; any later one would point elsewhere.
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "10.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding_dns)
    url = f"http://files.example.test:{http_server.port}/files/server.jar"
    result = await pull(
        root, url, "/plugins", max_bytes=len(BODY), timeout=5, allow_address=only_test_server
    )
    assert result["size"] == len(BODY)
    assert lookups == ["files.example.test"]
    assert http_server.requests[0][1]["host"] == f"files.example.test:{http_server.port}"


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:PORT/files/server.jar",
        "http://[::1]:PORT/files/server.jar",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
async def test_a_redirect_to_a_refused_address_is_refused(
    root: ServerRoot, http_server: HttpServer, target: str
) -> None:
    with pytest.raises(UrlRejected):
        await pull(
            root,
            http_server.url(f"/redirect?to={target}"),
            "/plugins",
            max_bytes=len(BODY),
            timeout=5,
            allow_address=only_test_server,
        )
    assert [path for path, _ in http_server.requests] == [f"/redirect?to={target}"]
    assert os.listdir(root.path / "plugins") == []


async def test_redirect_loops_and_errors_fail(root: ServerRoot, http_server: HttpServer) -> None:
    loop_url = "/redirect?to=http://127.0.0.1:PORT/redirect?to=/missing"
    with pytest.raises(DownloadFailed, match="answered 404"):
        await pull(
            root,
            http_server.url(loop_url),
            "/plugins",
            max_bytes=10,
            timeout=5,
            allow_address=only_test_server,
        )
    with pytest.raises(DownloadFailed, match="More than 0 redirects"):
        await pull(
            root,
            http_server.url("/redirect?to=/files/server.jar"),
            "/plugins",
            max_bytes=len(BODY),
            timeout=5,
            allow_address=only_test_server,
            max_redirects=0,
        )
    assert os.listdir(root.path / "plugins") == []


@pytest.mark.parametrize("path", ["/endless", "/announced"])
async def test_the_size_limit(root: ServerRoot, http_server: HttpServer, path: str) -> None:
    with pytest.raises(TooLarge):
        await pull(
            root,
            http_server.url(path),
            "/plugins",
            max_bytes=100_000,
            timeout=5,
            allow_address=only_test_server,
        )
    assert os.listdir(root.path / "plugins") == []


async def test_a_stalling_server_times_out(root: ServerRoot, http_server: HttpServer) -> None:
    start = asyncio.get_running_loop().time()
    with pytest.raises(DownloadFailed, match=r"longer than 0\.5 seconds"):
        await pull(
            root,
            http_server.url("/stall"),
            "/plugins",
            max_bytes=10_000,
            timeout=0.5,
            allow_address=only_test_server,
        )
    assert asyncio.get_running_loop().time() - start < 2
    assert os.listdir(root.path / "plugins") == []


async def test_file_names_are_checked_before_connecting(
    root: ServerRoot, http_server: HttpServer
) -> None:
    for directory, filename in (
        ("/plugins", "../x"),
        ("/plugins", "a/b"),
        ("../", None),
        ("/plugins", ""),
    ):
        with pytest.raises(InvalidPath):
            await pull(
                root,
                http_server.url("/files/server.jar"),
                directory,
                filename,
                max_bytes=10,
                timeout=5,
                allow_address=only_test_server,
            )
    assert http_server.requests == []
    result = await pull(
        root,
        http_server.url("/files/..%2F..%2Fevil"),
        "/plugins",
        max_bytes=len(BODY),
        timeout=5,
        allow_address=only_test_server,
    )
    assert result["path"] == "/plugins/download"
