"""Servers never run as root nor with a capability (the agent runs as root here).

Each test starts a real server through the process runtime, plain and under
bubblewrap, and looks at it from inside (``/proc/self/status``) and from the
host (``/proc/<pid>/status`` of every process of its group).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hostplane.agent import sysinfo
from hostplane.agent.config import AgentSettings
from hostplane.agent.files.confine import ServerRoot
from hostplane.agent.files.operations import atomic_write
from hostplane.agent.handlers.context import HandlerContext
from hostplane.agent.handlers.files import FileHandlers
from hostplane.agent.isolation import Identity, ServerUids, own_tree
from hostplane.agent.peers import PeerListener
from hostplane.agent.runtime import ProcessRuntime
from hostplane.agent.streams import StreamHub
from hostplane.protocol import FileMkdir, FileOperation, WireModel
from tests.agent.conftest import HAS_BWRAP, collect_until
from tests.agent.test_runtime import has_state, lines_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checks what a root agent does")

STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def process_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return status_fields(handle.read())


def status_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = " ".join(value.split())
    return fields


def assert_unprivileged(fields: dict[str, str]) -> None:
    for uid in fields["Uid"].split() + fields["Gid"].split():
        assert int(uid) != 0, fields
    assert fields["Groups"] == "", fields
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert fields[cap] == "0000000000000000", (cap, fields)
    assert fields["NoNewPrivs"] == "1", fields


async def output_until_exit(runtime: ProcessRuntime, server_id: str) -> list[str]:
    events = await collect_until(runtime, has_state("stopped", "crashed"), within=20)
    return [line for _, line in lines_of(events)]


async def test_inside_the_server_no_root_no_capability_no_new_privileges(
    runtime: ProcessRuntime,
) -> None:
    await runtime.start("caps", "cat /proc/self/status")
    fields = status_fields("\n".join(await output_until_exit(runtime, "caps")))
    assert_unprivileged(fields)


async def test_on_the_host_every_server_process_has_its_own_uid_and_no_capability(
    runtime: ProcessRuntime, sandbox: bool
) -> None:
    status = await runtime.start("host-view", "sleep 30")
    assert status.pid is not None
    try:
        deadline = time.monotonic() + 10
        server_processes: list[dict[str, str]] = []
        while time.monotonic() < deadline and not server_processes:
            members = sysinfo.group_members(status.pid)
            server_processes = [process_status(pid) for pid, name in members if name == "sleep"]
            await asyncio.sleep(0.05)
        assert server_processes, "the server's process never showed up"
        for fields in server_processes:
            assert_unprivileged(fields)
        uids = ServerUids(runtime.data_dir, base=200_000, count=100_000)
        identity = uids.get("host-view")
        assert identity is not None
        assert server_processes[0]["Uid"].split()[0] == str(identity.uid)
        if sandbox:
            # Root only in the outer bwrap's two processes (the monitor and the
            # namespace's init), which build the mounts and then only wait.
            root_processes = [
                name
                for pid, name in sysinfo.group_members(status.pid)
                if process_status(pid)["Uid"].split()[0] == "0"
            ]
            assert root_processes == ["bwrap"] * len(root_processes), root_processes
            assert len(root_processes) <= 2, root_processes
    finally:
        await runtime.kill("host-view")


ESCAPE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "handle") == 0) {
        struct file_handle *fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
        int mount_id;
        fh->handle_bytes = MAX_HANDLE_SZ;
        if (name_to_handle_at(AT_FDCWD, argv[2], fh, &mount_id, 0) != 0) {
            perror("name_to_handle_at");
            return 2;
        }
        printf("%d ", fh->handle_type);
        for (unsigned i = 0; i < fh->handle_bytes; i++) printf("%02x", fh->f_handle[i]);
        printf("\n");
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "open") == 0) {
        size_t n = strlen(argv[3]) / 2;
        struct file_handle *fh = malloc(sizeof(*fh) + n);
        fh->handle_bytes = n;
        fh->handle_type = atoi(argv[2]);
        for (size_t i = 0; i < n; i++) sscanf(argv[3] + 2 * i, "%2hhx", &fh->f_handle[i]);
        int mount_fd = open(".", O_RDONLY | O_DIRECTORY);
        int fd = open_by_handle_at(mount_fd, fh, O_RDONLY);
        if (fd < 0) {
            printf("escape failed: %s\n", strerror(errno));
            return 0;
        }
        char buf[200];
        ssize_t got = read(fd, buf, sizeof buf - 1);
        buf[got > 0 ? got : 0] = 0;
        printf("escaped: read %s\n", buf);
        return 0;
    }
    return 64;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the probe")
async def test_open_by_handle_at_cannot_read_a_host_file(
    runtime: ProcessRuntime, data_dir: Path
) -> None:
    """The "shocker" escape: a file handle of a host file outside the server's
    folder, opened through a descriptor of the folder's own file system."""
    secret = data_dir / "outside-secret"
    secret.write_text("host-secret-key")
    secret.chmod(0o600)
    folder = runtime.server_dir("shocker")
    folder.mkdir(parents=True)
    (folder / "probe.c").write_text(ESCAPE_C)
    subprocess.run(["gcc", "-O1", "-o", str(folder / "probe"), str(folder / "probe.c")], check=True)
    handle = subprocess.run(
        [str(folder / "probe"), "handle", str(secret)], check=True, capture_output=True, text=True
    ).stdout.split()
    # The probe works where it may: root on the host reads the file by handle.
    opened_as_root = subprocess.run(
        [str(folder / "probe"), "open", *handle], cwd=folder, capture_output=True, text=True
    )
    assert "escaped: read host-secret-key" in opened_as_root.stdout

    await runtime.start("shocker", f"./probe open {handle[0]} {handle[1]}")
    output = await output_until_exit(runtime, "shocker")
    assert any(line.startswith("escape failed") for line in output), output
    assert not any("host-secret-key" in line for line in output), output


