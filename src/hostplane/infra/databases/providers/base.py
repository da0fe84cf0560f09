"""What a database engine must do for the panel, and the errors it may raise.

Every adapter translates its driver's exceptions into the three errors below
at its boundary: no driver exception escapes, so the service and the HTTP
layer see one vocabulary whatever the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from hostplane.core.errors import Conflict, ProviderUnavailable, ValidationFailed

# Identifiers are validated before they reach an adapter, so quoting them is
# a second line of defence, not the only one.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class HostUnavailable(ProviderUnavailable):
    """The host cannot be reached now (refused, timed out, gone): 503, try later."""

    code = "DATABASE_HOST_UNAVAILABLE"


class HostRejected(ValidationFailed):
    """The host answered but refused the panel's credentials or lacks a privilege: 400."""

    code = "DATABASE_HOST_REJECTED"


class AlreadyOnHost(Conflict):
    """The database or the user already exists on the host: 409."""

    code = "CONFLICT"


@dataclass(frozen=True, slots=True)
class HostAccess:
    """How the panel reaches one host as its administrative user."""

    host: str
    port: int
    username: str
    password: str
    # MariaDB/MySQL: the host part of created accounts ('%' = from anywhere).
    remote_pattern: str = "%"
    # Connect and per-statement timeout, seconds.
    timeout: float = 5.0


class DatabaseEngine(Protocol):
    """One database server the panel creates databases and users on.

    Every method raises :class:`HostUnavailable` when the host cannot be
    reached in ``HostAccess.timeout`` and :class:`HostRejected` when it
    refuses the administrative credentials or a statement for lack of a
    privilege.
    """

    async def validate(self) -> None:
        """Connect and check the administrative user can create databases and users."""

    async def create(self, *, database: str, username: str, password: str) -> None:
        """Create ``database`` and a user who may use that database only.

        Raises :class:`AlreadyOnHost` when either exists; leaves nothing
        behind when it fails half-way.
        """

    async def rotate(self, *, username: str, password: str) -> None:
        """Set a new password and end the user's open sessions."""

    async def drop(self, *, database: str, username: str) -> None:
        """End the user's sessions, drop the database and the user; missing ones are fine."""

    async def exists(self, *, database: str) -> bool:
        """Whether ``database`` exists on the host."""


def check_identifier(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(f"not a safe identifier: {name!r}")
    return name
