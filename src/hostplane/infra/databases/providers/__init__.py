"""Database engines by kind: ``{engine: adapter class}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from hostplane.infra.databases.providers.base import DatabaseEngine, HostAccess
from hostplane.infra.databases.providers.mariadb import MariaDbEngine
from hostplane.infra.databases.providers.postgresql import PostgresEngine

ENGINES: Final[dict[str, Callable[[HostAccess], DatabaseEngine]]] = {
    "mariadb": MariaDbEngine,
    "mysql": MariaDbEngine,
    "postgresql": PostgresEngine,
}


def engine_for(kind: str, access: HostAccess) -> DatabaseEngine:
    return ENGINES[kind](access)