async def test_a_server_changes_files_the_file_manager_wrote(runtime: ProcessRuntime) -> None:
    folder = runtime.server_dir("writer")
    folder.mkdir(parents=True)
    root = ServerRoot(folder)
    with atomic_write(root, "/config/server.properties", max_bytes=None) as writer:
        writer.write(b"motd=from the panel\n")
    with atomic_write(root, "/top.txt", max_bytes=None) as writer:
        writer.write(b"top\n")
    assert (folder / "config" / "server.properties").stat().st_uid == 0
    await runtime.start(
        "writer",
        "sh -c 'echo motd=changed >> config/server.properties && rm top.txt"
        " && mkdir -p world && echo made > world/level.dat && echo done'",
    )
    output = await output_until_exit(runtime, "writer")
    assert "done" in output, output
    assert (folder / "config" / "server.properties").read_text().endswith("motd=changed\n")
    assert not (folder / "top.txt").exists()
    identity = ServerUids(runtime.data_dir, base=200_000, count=100_000).get("writer")
    assert identity is not None
    assert (folder / "world" / "level.dat").stat().st_uid == identity.uid


async def test_install_runs_as_the_server_uid_and_leaves_files_the_server_owns(
    runtime: ProcessRuntime,
) -> None:
    lines: list[str] = []
    async for batch in runtime.install("installed", "id -u\necho data > server.jar\n"):
        lines += batch.lines
    identity = ServerUids(runtime.data_dir, base=200_000, count=100_000).get("installed")
    assert identity is not None
    assert lines == [str(identity.uid)]
    assert (runtime.server_dir("installed") / "server.jar").stat().st_uid == identity.uid


async def test_each_server_has_its_own_uid_kept_across_runtimes_and_freed_when_forgotten(
    data_dir: Path, sandbox: bool
) -> None:
    first = ProcessRuntime(data_dir, sandbox=sandbox)
    for server_id in ("a", "b"):
        await first.start(server_id, "true")
        await collect_until(first, has_state("stopped"))
    uids = ServerUids(data_dir, base=200_000, count=100_000)
    a, b = uids.get("a"), uids.get("b")
    assert a is not None and b is not None and a.uid != b.uid
    assert os.stat(first.server_dir("a")).st_uid == a.uid
    assert os.stat(first.server_dir("a")).st_mode & 0o777 == 0o700
    await first.close()

    second = ProcessRuntime(data_dir, sandbox=sandbox)
    await second.start("a", "true")
    await collect_until(second, has_state("stopped"))
    assert uids.get("a") == a
    await second.forget("a")
    assert uids.get("a") is None
    await second.close()


def test_uids_come_from_the_configured_range_until_it_is_exhausted(tmp_path: Path) -> None:
    uids = ServerUids(tmp_path, base=300_000, count=2)
    assert uids.identity("x") == Identity(300_000, 300_000)
    assert uids.identity("y") == Identity(300_001, 300_001)
    assert uids.identity("x") == Identity(300_000, 300_000)
    with pytest.raises(Exception, match="in use"):
        uids.identity("z")
    uids.release("x")
    assert uids.identity("z") == Identity(300_000, 300_000)


def test_owning_the_tree_follows_no_link_and_skips_hard_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host-file").write_text("x")
    folder = tmp_path / "server"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "mine").write_text("y")
    (folder / "to-outside").symlink_to(outside)
    (folder / "to-host-file").symlink_to(outside / "host-file")
    # A hard link the server made to a file it can read elsewhere.
    os.link(outside / "host-file", folder / "linked")
    identity = Identity(250_000, 250_000)

    own_tree(folder, identity)

    assert (folder / "sub" / "mine").stat().st_uid == 250_000
    assert (folder / "sub").stat().st_uid == 250_000
    assert os.lstat(folder / "to-outside").st_uid == 250_000
    assert outside.stat().st_uid == 0
    assert (outside / "host-file").stat().st_uid == 0
    assert (folder / "sub").stat().st_gid == 250_000


def test_owning_ten_thousand_files_is_cheap(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    for d in range(100):
        sub = folder / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f}").write_bytes(b"")
    identity = Identity(260_000, 260_000)
    began = time.perf_counter()
    assert own_tree(folder, identity) == 10_101
    first = time.perf_counter() - began
    began = time.perf_counter()
    assert own_tree(folder, identity) == 0
    again = time.perf_counter() - began
    # Generous bounds: measured ~0.5 s and ~0.2 s on a loaded 2-core machine.
    assert first < 5
    assert again < 5


