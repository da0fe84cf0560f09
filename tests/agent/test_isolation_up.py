"""``hostplane up`` says how servers are isolated, and warns when they are not."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.agent.conftest import HAS_BWRAP
from tests.support.processes import base_env, free_port, hostplane_process

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not HAS_BWRAP, reason="checks a root node with bubblewrap"
)


def up_output(tmp_path: Path, *, agent_says: str | None = None, **env: str) -> str:
    """What ``up`` printed; with ``agent_says``, once its agent has logged that."""
    port = free_port()
    data = tmp_path / "data"
    with hostplane_process(
        ["up", "--data-dir", str(data), "--port", str(port)],
        port=port,
        log_path=tmp_path / "up.log",
        env=base_env(**env),
    ) as panel:
        deadline = time.monotonic() + 30
        agent_log = data / "agent.log"
        while agent_says is not None and agent_says not in agent_log.read_text():
            assert time.monotonic() < deadline, agent_log.read_text()
            time.sleep(0.1)
        return panel.output()


def test_up_prints_the_sandbox_servers_run_in(tmp_path: Path) -> None:
    output = up_output(tmp_path)
    assert (
        "  servers run: bubblewrap sandbox, as uids 200000-299999 (one per server), no capabilities"
    ) in output
    assert "WARNING" not in output


def test_up_warns_when_servers_would_run_without_a_sandbox(tmp_path: Path) -> None:
    output = up_output(
        tmp_path, agent_says="servers will not start", HOSTPLANE_AGENT_SANDBOX="false"
    )
    assert "  servers run: nowhere - the sandbox setting is false" in output
    assert "  WARNING: servers will not start" in output
    assert "HOSTPLANE_AGENT__ALLOW_UNSANDBOXED=true" in output


def test_up_warns_when_servers_run_without_a_sandbox_by_choice(tmp_path: Path) -> None:
    output = up_output(
        tmp_path, HOSTPLANE_AGENT_SANDBOX="false", HOSTPLANE_AGENT_ALLOW_UNSANDBOXED="true"
    )
    assert "  servers run: WITHOUT a sandbox (the sandbox setting is false)" in output
    assert "  WARNING: servers run without a sandbox" in output
