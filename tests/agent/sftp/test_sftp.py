"""SFTP against a real agent and the real panel: logins, permissions, confinement."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import asyncssh
import httpx
import paramiko
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.agent.sftp.conftest import SftpWorld, login_refused, sftp_client
from tests.support.agents import live_agents
from tests.support.identity import logged_in
from tests.support.infra import make_node
from tests.support.trees import snapshot, write_tree


async def share(
    client: httpx.AsyncClient, world: SftpWorld, user_id: str, permissions: list[str]
) -> None:
    added = await client.post(
        f"/api/servers/{world.server.id}/users",
        json={"userId": user_id, "permissions": permissions},
        headers=world.fleet.owner.headers,
    )
    assert added.status_code == 201, added.text


async def test_the_owner_lists_reads_and_writes_inside_the_server_folder(
    world: SftpWorld,
) -> None:
    folder = world.agent.server_dir(world.server.id)
    files = write_tree(folder)
    upload = os.urandom(700_000)
    token = world.fleet.owner.token

    def session() -> tuple[list[str], bytes, list[str]]:
        with sftp_client(world.port, world.server.id, token) as sftp:
            listed = sorted(sftp.listdir("/"))
            with sftp.open("/world/level.dat", "rb") as remote:
                level = remote.read()
            with sftp.open("/uploads.bin", "wb") as remote:
                remote.write(upload)
            sftp.mkdir("/new")
            sftp.rename("/uploads.bin", "/new/moved.bin")
            sftp.remove("/server.properties")
            sftp.chmod("/new/moved.bin", 0o600)
            return listed, level, sorted(sftp.listdir("/new"))

    listed, level, new = await asyncio.to_thread(session)
    assert listed == ["plugins", "server.properties", "world"]
    assert level == files["world/level.dat"]
    assert new == ["moved.bin"]
    assert (folder / "new" / "moved.bin").read_bytes() == upload
    assert stat.S_IMODE((folder / "new" / "moved.bin").stat().st_mode) == 0o600
    assert not (folder / "server.properties").exists()


async def test_an_api_key_logs_in_too(client: httpx.AsyncClient, world: SftpWorld) -> None:
    (world.agent.server_dir(world.server.id) / "a.txt").write_bytes(b"from the key\n")
    created = await client.post(
        "/api/account/api-keys",
        json={"name": "sftp", "scopes": ["file.*"]},
        headers=world.fleet.owner.headers,
    )
    assert created.status_code == 201, created.text
    key = created.json()["data"]["key"]

    def read() -> bytes:
        with sftp_client(world.port, world.server.id, key) as sftp, sftp.open("/a.txt") as f:
            return f.read()

    assert await asyncio.to_thread(read) == b"from the key\n"
    narrow = await client.post(
        "/api/account/api-keys",
        json={"name": "no-files", "scopes": ["server.read"]},
        headers=world.fleet.owner.headers,
    )
    assert narrow.status_code == 201, narrow.text
    narrow_key = narrow.json()["data"]["key"]
    assert await asyncio.to_thread(login_refused, world.port, world.server.id, narrow_key)


async def test_logins_without_a_right_to_the_files_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, world: SftpWorld
) -> None:
    fleet, port, sid = world.fleet, world.port, world.server.id
    # A valid login first, so the refusals below are not a broken server.
    assert not await asyncio.to_thread(login_refused, port, sid, fleet.owner.token)
    assert await asyncio.to_thread(login_refused, port, sid, "not a token")
    assert await asyncio.to_thread(login_refused, port, sid, fleet.owner.token[:-4] + "AAAA")
    assert await asyncio.to_thread(login_refused, port, sid, "hp_abcdefgh_" + "x" * 40)
    # Someone with no grant on the server, and an unknown server id.
    assert await asyncio.to_thread(login_refused, port, sid, fleet.other.token)
    assert await asyncio.to_thread(login_refused, port, "nosuchserver", fleet.owner.token)
    # The owner's own server, but placed on another node: this agent may not serve it.
    assert await asyncio.to_thread(login_refused, port, world.elsewhere.id, fleet.owner.token)

    # Two subusers with the same grant; one is banned, and only the other gets in.
    kept = await logged_in(client, db, tenant=fleet.tenant)
    victim = await logged_in(client, db, tenant=fleet.tenant)
    for user in (kept, victim):
        await share(client, world, user.user.id, ["file.sftp", "file.read"])
    banned = await client.post(
        f"/api/admin/users/{victim.user.id}/ban", headers=fleet.admin.headers
    )
    assert banned.status_code == 200, banned.text
    assert not await asyncio.to_thread(login_refused, port, sid, kept.token)
    assert await asyncio.to_thread(login_refused, port, sid, victim.token)

    # Reading the files is not enough: SFTP needs file.sftp.
    reader = await logged_in(client, db, tenant=fleet.tenant)
    await share(client, world, reader.user.id, ["file.read", "file.write"])
    assert await asyncio.to_thread(login_refused, port, sid, reader.token)


async def test_no_shell_no_commands_no_forwarding(world: SftpWorld) -> None:
    token = world.fleet.owner.token

    def attempts() -> list[str]:
        refused = []
        transport = paramiko.Transport(("127.0.0.1", world.port))
        try:
            transport.connect(username=world.server.id, password=token)
            channel = transport.open_session()
            try:
                channel.exec_command("id")
            except paramiko.SSHException:
                refused.append("exec")
            channel = transport.open_session()
            try:
                channel.invoke_shell()
            except paramiko.SSHException:
                refused.append("shell")
            try:
                transport.open_channel("direct-tcpip", ("127.0.0.1", world.port), ("127.0.0.1", 1))
            except paramiko.ChannelException:
                refused.append("forward")
            if transport.request_port_forward("127.0.0.1", 0) is None:
                refused.append("listen")
        except paramiko.SSHException:
            refused.append("listen")
        finally:
            transport.close()
        return refused

    assert await asyncio.to_thread(attempts) == ["exec", "shell", "forward", "listen"]


async def test_a_subuser_with_file_read_reads_but_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, world: SftpWorld
) -> None:
    folder = world.agent.server_dir(world.server.id)
    files = write_tree(folder)
    before = snapshot(folder)
    reader = await logged_in(client, db, tenant=world.fleet.tenant)
    await share(client, world, reader.user.id, ["file.sftp", "file.read"])

    def session() -> tuple[bytes, list[str]]:
        refused = []
        with sftp_client(world.port, world.server.id, reader.token) as sftp:
            with sftp.open("/world/region/r.0.0.mca") as f:
                region = f.read()
            attempts = {
                "create": lambda: sftp.open("/new.txt", "wb").close(),
                "overwrite": lambda: sftp.open("/server.properties", "wb").close(),
                "append": lambda: sftp.open("/server.properties", "ab").close(),
                "remove": lambda: sftp.remove("/server.properties"),
                "mkdir": lambda: sftp.mkdir("/made"),
                "rmdir": lambda: sftp.rmdir("/plugins/a"),
                "rename": lambda: sftp.rename("/server.properties", "/moved"),
                "chmod": lambda: sftp.chmod("/server.properties", 0o777),
                "truncate": lambda: sftp.truncate("/server.properties", 0),
                "symlink": lambda: sftp.symlink("/server.properties", "/link"),
            }
            for name, attempt in attempts.items():
                try:
                    attempt()
                except PermissionError:
                    refused.append(name)
        return region, refused

    region, refused = await asyncio.to_thread(session)
    assert region == files["world/region/r.0.0.mca"]
    assert refused == [
        "create",
        "overwrite",
        "append",
        "remove",
        "mkdir",
        "rmdir",
        "rename",
        "chmod",
        "truncate",
        "symlink",
    ]
    assert snapshot(folder) == before
    assert stat.S_IMODE((folder / "server.properties").stat().st_mode) != 0o777


async def test_sftp_version_6_clients_get_the_same_rules(
    client: httpx.AsyncClient, db: AsyncSession, world: SftpWorld
) -> None:
    folder = world.agent.server_dir(world.server.id)
    (folder / "keep.txt").write_bytes(b"keep\n")
    reader = await logged_in(client, db, tenant=world.fleet.tenant)
    await share(client, world, reader.user.id, ["file.sftp", "file.read"])

    async def connect(password: str) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            world.port,
            username=world.server.id,
            password=password,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            preferred_auth="password",
        )

    async with (
        await connect(world.fleet.owner.token) as conn,
        conn.start_sftp_client(sftp_version=6) as sftp,
    ):
        assert sftp.version == 6
        async with sftp.open("/v6.bin", "wb") as f:
            await f.write(b"\x00\x01v6")
        async with sftp.open("/keep.txt", "rb") as f:
            assert await f.read() == b"keep\n"
    assert (folder / "v6.bin").read_bytes() == b"\x00\x01v6"

    async with (
        await connect(reader.token) as conn,
        conn.start_sftp_client(sftp_version=6) as sftp,
    ):
        async with sftp.open("/keep.txt", "rb") as f:
            assert await f.read() == b"keep\n"
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/keep.txt", "wb")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/other.txt", "wb")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.remove("/keep.txt")
    assert (folder / "keep.txt").read_bytes() == b"keep\n"
    assert not (folder / "other.txt").exists()


async def test_nothing_outside_the_folder_is_seen_or_changed(
    world: SftpWorld, tmp_path: Path
) -> None:
    folder = world.agent.server_dir(world.server.id)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(b"the node's secret\n")
    secret.chmod(0o640)
    (folder / "inside.txt").write_bytes(b"inside\n")
    # What a game process could plant: links to a file and a folder outside.
    (folder / "escape").symlink_to(secret)
    (folder / "escape_dir").symlink_to(outside)
    (folder / "nested").mkdir()
    (folder / "nested" / "up").symlink_to("../../..")
    (folder / "fine").symlink_to("inside.txt")
    around = sorted(p.name for p in folder.parent.iterdir())
    token = world.fleet.owner.token

    def session() -> dict[str, object]:
        seen: dict[str, object] = {}
        with sftp_client(world.port, world.server.id, token) as sftp:
            seen["root"] = sftp.normalize("/../../..")
            seen["dotdot"] = sorted(sftp.listdir("/../.."))
            with sftp.open("/../../inside.txt") as f:
                seen["clamped"] = f.read()
            with sftp.open("/fine") as f:
                seen["inside link"] = f.read()
            seen["link listed"] = stat.S_ISLNK(sftp.lstat("/escape").st_mode)
            attempts = {
                "read link": lambda: sftp.open("/escape").read(),
                "write link": lambda: sftp.open("/escape", "wb").write(b"owned"),
                "append link": lambda: sftp.open("/escape", "ab").write(b"owned"),
                "stat link": lambda: sftp.stat("/escape"),
                "chmod link": lambda: sftp.chmod("/escape", 0o777),
                "truncate link": lambda: sftp.truncate("/escape", 0),
                "readlink": lambda: sftp.readlink("/escape"),
                "list dir link": lambda: sftp.listdir("/escape_dir"),
                "read through dir link": lambda: sftp.open("/escape_dir/secret.txt").read(),
                "write through dir link": lambda: sftp.open("/escape_dir/new", "wb").close(),
                "mkdir through dir link": lambda: sftp.mkdir("/escape_dir/made"),
                "remove through dir link": lambda: sftp.remove("/escape_dir/secret.txt"),
                "rename into dir link": lambda: sftp.rename("/inside.txt", "/escape_dir/x"),
                "rename out of dir link": lambda: sftp.rename("/escape_dir/secret.txt", "/got"),
                "list up": lambda: sftp.listdir("/nested/up"),
                "read up": lambda: sftp.open("/nested/up/etc/hostname").read(),
                "symlink": lambda: sftp.symlink("/etc/passwd", "/mine"),
            }
            refused = []
            for name, attempt in attempts.items():
                try:
                    attempt()
                except (PermissionError, FileNotFoundError):
                    refused.append(name)
            seen["refused"] = refused
            try:
                sftp.open("/etc/passwd").read()
            except FileNotFoundError:
                seen["absolute"] = "not found"
            # Removing a link removes the link, never its target.
            sftp.remove("/escape")
        return seen

    seen = await asyncio.to_thread(session)
    assert seen["root"] == "/"
    assert seen["dotdot"] == ["escape", "escape_dir", "fine", "inside.txt", "nested"]
    assert seen["clamped"] == b"inside\n"
    assert seen["inside link"] == b"inside\n"
    assert seen["link listed"] is True
    assert seen["refused"] == [
        "read link",
        "write link",
        "append link",
        "stat link",
        "chmod link",
        "truncate link",
        "readlink",
        "list dir link",
        "read through dir link",
        "write through dir link",
        "mkdir through dir link",
        "remove through dir link",
        "rename into dir link",
        "rename out of dir link",
        "list up",
        "read up",
        "symlink",
    ]
    assert seen["absolute"] == "not found"
    assert secret.read_bytes() == b"the node's secret\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o640
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert sorted(p.name for p in folder.parent.iterdir()) == around
    assert not (folder / "escape").exists() and not (folder / "escape").is_symlink()
    assert (folder / "inside.txt").read_bytes() == b"inside\n"
    assert not (folder / "mine").is_symlink()


async def test_the_host_key_is_kept_across_restarts(world: SftpWorld) -> None:
    sftp_service = world.agent.connection.sftp
    key_file = world.agent.data_dir / "sftp" / "host_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    def host_key(port: int) -> str:
        transport = paramiko.Transport(("127.0.0.1", port))
        try:
            transport.start_client(timeout=10)
            return transport.get_remote_server_key().get_base64()
        finally:
            transport.close()

    first = await asyncio.to_thread(host_key, world.port)
    assert first.startswith("AAAAC3NzaC1lZDI1NTE5")  # ssh-ed25519
    await sftp_service.close()
    assert sftp_service.port is None
    await sftp_service.start()
    assert await asyncio.to_thread(host_key, world.port) == first
    saved = asyncssh.read_private_key(key_file)
    assert saved.export_public_key().split()[1].decode() == first


async def test_an_agent_whose_sftp_port_is_taken_runs_on_without_sftp(
    app: object, db: AsyncSession, world: SftpWorld
) -> None:
    node, secret = await make_node(db, tenant=world.fleet.tenant, name="busy-port")
    await db.commit()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = {node.id: {"sftp_listen": f"127.0.0.1:{taken.getsockname()[1]}"}}
        async with live_agents(app, [(node.id, secret)], settings_of=busy) as [agent]:
            assert agent.connection.connected.is_set()
            assert agent.connection.sftp.port is None


async def test_files_held_by_a_restore_can_be_read_but_not_changed(world: SftpWorld) -> None:
    folder = world.agent.server_dir(world.server.id)
    (folder / "a.txt").write_bytes(b"before\n")
    token = world.fleet.owner.token

    def session() -> tuple[bytes, list[str]]:
        refused = []
        with sftp_client(world.port, world.server.id, token) as sftp:
            with sftp.open("/a.txt", "rb") as remote:
                content = remote.read()
            for name, change in {
                "write": lambda: sftp.open("/a.txt", "wb").close(),
                "mkdir": lambda: sftp.mkdir("/new"),
                "remove": lambda: sftp.remove("/a.txt"),
                "rename": lambda: sftp.rename("/a.txt", "/b.txt"),
            }.items():
                try:
                    change()
                except OSError as exc:
                    refused.append(f"{name}: {'busy' in str(exc)}")
        return content, refused

    with world.agent.connection.context.exclusive(world.server.id, "restoring a backup"):
        content, refused = await asyncio.to_thread(session)
    assert content == b"before\n"
    assert refused == ["write: True", "mkdir: True", "remove: True", "rename: True"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]
    assert (folder / "a.txt").read_bytes() == b"before\n"


async def test_every_change_is_written_to_the_servers_log(
    client: httpx.AsyncClient, world: SftpWorld
) -> None:
    folder = world.agent.server_dir(world.server.id)
    (folder / "old.txt").write_bytes(b"x")
    token = world.fleet.owner.token
    username = world.fleet.owner.user.username

    def session() -> None:
        with sftp_client(world.port, world.server.id, token) as sftp:
            with sftp.open("/old.txt", "rb") as remote:
                remote.read()  # reads are not changes: not logged
            with sftp.open("/up.bin", "wb") as remote:
                remote.write(b"a" * 1000)
            sftp.mkdir("/maps")
            sftp.rename("/up.bin", "/maps/up.bin")
            sftp.chmod("/maps/up.bin", 0o640)
            sftp.remove("/old.txt")

    await asyncio.to_thread(session)
    expected = [
        f"SFTP: {username} uploaded /up.bin (1000 bytes)",
        f"SFTP: {username} created the folder /maps",
        f"SFTP: {username} renamed /up.bin -> /maps/up.bin",
        f"SFTP: {username} changed the permissions of /maps/up.bin",
        f"SFTP: {username} deleted /old.txt",
    ]
    lines: list[str] = []
    for _ in range(50):  # the gateway stores log lines about once a second
        answer = await client.get(
            f"/api/servers/{world.server.id}/logs",
            params={"stream": "system"},
            headers=world.fleet.owner.headers,
        )
        assert answer.status_code == 200, answer.text
        lines = [entry["data"] for entry in answer.json()["data"]]
        if len(lines) >= len(expected):
            break
        await asyncio.sleep(0.1)
    assert lines == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="servers get their own uid under a root agent")
async def test_uploads_belong_to_the_servers_uid_at_once(world: SftpWorld) -> None:
    uids = world.agent.runtime.uids
    assert uids is not None
    identity = uids.identity(world.server.id)  # as its first start allocates it
    folder = world.agent.server_dir(world.server.id)

    def session() -> None:
        with sftp_client(world.port, world.server.id, world.fleet.owner.token) as sftp:
            sftp.mkdir("/plugins")
            with sftp.open("/plugins/new.jar", "wb") as remote:
                remote.write(b"jar")

    await asyncio.to_thread(session)
    for made in ("plugins", "plugins/new.jar"):
        info = (folder / made).stat()
        assert (info.st_uid, info.st_gid) == (identity.uid, identity.gid), made
