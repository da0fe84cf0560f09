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


def test_sectioned_variables_win_and_the_single_underscore_form_still_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``HOSTPLANE_AGENT__<KEY>`` is the scheme; ``HOSTPLANE_AGENT_<KEY>`` is still read."""
    monkeypatch.setenv("HOSTPLANE_AGENT__NODE_ID", "sectioned")
    monkeypatch.setenv("HOSTPLANE_AGENT_NODE_ID", "legacy")
    monkeypatch.setenv("HOSTPLANE_AGENT_TOKEN", "legacy-token")
    monkeypatch.setenv("HOSTPLANE_AGENT__SFTP_LISTEN", "127.0.0.1:2022")
    settings = AgentSettings.load()
    assert settings.node_id == "sectioned"
    assert settings.token.get_secret_value() == "legacy-token"
    assert settings.sftp_listen == "127.0.0.1:2022"
