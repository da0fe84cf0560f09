"""The peer listener for direct transfers: one prepared token, one connection, once."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from hostplane.agent import peers
from hostplane.agent.config import AgentSettings
from hostplane.agent.peers import (
    PeerListener,
    PeerNotConnected,
    PeerRefused,
    PeerUnreachable,
    push,
)
from hostplane.agent.streams import StreamAborted

TOKEN = "a" * 43
SERVER = "01JD0000000000000000000000"


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[PeerListener]:
    found = PeerListener(AgentSettings(data_dir=tmp_path, transfer_listen="127.0.0.1:0"))
    await found.start()
    try:
        yield found
    finally:
        await found.close()


def chunks_of(data: bytes, size: int = 100_000) -> Callable[[], Awaitable[bytes | None]]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]

    async def next_chunk() -> bytes | None:
        return pieces.pop(0) if pieces else None

    return next_chunk


async def receive(listener: PeerListener, *, fail: str | None = None) -> bytes:
    """What the target's import does: take the connection, read it, end it."""
    received = bytearray()
    async with listener.accept(SERVER) as incoming:
        async for chunk in incoming.chunks():
            received += chunk
        assert incoming.end is not None
        assert incoming.end.sha256 == hashlib.sha256(received).hexdigest()
        if fail is not None:
            raise StreamAborted(fail)
    return bytes(received)


async def test_a_prepared_push_arrives_whole_and_is_confirmed(listener: PeerListener) -> None:
    data = os.urandom(1_500_000)
    assert listener.url is not None and listener.url.startswith("ws://127.0.0.1:")
    listener.expect(SERVER, TOKEN)
    target = asyncio.create_task(receive(listener))
    size, sha256 = await push(listener.url, TOKEN, SERVER, chunks_of(data))
    assert await target == data
    assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())


async def test_the_target_refusing_the_archive_fails_the_push(listener: PeerListener) -> None:
    assert listener.url is not None
    listener.expect(SERVER, TOKEN)
    target = asyncio.create_task(receive(listener, fail="no space left for this server"))
    with pytest.raises(PeerRefused, match="no space left"):
        await push(listener.url, TOKEN, SERVER, chunks_of(b"x" * 10_000))
    with pytest.raises(StreamAborted):
        await target


@pytest.mark.parametrize(
    ("token", "server", "path"),
    [
        ("b" * 43, SERVER, peers.PATH),  # wrong token
        (TOKEN, "01JD0000000000000000000001", peers.PATH),  # another server
        ("", SERVER, peers.PATH),  # none
        (TOKEN, SERVER, "/elsewhere"),  # wrong path
    ],
)
async def test_anything_but_the_prepared_token_is_refused(
    listener: PeerListener, token: str, server: str, path: str
) -> None:
    assert listener.url is not None
    listener.expect(SERVER, TOKEN)
    url = listener.url.replace(peers.PATH, path)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}", peers.SERVER_HEADER: server},
        )
    assert refused.value.response.status_code in (401, 404)
    # The refusals spent nothing: the right token still works.
    target = asyncio.create_task(receive(listener))
    await push(listener.url, TOKEN, SERVER, chunks_of(b"payload"))
    assert await target == b"payload"


async def test_a_token_opens_one_connection_only(listener: PeerListener) -> None:
    assert listener.url is not None
    listener.expect(SERVER, TOKEN)
    target = asyncio.create_task(receive(listener))
    await push(listener.url, TOKEN, SERVER, chunks_of(b"first"))
    assert await target == b"first"
    with pytest.raises(PeerUnreachable, match="401"):
        await push(listener.url, TOKEN, SERVER, chunks_of(b"second"))


