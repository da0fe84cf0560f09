"""Fixtures for the agent: a short data folder, runtimes, and cleanup of
every supervisor and server a test started (by process group)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from hostplane.agent.runtime import ProcessRuntime, RuntimeEvent
from hostplane.agent.runtimes import ServerRuntime
from tests.support.services import missing_service

HAS_BWRAP = shutil.which("bwrap") is not None


def kill_everything_under(data_dir: Path) -> None:
    run_root = data_dir / "run"
    if not run_root.is_dir():
        return
    for run_dir in run_root.iterdir():
        state_file = run_dir / "state.json"
        pid_file = run_dir / "supervisor.pid"
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            if state.get("pid"):
                os.killpg(int(state["pid"]), signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short on purpose: UNIX socket paths are limited to 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="hpa-", dir="/tmp"))
    try:
        yield folder
    finally:
        kill_everything_under(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def long_data_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / ("x" * 60) / "agent-data"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        kill_everything_under(folder)


@pytest.fixture(
    params=[
        pytest.param(False, id="plain"),
        pytest.param(True, id="bwrap"),
    ]
)
def sandbox(request: pytest.FixtureRequest) -> bool:
    if request.param and not HAS_BWRAP:
        # Skips locally; fails under CI, where the test command installs it.
        missing_service("bubblewrap", "bwrap is not on PATH")
    return bool(request.param)


@pytest.fixture
def python(sandbox: bool) -> str:
    """A Python the server can run: inside the sandbox only /usr is visible."""
    # The system one: servers run as their own uid, which cannot reach
    # a Python installed under /root.
    return "/usr/bin/python3"


@pytest.fixture
async def runtime(data_dir: Path, sandbox: bool) -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime(data_dir, sandbox=sandbox)
    try:
        yield rt
    finally:
        await rt.close()


async def collect_until(
    runtime: ServerRuntime,
    done: Callable[[list[RuntimeEvent]], bool],
    *,
    within: float = 10.0,
) -> list[RuntimeEvent]:
    """Events until ``done(events)`` is true; fails the test after ``within`` seconds."""
    events: list[RuntimeEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not done(events):
        remaining = deadline - loop.time()
        if remaining <= 0:
            pytest.fail(f"timed out; events so far: {events!r}")
        with contextlib.suppress(TimeoutError):
            events.append(await runtime.next_event(min(remaining, 0.5)))
    return events
