"""Configuration: ``HOSTPLANE_*`` environment variables over an optional TOML file.

Precedence, highest first: values passed in code (the CLI's flags), environment
variables, the TOML file, defaults. The TOML file is ``$HOSTPLANE_CONFIG`` or
``<data dir>/hostplane.toml`` when it exists. Nested groups use ``__`` in
environment variables (``HOSTPLANE_JOBS__MAX_ATTEMPTS=3``) and tables in TOML
(``[jobs]``).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Environment = Literal["development", "test", "production"]

# Values that mean "nobody set this". Refused outside development.
PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "changeme", "secret", "dev-secret", "please-change"}
)
MIN_SECRET_LENGTH = 32

_toml_file: ContextVar[Path | None] = ContextVar("hostplane_toml_file", default=None)


def default_data_dir() -> Path:
    """Where the embedded default keeps its database and files."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "hostplane"


class JobSettings(BaseModel):
    """The durable job queue and its workers."""

    poll_interval_seconds: float = Field(default=0.5, gt=0)
    concurrency: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_base_seconds: float = Field(default=2.0, ge=0)
    backoff_max_seconds: float = Field(default=3600.0, ge=0)
    # A claimed job whose worker vanished becomes claimable again after this.
    lease_seconds: float = Field(default=300.0, gt=0)


class Settings(BaseSettings):
    """Every setting hostplane reads. Nothing else calls ``os.getenv``."""

    model_config = SettingsConfigDict(
        env_prefix="HOSTPLANE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    environment: Environment = "production"
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    database_echo: bool = False
    redis_url: str | None = None
    secret_key: SecretStr = SecretStr("change-me")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    cors_origins: list[str] = Field(default_factory=list)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"

    event_channel_prefix: str = "hostplane"
    jobs: JobSettings = Field(default_factory=JobSettings)

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

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # Accept the URLs operators already have and pick the async driver.
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @model_validator(mode="after")
    def _defaults_and_safety(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'hostplane.db'}"
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        secret = self.secret_key.get_secret_value()
        if self.environment != "development" and (
            secret.lower() in PLACEHOLDER_SECRETS or len(secret) < MIN_SECRET_LENGTH
        ):
            raise ValueError(
                "secret_key is a placeholder or shorter than "
                f"{MIN_SECRET_LENGTH} characters; set HOSTPLANE_SECRET_KEY "
                "(or run `hostplane up` once, which writes one to the data folder)"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        if self.log_format != "auto":
            return self.log_format
        return "console" if self.environment == "development" else "json"


def config_file_for(data_dir: Path | None) -> Path | None:
    """The TOML file to read, if any: ``$HOSTPLANE_CONFIG`` or the data folder's."""
    explicit = os.environ.get("HOSTPLANE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"HOSTPLANE_CONFIG points to {path}, which is not a file")
        return path
    folder = data_dir or Path(os.environ.get("HOSTPLANE_DATA_DIR") or default_data_dir())
    candidate = folder / "hostplane.toml"
    return candidate if candidate.is_file() else None


def load_settings(*, data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings the way every command does.

    ``overrides`` are values that beat the environment and the file (the CLI's
    flags); ``None`` values are ignored so an absent flag changes nothing.
    """
    explicit = {key: value for key, value in overrides.items() if value is not None}
    if data_dir is not None:
        explicit["data_dir"] = data_dir
    token = _toml_file.set(config_file_for(data_dir))
    try:
        return Settings(**explicit)
    finally:
        _toml_file.reset(token)


def redact_url(url: str) -> str:
    """A database or Redis URL without its password, safe to print."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"