@pytest.mark.parametrize("network", ["host", "none"])
async def test_the_host_network_by_default_or_none_on_request(data_dir: Path, network: str) -> None:
    if not HAS_BWRAP:
        pytest.skip("the network namespace comes with bubblewrap")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    runtime = ProcessRuntime(data_dir, sandbox=True, network=network)
    probe = (
        "import socket; s = socket.socket(); s.settimeout(2); "
        f"print('reached' if s.connect_ex(('127.0.0.1', {port})) == 0 else 'unreachable')"
    )
    try:
        await runtime.start("net", f'/usr/bin/python3 -c "{probe}"')
        output = await output_until_exit(runtime, "net")
    finally:
        listener.close()
        await runtime.close()
    # The host's network: a service on the node's loopback is reachable.
    assert output == (["reached"] if network == "host" else ["unreachable"])


async def test_a_sandboxed_server_cannot_make_user_namespaces(data_dir: Path) -> None:
    if not HAS_BWRAP:
        pytest.skip("needs bubblewrap")
    runtime = ProcessRuntime(data_dir, sandbox=True)
    try:
        await runtime.start("userns", "sh -c 'unshare --user true 2>/dev/null; echo code=$?'")
        output = await output_until_exit(runtime, "userns")
    finally:
        await runtime.close()
    assert output != ["code=0"] and len(output) == 1, output


def test_what_the_agent_writes_is_given_to_the_server_at_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host-file").write_text("x")
    folder = tmp_path / "server"
    folder.mkdir()
    root = ServerRoot(folder, owner=(250_000, 250_000))
    with atomic_write(root, "/config/plugins/settings.yml", max_bytes=None) as writer:
        writer.write(b"a: 1\n")
    assert (folder / "config").stat().st_uid == 0

    assert root.adopt("/config/plugins/settings.yml") == 3
    for made in ("config", "config/plugins", "config/plugins/settings.yml"):
        assert (folder / made).stat().st_uid == 250_000, made
        assert (folder / made).stat().st_gid == 250_000, made
    assert root.adopt("/config/plugins/settings.yml") == 0, "nothing left to change"

    # A folder: everything below it, through no link and past no hard link.
    (folder / "world" / "region").mkdir(parents=True)
    (folder / "world" / "region" / "r.0.0.mca").write_bytes(b"\0")
    (folder / "world" / "to-outside").symlink_to(outside)
    os.link(outside / "host-file", folder / "world" / "linked")
    root.adopt("/world")
    assert (folder / "world" / "region" / "r.0.0.mca").stat().st_uid == 250_000
    assert os.lstat(folder / "world" / "to-outside").st_uid == 250_000
    assert outside.stat().st_uid == 0
    assert (outside / "host-file").stat().st_uid == 0

    # A path through a planted link stops at the link.
    root.adopt("/world/to-outside/host-file")
    assert (outside / "host-file").stat().st_uid == 0
    assert ServerRoot(folder).adopt("/world") == 0, "without an owner nothing changes"


async def test_a_running_server_changes_what_the_file_manager_writes_meanwhile(
    runtime: ProcessRuntime,
) -> None:
    await runtime.start(
        "live",
        "sh -c 'while [ ! -f ready ]; do sleep 0.05; done;"
        " echo changed >> plugins/settings.yml && echo done'",
    )
    folder = runtime.server_dir("live")
    owner = runtime.file_owner("live")
    assert owner is not None and owner[0] != 0
    # What the file manager and SFTP do for a server that runs on.
    root = ServerRoot(folder, owner=owner)
    with atomic_write(root, "/plugins/settings.yml", max_bytes=None) as writer:
        writer.write(b"uploaded\n")
    root.adopt("/plugins/settings.yml")
    with atomic_write(root, "/ready", max_bytes=None) as writer:
        writer.write(b"")
    root.adopt("/ready")
    output = await output_until_exit(runtime, "live")
    assert "done" in output, output
    assert (folder / "plugins" / "settings.yml").read_text() == "uploaded\nchanged\n"


async def test_the_file_handlers_give_new_files_to_the_servers_uid(tmp_path: Path) -> None:
    async def discard(message: WireModel | bytes) -> None:
        del message

    async def stopped(server_id: str) -> bool:
        return False

    settings = AgentSettings(data_dir=tmp_path)
    context = HandlerContext(
        settings=settings,
        streams=StreamHub(discard, discard),
        send=discard,
        server_dir=lambda server_id: tmp_path / server_id,
        is_running=stopped,
        peers=PeerListener(settings),
        file_owner=lambda server_id: (260_000, 260_000),
    )
    files = FileHandlers(context)
    await files.legacy(
        FileOperation(operation="write", server_id="s1", path="/a/b.txt", content="hi")
    )
    await files.mkdir(FileMkdir(server_id="s1", path="/made/here"))
    for made in ("a", "a/b.txt", "made", "made/here"):
        assert (tmp_path / "s1" / made).stat().st_uid == 260_000, made
