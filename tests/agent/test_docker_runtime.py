"""DockerRuntime against a real Podman (``scripts/podman.sh``): no mocks, no pulls.

Every server is a busybox shell in ``localhost/hostplane-test:latest``; every
container a test makes carries the test's label and is removed afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from hostplane.agent.runtime import (
    InstallFailed,
    LaunchSpec,
    OutputBatch,
    RuntimeEvent,
    ServerAlreadyRunning,
    ServerNotRunning,
    StateChange,
)
from hostplane.agent.runtimes.docker import (
    DockerRuntime,
    ImageUnavailable,
    InstallImageUnavailable,
)
from hostplane.agent.runtimes.docker_engine import pull_status_line
from tests.agent.conftest import collect_until as collect_events
from tests.support.containers import Engine, podman_engine

ECHO = (
    "exec sh -c 'echo ready; echo warming >&2; while read l; do "
    'if [ "$l" = quit ]; then echo bye; exit 0; fi; '
    'if [ "$l" = crash ]; then exit 3; fi; '
    'echo "got $l"; done\''
)


def new_server_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def make_runtime(data_dir: Path, engine: Engine, **options: object) -> DockerRuntime:
    return DockerRuntime(
        data_dir,
        docker_host=engine.host,
        node_id="node-test",
        labels=engine.labels,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with podman_engine() as found:
        yield found


@pytest.fixture
async def docker_runtime(data_dir: Path, engine: Engine) -> AsyncIterator[DockerRuntime]:
    runtime = make_runtime(data_dir, engine)
    try:
        yield runtime
    finally:
        await runtime.close()


def spec(engine: Engine, **values: object) -> LaunchSpec:
    return LaunchSpec(image=engine.image, **values)  # type: ignore[arg-type]


async def collect_until(
    runtime: DockerRuntime,
    done: Callable[[list[RuntimeEvent]], bool],
    *,
    within: float = 15.0,
) -> list[RuntimeEvent]:
    """As for processes, with more time: containers start slower."""
    return await collect_events(runtime, done, within=within)


def lines_of(events: list[RuntimeEvent]) -> list[tuple[int, str, str]]:
    """``(seq, stream, line)`` of every output line, in order."""
    out = []
    for event in events:
        if isinstance(event, OutputBatch):
            assert event.seq is not None
            out += [(event.seq + i, event.stream, line) for i, line in enumerate(event.lines)]
    return out


def has_line(text: str) -> Callable[[list[RuntimeEvent]], bool]:
    return lambda events: any(line == text for _, _, line in lines_of(events))


def has_state(state: str) -> Callable[[list[RuntimeEvent]], bool]:
    return lambda events: any(isinstance(e, StateChange) and e.state == state for e in events)


def final_state(events: list[RuntimeEvent]) -> StateChange:
    finals = [e for e in events if isinstance(e, StateChange) and e.state in ("stopped", "crashed")]
    assert len(finals) == 1, events
    return finals[0]


async def test_console_round_trip_stats_and_graceful_stop(
    docker_runtime: DockerRuntime, engine: Engine
) -> None:
    server_id = new_server_id()
    status = await docker_runtime.start(
        server_id, ECHO, stop_command="quit", spec=spec(engine, memory_mb=64)
    )
    assert status.state == "running"
    assert status.pid
    events = await collect_until(docker_runtime, has_line("warming"))
    assert (1, "stdout", "ready") in lines_of(events)
    assert (2, "stderr", "warming") in lines_of(events)
    assert docker_runtime.attached() == [server_id]
    with pytest.raises(ServerAlreadyRunning):
        await docker_runtime.start(server_id, ECHO, spec=spec(engine))

    await docker_runtime.send_input(server_id, "hello\n")
    events = await collect_until(docker_runtime, has_line("got hello"))
    assert lines_of(events) == [(3, "stdout", "got hello")]

    stats = await docker_runtime.stats(server_id)
    assert stats.memory_mb > 0
    assert stats.processes >= 1
    assert 0 <= stats.cpu_percent < 400

    stopped = await docker_runtime.stop(server_id, stop_timeout=10, term_timeout=5)
    assert stopped.state == "stopped"
    assert stopped.exit_code == 0
    events = await collect_until(docker_runtime, has_state("stopped"))
    assert [e.state for e in events if isinstance(e, StateChange)] == ["stopping", "stopped"]
    assert (4, "stdout", "bye") in lines_of(events)
    assert (await docker_runtime.status(server_id)).last_seq == 4
    assert docker_runtime.attached() == []
    with pytest.raises(ServerNotRunning):
        await docker_runtime.send_input(server_id, "anyone?\n")
    with pytest.raises(ServerNotRunning):
        await docker_runtime.stats(server_id)


async def test_stop_escalates_to_sigkill(docker_runtime: DockerRuntime, engine: Engine) -> None:
    server_id = new_server_id()
    # PID 1 ignoring TERM and the stop command: only SIGKILL ends it.
    await docker_runtime.start(
        server_id,
        "trap '' TERM; echo stubborn; while true; do sleep 1; done",
        stop_command="quit",
        spec=spec(engine),
    )
    await collect_until(docker_runtime, has_line("stubborn"))
    loop = asyncio.get_running_loop()
    began = loop.time()
    stopped = await docker_runtime.stop(server_id, stop_timeout=0.5, term_timeout=1)
    assert stopped.state == "stopped"
    assert stopped.exit_code == 137
    assert stopped.message is None  # asked for: not taken for an OOM kill
    assert loop.time() - began < 10


async def test_kill(docker_runtime: DockerRuntime, engine: Engine) -> None:
    server_id = new_server_id()
    await docker_runtime.start(server_id, ECHO, spec=spec(engine))
    await collect_until(docker_runtime, has_line("ready"))
    killed = await docker_runtime.kill(server_id)
    assert (killed.state, killed.exit_code) == ("stopped", 137)
    events = await collect_until(docker_runtime, has_state("stopped"))
    assert final_state(events).exit_code == 137


async def test_forget_removes_the_container_and_refuses_while_running(
    docker_runtime: DockerRuntime, engine: Engine
) -> None:
    server_id = new_server_id()
    await docker_runtime.start(server_id, ECHO, spec=spec(engine))
    await collect_until(docker_runtime, has_line("ready"))
    with pytest.raises(ServerAlreadyRunning):
        await docker_runtime.forget(server_id)
    await docker_runtime.kill(server_id)
    await collect_until(docker_runtime, has_state("stopped"))
    assert await engine.containers(f"hostplane.server={server_id}")
    await docker_runtime.forget(server_id)
    assert await engine.containers(f"hostplane.server={server_id}") == []
    assert not docker_runtime.run_dir(server_id).exists()
    assert (await docker_runtime.status(server_id)).state == "unknown"


async def test_crash_is_reported_with_exit_code(
    docker_runtime: DockerRuntime, engine: Engine
) -> None:
    server_id = new_server_id()
    await docker_runtime.start(server_id, ECHO, spec=spec(engine))
    await collect_until(docker_runtime, has_line("ready"))
    await docker_runtime.send_input(server_id, "crash\n")
    events = await collect_until(docker_runtime, has_state("crashed"))
    crash = final_state(events)
    assert (crash.state, crash.exit_code, crash.message) == ("crashed", 3, None)
    status = await docker_runtime.status(server_id)
    assert (status.state, status.exit_code) == ("crashed", 3)


async def test_out_of_memory_is_reported(data_dir: Path, engine: Engine) -> None:
    runtime = make_runtime(data_dir, engine, memory_overhead_mb=0)
    server_id = new_server_id()
    try:
        await runtime.start(
            server_id,
            "echo filling; x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived",
            spec=spec(engine, memory_mb=8),
        )
        events = await collect_until(runtime, has_state("crashed"))
        crash = final_state(events)
        assert (crash.exit_code, crash.message) == (137, "out of memory")
        assert not has_line("survived")(events)
    finally:
        await runtime.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_port_binding_is_reachable(docker_runtime: DockerRuntime, engine: Engine) -> None:
    server_id = new_server_id()
    host_port = free_port()
    await docker_runtime.start(
        server_id,
        "mkdir -p www && echo hello-from-container > www/index.html && exec httpd -f -p 8080 -h www",
        spec=spec(engine, port_bindings={8080: host_port}),
    )
    body = ""
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(50):
            try:
                body = (await client.get(f"http://127.0.0.1:{host_port}/index.html")).text
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    assert body.strip() == "hello-from-container"
    # The page was written through the bind mount into the server's data folder.
    assert (docker_runtime.server_dir(server_id) / "www" / "index.html").is_file()


async def test_limits_labels_and_mounts_in_inspect(
    docker_runtime: DockerRuntime, engine: Engine
) -> None:
    server_id = new_server_id()
    await docker_runtime.start(
        server_id,
        "exec sleep 60",
        env={"GREETING": "hi there"},
        spec=spec(
            engine,
            memory_mb=128,
            cpu_cores=1.5,
            port_bindings={25565: 30123},
            container_name=f"mc-{server_id}",
        ),
    )
    info = await engine.inspect(f"mc-{server_id}")
    host = info["HostConfig"]
    config = info["Config"]
    assert isinstance(host, dict) and isinstance(config, dict)
    assert host["Memory"] == (128 + 64) * 2**20
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 1_500_000_000 or (host["CpuQuota"], host["CpuPeriod"]) == (
        150_000,
        100_000,
    )
    assert host["PidsLimit"] == 512
    assert host["PortBindings"]["25565/tcp"][0]["HostPort"] == "30123"
    assert host["PortBindings"]["25565/udp"][0]["HostPort"] == "30123"
    assert config["Labels"]["hostplane.server"] == server_id
    assert config["Labels"]["hostplane.node"] == "node-test"
    assert config["WorkingDir"] == "/data"
    assert "GREETING=hi there" in config["Env"]
    data_dir = str(docker_runtime.server_dir(server_id))
    assert any(b.startswith(f"{data_dir}:/data") for b in host["Binds"])


async def test_agent_restart_reattaches_by_label(data_dir: Path, engine: Engine) -> None:
    server_id = new_server_id()
    first = make_runtime(data_dir, engine)
    await first.start(server_id, ECHO, stop_command="quit", spec=spec(engine))
    await collect_until(first, has_line("warming"))
    await first.send_input(server_id, "one\n")
    await collect_until(first, has_line("got one"))
    await first.close()  # the agent goes away; the container does not

    second = make_runtime(data_dir, engine)
    try:
        statuses = await second.reattach()
        assert [(s.server_id, s.state, s.last_seq) for s in statuses] == [(server_id, "running", 3)]
        assert second.attached() == [server_id]
        # Console input still reaches the same server, output continues the numbering.
        await second.send_input(server_id, "two\n")
        events = await collect_until(second, has_line("got two"))
        assert lines_of(events) == [(4, "stdout", "got two")]
        stopped = await second.stop(server_id, stop_timeout=10, term_timeout=5)
        assert (stopped.state, stopped.exit_code) == ("stopped", 0)
        events = await collect_until(second, has_state("stopped"))
        assert (5, "stdout", "bye") in lines_of(events)
    finally:
        await second.close()


async def test_exit_while_away_is_reported_once(data_dir: Path, engine: Engine) -> None:
    server_id = new_server_id()
    first = make_runtime(data_dir, engine)
    await first.start(
        server_id, "echo short-lived; sleep 1; echo last words; exit 5", spec=spec(engine)
    )
    await collect_until(first, has_line("short-lived"))
    await first.close()
    for _ in range(100):
        info = await engine.inspect(f"hostplane-{server_id}")
        if not info["State"]["Running"]:  # type: ignore[index]
            break
        await asyncio.sleep(0.1)

    second = make_runtime(data_dir, engine)
    try:
        statuses = await second.reattach()
        assert [(s.state, s.exit_code) for s in statuses] == [("crashed", 5)]
        events = await collect_until(second, has_state("crashed"))
        assert lines_of(events) == [(2, "stdout", "last words")]
        assert final_state(events).exit_code == 5
    finally:
        await second.close()
    third = make_runtime(data_dir, engine)
    try:
        await third.reattach()
        with pytest.raises(TimeoutError):
            await third.next_event(1.0)
    finally:
        await third.close()


async def test_restart_uses_the_last_start(docker_runtime: DockerRuntime, engine: Engine) -> None:
    server_id = new_server_id()
    await docker_runtime.start(
        server_id, ECHO, stop_command="quit", spec=spec(engine, memory_mb=32)
    )
    await collect_until(docker_runtime, has_line("warming"))
    restarted = await docker_runtime.restart(server_id, stop_timeout=10, term_timeout=5)
    assert restarted.state == "running"
    assert restarted.run_first_seq == 4  # ready, warming, bye, then the new run
    events = await collect_until(docker_runtime, has_line("ready"))
    assert (4, "stdout", "ready") in lines_of(events)
    info = await engine.inspect(f"hostplane-{server_id}")
    assert info["HostConfig"]["Memory"] == (32 + 64) * 2**20  # type: ignore[index]


async def test_install_streams_output_and_writes_files(
    docker_runtime: DockerRuntime, engine: Engine
) -> None:
    server_id = new_server_id()
    script = (
        "echo installing into $PWD\n"
        'echo "$GAME_VERSION" > /mnt/server/version.txt\n'
        "echo seen-from-data >&2\n"
        "ls /data\n"
    )
    batches = [
        batch
        async for batch in docker_runtime.install(
            server_id, script, env={"GAME_VERSION": "1.2.3"}, spec=spec(engine)
        )
    ]
    assert all(batch.seq is None for batch in batches)
    lines = [line for batch in batches for line in batch.lines]
    assert lines[0] == f"[hostplane] running the install script in {engine.image}"
    # stdout and stderr are kept apart; their relative order is the engine's.
    assert sorted(lines[1:]) == ["installing into /mnt/server", "seen-from-data", "version.txt"]
    assert (docker_runtime.server_dir(server_id) / "version.txt").read_text() == "1.2.3\n"
    assert await engine.containers() == []  # the install container is gone


async def test_install_failure_raises(docker_runtime: DockerRuntime, engine: Engine) -> None:
    server_id = new_server_id()
    seen: list[str] = []
    with pytest.raises(InstallFailed) as failure:
        async for batch in docker_runtime.install(
            server_id, "echo about to fail\nexit 4\n", spec=spec(engine)
        ):
            seen += batch.lines
    assert failure.value.exit_code == 4
    assert seen[1:] == ["about to fail"]
    assert await engine.containers() == []


async def test_absent_image_is_a_clear_error(docker_runtime: DockerRuntime, engine: Engine) -> None:
    server_id = new_server_id()
    absent = LaunchSpec(image="localhost/hostplane-absent:latest")
    seen: list[str] = []
    with pytest.raises(InstallImageUnavailable) as install_error:
        async for batch in docker_runtime.install(server_id, "true\n", spec=absent):
            seen += batch.lines
    # The install console shows the pull being tried; no script ran.
    assert seen[0] == "[hostplane] pulling image localhost/hostplane-absent:latest"
    assert not any("install script" in line for line in seen)
    with pytest.raises(ImageUnavailable) as start_error:
        await docker_runtime.start(server_id, "true", spec=absent)
    for error in (install_error.value, start_error.value):
        message = str(error)
        assert (
            message
            == "image localhost/hostplane-absent:latest is not on this node and could not be pulled"
        )
        assert str(docker_runtime.data_dir) not in message


def test_pull_reports_become_one_line_per_layer_and_status() -> None:
    assert (
        pull_status_line({"status": "Pulling fs layer", "id": "a1b2"}) == "a1b2: Pulling fs layer"
    )
    assert pull_status_line({"status": "Trying to pull docker.io/library/busybox"}) == (
        "Trying to pull docker.io/library/busybox"
    )
    assert pull_status_line({"progressDetail": {"current": 1}}) is None


def status_fields(lines: list[str]) -> dict[str, str]:
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields[key.strip()] = " ".join(value.split())
    return fields


async def test_containers_run_as_the_server_uid_with_no_capability(
    docker_runtime: DockerRuntime, engine: Engine
) -> None:
    server_id = new_server_id()
    folder = docker_runtime.server_dir(server_id)
    folder.mkdir(parents=True)
    # Written by the agent (root), as the file manager would.
    (folder / "server.properties").write_text("motd=panel\n")
    await docker_runtime.start(
        server_id,
        "cat /proc/self/status; echo motd=mine >> server.properties && echo wrote;"
        " touch /etc/planted 2>/dev/null || echo image-read-only; sleep 30",
        spec=spec(engine),
    )
    events = await collect_until(docker_runtime, has_line("image-read-only"))
    lines = [line for _, _, line in lines_of(events)]
    fields = status_fields(lines)
    uid = fields["Uid"].split()[0]
    assert uid != "0" and set(fields["Uid"].split()) == {uid}, fields
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert fields[cap] == "0000000000000000", (cap, fields)
    assert fields["NoNewPrivs"] == "1"
    assert "wrote" in lines
    assert (folder / "server.properties").read_text() == "motd=panel\nmotd=mine\n"
    assert folder.stat().st_uid == int(uid)

    record = docker_runtime._record(server_id)
    assert record is not None
    inspected = await docker_runtime.engine.inspect(str(record["containerId"]))
    assert inspected is not None
    host = inspected["HostConfig"]
    assert host["Privileged"] is False
    assert host["SecurityOpt"] == ["no-new-privileges"]
    # Podman reports "ALL" as the list of the capabilities it dropped.
    assert host["CapDrop"] == ["ALL"] or {"CHOWN", "DAC_OVERRIDE", "SETUID", "SYS_CHROOT"} <= {
        cap.removeprefix("CAP_") for cap in host["CapDrop"]
    }
    assert not host.get("CapAdd")
    assert host["ReadonlyRootfs"] is True
    assert inspected["Config"]["User"] == f"{uid}:{uid}"
    await docker_runtime.kill(server_id)


async def test_the_install_container_has_no_root_and_no_capability(
    docker_runtime: DockerRuntime, engine: Engine
) -> None:
    server_id = new_server_id()
    lines = [
        line
        async for batch in docker_runtime.install(
            server_id,
            "grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs):' /proc/self/status\n",
            spec=spec(engine),
        )
        for line in batch.lines
    ]
    fields = status_fields(lines[1:])
    assert fields["Uid"].split()[0] != "0", lines
    assert fields["CapEff"] == fields["CapBnd"] == "0000000000000000", lines
    assert fields["NoNewPrivs"] == "1", lines
