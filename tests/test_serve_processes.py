"""``hostplane serve --workers N``: N server processes on one port, stopped together."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from hostplane.core.ids import new_id
from tests.conftest import TEST_SECRET
from tests.support.processes import base_env, free_port, hostplane_command, hostplane_process
from tests.support.services import REDIS_URL


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _serve(tmp_path: Path, port: int):  # type: ignore[no-untyped-def]
    # Several processes share agents' sockets and events through Redis.
    namespace = f"serve{new_id()[-8:]}"
    env = base_env(
        HOSTPLANE_SECRET_KEY=TEST_SECRET,
        HOSTPLANE_REDIS_URL=REDIS_URL,
        HOSTPLANE_EVENT_CHANNEL_PREFIX=namespace,
        HOSTPLANE_RATE_LIMITS__KEY_PREFIX=f"{namespace}:ratelimit",
    )
    migrated = subprocess.run(
        hostplane_command("migrate", "--data-dir", str(tmp_path)),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    return hostplane_process(
        ["serve", "--data-dir", str(tmp_path), "--port", str(port), "--workers", "2"],
        port=port,
        log_path=tmp_path / "serve.log",
        env=env,
    )


def test_two_processes_answer_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    port = free_port()
    with _serve(tmp_path, port) as running:
        children = _children(running.process.pid)
        assert len(children) == 2
        # Each child holds the listening socket and answers on its own: many
        # concurrent connections are spread over both.
        with httpx.Client(base_url=running.base_url, timeout=10) as client:
            for _ in range(20):
                assert client.get("/health").status_code == 200
        assert all(_alive(child) for child in children)
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(30) == 0, running.output()
        deadline = time.monotonic() + 10
        while any(_alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(child) for child in children)


def test_a_dying_process_stops_the_others_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    with _serve(tmp_path, port) as running:
        first, second = sorted(_children(running.process.pid))
        os.kill(first, signal.SIGKILL)
        assert running.process.wait(30) != 0
        deadline = time.monotonic() + 10
        while _alive(second) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(second)
        errors = [line for line in running.output().splitlines() if "hostplane: error" in line]
        assert errors == [
            f"hostplane: error: server process {first} was killed by SIGKILL; stopped the others"
        ], running.output()
        assert "Traceback" not in running.output()


def test_several_processes_without_redis_are_refused_with_one_line(tmp_path: Path) -> None:
    """In-memory buses are per process: an agent on one would be out of the others' reach."""
    done = subprocess.run(
        hostplane_command(
            "serve", "--data-dir", str(tmp_path), "--port", str(free_port()), "--workers", "2"
        ),
        env=base_env(HOSTPLANE_SECRET_KEY=TEST_SECRET),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "hostplane: error: --workers above 1 needs redis_url (HOSTPLANE_REDIS_URL)"
    ], done.stderr
