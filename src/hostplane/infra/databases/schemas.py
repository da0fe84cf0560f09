from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, SecretStr

from hostplane.core.schemas import ApiInput, ApiModel

Engine = Literal["mariadb", "mysql", "postgresql"]

# What a customer may call a database; the panel prefixes it per server.
NAME_PATTERN = r"^[a-z0-9_]{1,48}$"
_HOSTNAME = r"^[A-Za-z0-9]([A-Za-z0-9.:_-]{0,252}[A-Za-z0-9])?$"
_ACCOUNT_HOST = r"^[A-Za-z0-9.%_:-]{1,255}$"


class DatabaseHostOut(ApiModel):
    """A database host; its administrative password is never returned."""

    id: str
    name: str
    engine: str
    host: str
    port: int
    public_host: str | None
    username: str
    remote_pattern: str
    max_databases: int | None
    node_ids: list[str]
    location_ids: list[str]
    database_count: int = 0
    created_at: datetime
    updated_at: datetime


class DatabaseHostCreate(ApiInput):
    name: str = Field(min_length=1, max_length=100)
    engine: Engine
    host: str = Field(pattern=_HOSTNAME)
    port: int | None = Field(default=None, ge=1, le=65535, description="Defaults per engine.")
    public_host: str | None = Field(default=None, pattern=_HOSTNAME)
    username: str = Field(min_length=1, max_length=100)
    password: SecretStr = Field(max_length=1000)
    remote_pattern: str = Field(
        default="%",
        pattern=_ACCOUNT_HOST,
        description="MariaDB/MySQL: where created users may connect from ('%' = anywhere).",
    )
    max_databases: int | None = Field(default=None, ge=0, le=1_000_000)
    node_ids: list[str] = Field(default_factory=list, max_length=1000)
    location_ids: list[str] = Field(default_factory=list, max_length=1000)


class DatabaseHostUpdate(ApiInput):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    host: str | None = Field(default=None, pattern=_HOSTNAME)
    port: int | None = Field(default=None, ge=1, le=65535)
    public_host: str | None = Field(default=None, pattern=_HOSTNAME)
    username: str | None = Field(default=None, min_length=1, max_length=100)
    password: SecretStr | None = Field(default=None, max_length=1000)
    remote_pattern: str | None = Field(default=None, pattern=_ACCOUNT_HOST)
    max_databases: int | None = Field(default=None, ge=0, le=1_000_000)
    node_ids: list[str] | None = Field(default=None, max_length=1000)
    location_ids: list[str] | None = Field(default=None, max_length=1000)


class DatabaseOut(ApiModel):
    """Catalyst's database: where to connect and with what."""

    id: str
    name: str
    username: str
    password: str
    host: str
    port: int
    host_id: str
    host_name: str
    created_at: datetime


class DatabaseCreate(ApiInput):
    host_id: str = Field(min_length=1, max_length=64)
    name: str = Field(
        min_length=1,
        max_length=48,
        description="Lowercase letters, digits and underscores; stored as s{server}_{name}.",
    )
