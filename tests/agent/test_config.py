from __future__ import annotations

from pathlib import Path

import pytest

from hostplane.agent.config import AgentSettings


def test_settings_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'panel_url = "wss://panel.example/ws"\nnode_id = "n1"\ntoken = "secret"\n'
        f'data_dir = "{tmp_path}"\nsandbox = true\nheartbeat_interval = 10\n'
    )
    monkeypatch.setenv("HOSTPLANE_AGENT_NODE_ID", "from-env")
    settings = AgentSettings.load(config)
    assert settings.panel_url == "wss://panel.example/ws"
    assert settings.node_id == "from-env"
    assert settings.token.get_secret_value() == "secret"
    assert settings.data_dir == tmp_path
    assert settings.sandbox is True
    assert settings.heartbeat_interval == 10
    assert "secret" not in repr(settings)


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTPLANE_AGENT_NODE_ID", raising=False)
    settings = AgentSettings.load(None, node_id="x")
    assert settings.node_id == "x"
    assert settings.sandbox is True
    assert settings.allow_unsandboxed is False
    assert settings.heartbeat_interval == 30
