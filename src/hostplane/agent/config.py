"""The agent's own settings (it does not load the panel's).

Read from keyword arguments, then ``HOSTPLANE_AGENT__*`` environment
variables, then a TOML file (``AgentSettings.load(path)``)::

    panel_url = "wss://panel.example.com/ws"
    node_id = "01j..."
    token = "..."
    data_dir = "/var/lib/hostplane-agent"
    sandbox = true            # bubblewrap (the default)
    runtime = "docker"        # or "process" (the default)
    docker_host = "unix:///run/podman/podman.sock"
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_UID_BASE = 200_000
"""Above the 100000-165535 that ``/etc/subuid`` usually gives its first user."""
DEFAULT_UID_COUNT = 100_000


def _default_docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def split_host_port(value: str) -> tuple[str, int]:
    """``"0.0.0.0:2022"`` / ``"[::1]:8081"`` -> host (without brackets) and port."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


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
        default=True,
        description="Run servers under bubblewrap (it must be installed: without it, "
        "servers start only with `allow_unsandboxed`).",
    )
    allow_unsandboxed: bool = Field(
        default=False,
        description="Let servers run without the bubblewrap sandbox (when `sandbox` is "
        "false or `bwrap` is missing). They still run as their own uid with no "
        "capabilities when the agent is root, but see the node's files and processes.",
    )
    server_uid_base: int = Field(
        default=DEFAULT_UID_BASE,
        ge=1000,
        description="First host uid (and gid) given to servers when the agent runs as root; "
        "each server gets its own.",
    )
    server_uid_count: int = Field(
        default=DEFAULT_UID_COUNT,
        ge=1,
        description="How many uids from `server_uid_base` servers use.",
    )
    sandbox_network: Literal["host", "none"] = Field(
        default="host",
        description="`host`: sandboxed servers share the node's network (they listen on "
        "its ports); `none`: a network namespace of their own with loopback only.",
    )
    runtime: Literal["process", "docker"] = Field(
        default="process",
        description="`process`: supervised processes (optionally bubblewrap); "
        "`docker`: one container per server through the Docker Engine API.",
    )
    docker_host: str = Field(
        default_factory=_default_docker_host,
        description="The engine's API (Docker or `podman system service`); default "
        "`DOCKER_HOST`, else `unix:///var/run/docker.sock`.",
    )
    docker_api_version: str = Field(
        default="v1.41", description="The pinned Engine API version, with the `v`."
    )
    docker_memory_overhead_mb: int = Field(
        default=64,
        ge=0,
        description="Added to a server's memory allocation for its container's limit.",
    )
    docker_pids_limit: int = Field(
        default=512, ge=0, description="Processes per container (0: no limit)."
    )
    docker_bind_address: str = Field(
        default="0.0.0.0",  # noqa: S104 - game ports are public by design
        description="The host address servers' ports are published on.",
    )
    docker_network_mode: str = Field(
        default="bridge", description="The network servers' containers join."
    )
    docker_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels on every container (JSON in the environment).",
    )
    docker_userns_mode: str = Field(
        default="",
        description="`UsernsMode` of servers' containers (Podman: `auto`, `keep-id`, "
        "`private`; Docker: `host` when its daemon remaps); empty: the engine's default.",
    )
    docker_readonly_rootfs: bool = Field(
        default=True,
        description="Servers' containers get a read-only image file system (with a tmpfs "
        "`/tmp`); their data folder stays writable.",
    )
    heartbeat_interval: float = 30.0
    health_interval: float = 30.0
    stats_interval: float = 5.0
    stop_timeout: float = 30.0
    term_timeout: float = 10.0
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    handshake_timeout: float = 10.0
    # Files, archives and backups (limits protect the node's disk and memory).
    archive_max_bytes: int = Field(
        default=20 * 2**30, description="Most bytes one decompress or restore may write."
    )
    archive_max_files: int = Field(
        default=200_000, description="Most entries one decompress or restore may create."
    )
    pull_max_bytes: int = Field(
        default=4 * 2**30, description="Largest file a pull-from-URL may download."
    )
    pull_timeout: float = Field(default=600.0, description="Deadline of one pull-from-URL.")
    backup_compression_level: int = Field(default=1, ge=1, le=19)
    # Direct node-to-node transfers (the panel relays when these are unset).
    transfer_listen: str = Field(
        default="",
        description="`host:port` the peer listener binds, where other nodes push "
        "servers moving here; empty: no listener, transfers are relayed by the panel.",
    )
    transfer_url: str = Field(
        default="",
        description="The listener's address as other nodes reach it "
        "(`wss://node-2.example.com:8081/transfers`); default: built from "
        "`transfer_listen` (and the machine's name when it binds every address).",
    )
    transfer_tls_cert: Path | None = Field(
        default=None, description="Certificate (PEM) of the peer listener: it then speaks wss."
    )
    transfer_tls_key: Path | None = Field(
        default=None, description="Private key (PEM) of `transfer_tls_cert`."
    )
    transfer_ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that other nodes' listener certificates are checked "
        "against, when pushing to them; default: the system's.",
    )

    # SFTP access to the servers' files (logins are checked by the panel).
    sftp_listen: str = Field(
        default="",
        description="`host:port` the SFTP server binds (Catalyst's port is 2022); "
        "empty: no SFTP. Its host key is made once and kept in `<data_dir>/sftp/host_key`.",
    )

    @field_validator("transfer_listen", "sftp_listen")
    @classmethod
    def _host_and_port(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        _, separator, port = value.rpartition(":")
        if not separator or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{info.field_name} is host:port, e.g. 0.0.0.0:8081")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # ``HOSTPLANE_AGENT__<KEY>`` is the product's one naming scheme
        # (``HOSTPLANE_<SECTION>__<KEY>``); the older ``HOSTPLANE_AGENT_<KEY>``
        # is still read, after it, so existing node configurations keep working.
        sectioned = EnvSettingsSource(settings_cls, env_prefix="HOSTPLANE_AGENT__")
        sources: list[PydanticBaseSettingsSource] = [init_settings, sectioned, env_settings]
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
