"""Starting real hostplane processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hostplane_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hostplane", *args]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTPLANE_")}
    env.update(extra)
    return env


@dataclass
class RunningProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_health(
    base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(
        f"no answer on {base_url}/health within {timeout} s:\n{log_path.read_text(errors='replace')}"
    )


REPOSITORY = Path(__file__).resolve().parents[2]


def up_script_command(*args: str) -> list[str]:
    """README command 1 itself: ``scripts/up.sh ARGS``."""
    return ["bash", str(REPOSITORY / "scripts" / "up.sh"), *args]


@contextmanager
def hostplane_process(
    args: list[str],
    *,
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    command: list[str] | None = None,
) -> Iterator[RunningProcess]:
    """Run ``hostplane ARGS`` (or ``command``) until the block ends; wait for ``/health`` first."""
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command or hostplane_command(*args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env or base_env()),
            start_new_session=True,
        )
    try:
        if wait:
            wait_for_health(base_url, process, log_path)
        yield RunningProcess(process, log_path, base_url)
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def agent_pids(config_under: Path) -> list[int]:
    """The ``hostplane agent`` processes whose ``--config`` lies in (or is) ``config_under``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [part.decode(errors="replace") for part in argv]
        if "agent" in words and any(str(config_under) in word for word in words):
            found.append(int(entry.name))
    return found
