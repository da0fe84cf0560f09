"""The authorization matrix: every route, every kind of caller, the status each must get.

A :class:`World` holds real callers (logged in through the API, an API key
minted through the API) and the resources routes point at. A route is one
:func:`case` line; ``{name}`` placeholders in its path are filled from the
world. Names starting with ``fresh_`` make a new resource for every caller,
so a destructive route (ban, delete) sees an untouched target each time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PRINCIPALS = (
    "anonymous",
    "owner",
    "other_user",
    "api_key",
    "admin",
    "foreign",
    "admin_read",
    "admin_write",
    "admin_access",
)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    expected: dict[str, int]
    body: Any = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def case(
    method: str,
    path: str,
    *,
    anonymous: int = 401,
    owner: int,
    other_user: int,
    api_key: int,
    admin: int,
    foreign: int,
    admin_read: int | None = None,
    admin_write: int | None = None,
    admin_access: int | None = None,
    body: Any = None,
) -> Case:
    """One route of the matrix. ``owner`` is the caller who owns the resource in the path.

    ``admin_read``, ``admin_write`` and ``admin_access`` are customers whose only
    extra role holds that one permission; where a line leaves them out they
    must be answered like ``other_user`` (the permission opens nothing there).
    """
    return Case(
        method,
        path,
        {
            "anonymous": anonymous,
            "owner": owner,
            "other_user": other_user,
            "api_key": api_key,
            "admin": admin,
            "foreign": foreign,
            "admin_read": other_user if admin_read is None else admin_read,
            "admin_write": other_user if admin_write is None else admin_write,
            "admin_access": other_user if admin_access is None else admin_access,
        },
        body,
    )


@dataclass
class World:
    tokens: dict[str, str | None]
    ids: dict[str, str] = field(default_factory=dict)
    makers: dict[str, Callable[[], Awaitable[str]]] = field(default_factory=dict)

    async def resolve(self, path: str) -> str:
        names = _PLACEHOLDER.findall(path)
        values = {}
        for name in names:
            if name.startswith("fresh_"):
                values[name] = await self.makers[name]()
            else:
                values[name] = self.ids[name]
        return path.format(**values)

    def headers(self, principal: str) -> dict[str, str]:
        token = self.tokens[principal]
        return {"Authorization": f"Bearer {token}"} if token else {}


async def _resolve_body(world: World, body: Any) -> Any:
    if isinstance(body, dict):
        return {key: await _resolve_body(world, value) for key, value in body.items()}
    if isinstance(body, str) and _PLACEHOLDER.fullmatch(body):
        return await world.resolve(body)
    return body


async def run_case(client: httpx.AsyncClient, world: World, test_case: Case) -> list[str]:
    """Every caller's status for one route; the mismatches, as readable lines."""
    mismatches = []
    for principal in PRINCIPALS:
        path = await world.resolve(test_case.path)
        body = await _resolve_body(world, test_case.body)
        response = await client.request(
            test_case.method, path, json=body, headers=world.headers(principal)
        )
        wanted = test_case.expected[principal]
        if response.status_code != wanted:
            mismatches.append(
                f"{principal}: {test_case.method} {path} -> {response.status_code}, expected {wanted}: {response.text[:200]}"
            )
        elif response.status_code >= 400 and response.json().get("success") is not False:
            mismatches.append(
                f"{principal}: {test_case.method} {path} -> error without the envelope"
            )
    return mismatches
