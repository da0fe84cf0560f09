"""The agent's own settings (it does not load the panel's).

Read from keyword arguments, then ``HOSTPLANE_AGENT_*`` environment
variables, then a TOML file (``AgentSettings.load(path)``)::

    panel_url = "wss://panel.example.com/ws"
    node_id = "01j..."
    token = "..."
    data_dir = "/var/lib/hostplane-agent"
    sandbox = true
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_toml_file: ContextVar[Path | None] = ContextVar("hostplane_agent_toml", default=None)


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOSTPLANE_AGENT_", extra="forbid")

    panel_url: str = Field(
        default="ws://127.0.0.1:8000/ws", description="The panel's WebSocket endpoint."
    )
    node_id: str = ""
    token: SecretStr = SecretStr("")
    data_dir: Path = Path("/var/lib/hostplane-agent")
    sandbox: bool = Field(
        default=False,
        description="Run servers under bubblewrap when `bwrap` is on PATH.",
    )
    heartbeat_interval: float = 30.0
    health_interval: float = 30.0
    stats_interval: float = 5.0
    stop_timeout: float = 30.0
    term_timeout: float = 10.0
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    handshake_timeout: float = 10.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_file.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> AgentSettings:
        """Settings from ``overrides``, the environment and ``config_file`` (in that order)."""
        token = _toml_file.set(config_file)
        try:
            return cls(**overrides)
        finally:
            _toml_file.reset(token)