async def test_an_expired_token_is_refused(
    listener: PeerListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert listener.url is not None
    monkeypatch.setattr(peers, "TOKEN_TTL", 0.0)
    listener.expect(SERVER, TOKEN)
    await asyncio.sleep(0.01)
    with pytest.raises(PeerUnreachable, match="401"):
        await push(listener.url, TOKEN, SERVER, chunks_of(b"late"))


async def test_aborting_ends_the_targets_wait(listener: PeerListener) -> None:
    listener.expect(SERVER, TOKEN)
    target = asyncio.create_task(receive(listener))
    await asyncio.sleep(0.05)
    listener.cancel(SERVER)
    with pytest.raises(PeerNotConnected, match="aborted"):
        await target


async def test_a_source_that_stops_half_way_fails_the_import(listener: PeerListener) -> None:
    assert listener.url is not None
    listener.expect(SERVER, TOKEN)
    target = asyncio.create_task(receive(listener))
    async with connect(
        listener.url,
        additional_headers={"Authorization": f"Bearer {TOKEN}", peers.SERVER_HEADER: SERVER},
    ) as ws:
        await ws.send(b"half of an archive")
    with pytest.raises(StreamAborted, match="disconnected"):
        await target


async def test_a_source_that_gives_up_fails_the_import(listener: PeerListener) -> None:
    assert listener.url is not None
    listener.expect(SERVER, TOKEN)
    target = asyncio.create_task(receive(listener))
    async with connect(
        listener.url,
        additional_headers={"Authorization": f"Bearer {TOKEN}", peers.SERVER_HEADER: SERVER},
    ) as ws:
        await ws.send(b"some bytes")
        await ws.send(json.dumps({"type": "stream_error", "message": "disk read failed"}))
        with pytest.raises(StreamAborted, match="disk read failed"):
            await target


async def test_nothing_listening_is_unreachable() -> None:
    with pytest.raises(PeerUnreachable):
        await push("ws://127.0.0.1:9/transfers", TOKEN, SERVER, chunks_of(b"x"))
    with pytest.raises(PeerUnreachable, match="ws:// or wss://"):
        await push("http://127.0.0.1:9/transfers", TOKEN, SERVER, chunks_of(b"x"))


async def test_a_node_without_a_listener_has_no_url(tmp_path: Path) -> None:
    idle = PeerListener(AgentSettings(data_dir=tmp_path))
    await idle.start()
    assert not idle.enabled and idle.url is None
    with pytest.raises(PeerNotConnected):
        async with idle.accept(SERVER):
            pass


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-2")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "peer.crt", folder / "peer.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_a_listener_with_a_certificate_speaks_wss(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    secure = PeerListener(
        AgentSettings(
            data_dir=tmp_path,
            transfer_listen="127.0.0.1:0",
            transfer_tls_cert=cert,
            transfer_tls_key=key,
        )
    )
    await secure.start()
    try:
        assert secure.url is not None and secure.url.startswith("wss://")
        url = secure.url
        # A certificate the source does not trust: nothing is sent.
        secure.expect(SERVER, TOKEN)
        with pytest.raises(PeerUnreachable):
            await push(url, TOKEN, SERVER, chunks_of(b"secret"))
        secure.expect(SERVER, TOKEN)
        target = asyncio.create_task(receive(secure))
        await push(url, TOKEN, SERVER, chunks_of(b"secret"), ca_file=str(cert))
        assert await target == b"secret"
    finally:
        await secure.close()


async def test_a_taken_port_leaves_the_node_on_the_relay(listener: PeerListener) -> None:
    assert listener.url is not None
    port = listener.url.rsplit(":", 1)[1].split("/")[0]
    second = PeerListener(
        AgentSettings(data_dir=listener.settings.data_dir, transfer_listen=f"127.0.0.1:{port}")
    )
    await second.start()
    assert second.enabled and second.url is None
    await second.close()


@pytest.mark.parametrize("listen", ["8081", "host:", "host:port", "0.0.0.0:70000"])
def test_the_listen_address_must_be_host_and_port(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        AgentSettings(data_dir=tmp_path, transfer_listen=listen)
