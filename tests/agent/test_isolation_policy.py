"""Sandboxing is on by default; servers run without it only when explicitly allowed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hostplane.agent.config import AgentSettings
from hostplane.agent.isolation import policy, startup_notice
from hostplane.agent.main import build_runtime
from hostplane.agent.runtime import ProcessRuntime, SandboxUnavailable
from tests.agent.conftest import HAS_BWRAP

needs_root_and_bwrap = pytest.mark.skipif(
    os.geteuid() != 0 or not HAS_BWRAP, reason="checks a root agent with bubblewrap"
)


@pytest.fixture
def no_bwrap_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH with setpriv but no bwrap: a node where bubblewrap is not installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    (bin_dir / "setpriv").symlink_to(setpriv)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.fixture(autouse=True)
def _no_agent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HOSTPLANE_AGENT_"):
            monkeypatch.delenv(key)


@needs_root_and_bwrap
def test_by_default_servers_run_sandboxed_as_their_own_uid(tmp_path: Path) -> None:
    settings = AgentSettings.load(None, data_dir=tmp_path)
    assert settings.sandbox is True
    assert settings.allow_unsandboxed is False
    isolation = policy(settings)
    assert isolation.sandbox is True
    assert isolation.refusal is None and isolation.warning is None
    assert isolation.summary.startswith(
        "servers run: bubblewrap sandbox, as uids 200000-299999 (one per server), no capabilities"
    )
    runtime = build_runtime(settings)
    assert isinstance(runtime, ProcessRuntime)
    assert runtime.sandbox is True and runtime.uids is not None and runtime.refusal is None


@needs_root_and_bwrap
async def test_turning_the_sandbox_off_alone_starts_no_server(tmp_path: Path) -> None:
    settings = AgentSettings.load(None, data_dir=tmp_path, sandbox=False)
    isolation = policy(settings)
    assert isolation.refusal is not None
    assert isolation.warning is not None
    assert "HOSTPLANE_AGENT__ALLOW_UNSANDBOXED=true" in isolation.summary
    runtime = build_runtime(settings)
    assert isinstance(runtime, ProcessRuntime)
    with pytest.raises(SandboxUnavailable) as refused:
        await runtime.start("srv", "true")
    assert str(tmp_path) not in str(refused.value)
    assert refused.value.code == "SANDBOX_UNAVAILABLE"
    assert not runtime.server_dir("srv").exists()
    with pytest.raises(SandboxUnavailable):
        async for _ in runtime.install("srv", "true"):
            pass
    await runtime.close()


@needs_root_and_bwrap
def test_running_unsandboxed_needs_the_explicit_setting_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTPLANE_AGENT_SANDBOX", "false")
    monkeypatch.setenv("HOSTPLANE_AGENT_ALLOW_UNSANDBOXED", "true")
    settings = AgentSettings.load(None, data_dir=tmp_path)
    isolation = policy(settings)
    assert isolation.sandbox is False
    assert isolation.refusal is None
    assert isolation.warning is not None and "without a sandbox" in isolation.warning
    assert isolation.summary.startswith("servers run: WITHOUT a sandbox")
    assert "no capabilities" in isolation.summary


@needs_root_and_bwrap
@pytest.mark.usefixtures("no_bwrap_path")
def test_without_bubblewrap_installed_servers_need_the_opt_out(tmp_path: Path) -> None:
    refused = policy(AgentSettings.load(None, data_dir=tmp_path))
    assert refused.refusal is not None
    assert refused.warning is not None and "bubblewrap" in refused.warning
    allowed = policy(AgentSettings.load(None, data_dir=tmp_path, allow_unsandboxed=True))
    assert allowed.refusal is None and allowed.sandbox is False
    assert allowed.warning is not None


def test_startup_notice_reads_the_agent_config_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path}"\nsandbox = false\n')
    lines = startup_notice(config)
    assert lines[0].startswith("servers run: ")
    assert lines[-1].startswith("WARNING: ")


def test_the_docker_runtime_is_described_as_containers(tmp_path: Path) -> None:
    settings = AgentSettings.load(
        None, data_dir=tmp_path, runtime="docker", docker_host="unix:///run/engine.sock"
    )
    summary = policy(settings).summary
    assert summary.startswith("servers run: containers (engine at unix:///run/engine.sock)")
    assert "no capabilities" in summary
