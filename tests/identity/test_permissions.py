"""The permission catalogue and ``GET /api/permissions``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest

from hostplane.core.errors import ValidationFailed
from hostplane.core.principal import Principal
from hostplane.identity.permissions import catalogue
from hostplane.identity.permissions.catalogue import Scope, Source
from tests.conftest import ClientAs

SRC = Path(__file__).resolve().parents[2] / "src" / "hostplane"

# Strings each document writes itself (a few per document, and all of some lists).
CATALYST = [
    "server.create",
    "server.read",
    "server.update",
    "server.delete",
    "server.install",
    "server.start",
    "server.stop",
    "server.restart",
    "server.kill",
    "server.transfer",
    "server.console",
    "server.suspend",
    "server.logs.read",
    "file.read",
    "file.write",
    "file.delete",
    "backup.create",
    "backup.read",
    "backup.restore",
    "backup.delete",
    "task.create",
    "task.read",
    "task.update",
    "task.delete",
    "task.execute",
    "admin.read",
    "admin.write",
    "database.create",
    "database.read",
    "database.rotate",
    "database.delete",
    "alert.resolve",
    "rate-limit.bypass",
]
QEINTECH = [
    "server.read",
    "server.details",
    "control.power",
    "control.console",
    "file.write",
    "billing.read",
    "billing.write",
    "admin.access",
    "user.read",  # the API-key example's scope
]
PTERODACTYL = [
    "control.console",
    "control.start",
    "control.stop",
    "control.restart",
    "file.create",
    "file.read",
    "file.read-content",
    "file.update",
    "file.delete",
    "file.archive",
    "file.sftp",
    "backup.create",
    "backup.read",
    "backup.delete",
    "backup.download",
    "backup.restore",
    "allocation.read",
    "allocation.create",
    "allocation.update",
    "allocation.delete",
    "startup.read",
    "startup.update",
    "startup.docker-image",
    "database.create",
    "database.read",
    "database.update",
    "database.delete",
    "database.view_password",
    "schedule.create",
    "schedule.read",
    "schedule.update",
    "schedule.delete",
    "settings.rename",
    "settings.reinstall",
    "activity.read",
    "websocket.connect",
]
PTERODACTYL_SUBUSER_KEYS = ["user.create", "user.read", "user.update", "user.delete"]
AURA_FLAGS = [
    "canBanUsers",
    "canKickUsers",
    "canDeleteMessages",
    "canManageRooms",
    "canManageEvents",
    "canApproveGuides",
    "canApproveCashout",
]
HOSTPLANE = [
    "job.read",
    "job.retry",
    "audit.read",
    "role.read",
    "role.manage",
    "user.read",
    "user.manage",
    "user.ban",
    "api-key.read",
    "api-key.create",
    "api-key.revoke",
    "tenant.read",
    "tenant.manage",
    "node.read",
    "node.manage",
    "template.read",
    "template.manage",
    "rate-limit.bypass",
    "admin.read",
    "admin.write",
    "admin.access",
]
# Capabilities a document describes without naming a permission.
DERIVED = {
    Source.MPANEL: [
        "tenant.manage",
        "job.retry",
        "dns.manage",
        "mail.manage",
        "ssl.manage",
        "pod.manage",
        "security.approve-platform",
        "billing.write",
    ],
    Source.AURA: [
        "economy.manage",
        "cashout.approve",
        "ticket.manage",
        "guide.approve",
        "faq.manage",
        "room.kick",
    ],
    Source.SKYPANEL: ["webhook.manage", "ticket.read", "billing.read"],
}


def _sources(name: str) -> tuple[Source, ...]:
    entry = catalogue.get(name)
    assert entry is not None, name
    return entry.sources


@pytest.mark.parametrize(
    ("names", "source"),
    [(CATALYST, Source.CATALYST), (QEINTECH, Source.QEINTECH), (PTERODACTYL, Source.PTERODACTYL)],
)
def test_the_documents_strings_are_in_the_catalogue_and_credited(
    names: list[str], source: Source
) -> None:
    for name in names:
        assert catalogue.is_known(name), name
        assert source in _sources(name), name


@pytest.mark.parametrize(("source", "names"), list(DERIVED.items()))
def test_capabilities_of_the_documents_have_permissions(source: Source, names: list[str]) -> None:
    for name in names:
        assert source in _sources(name), name


def test_hostplanes_own_permissions_are_in_the_catalogue() -> None:
    assert [name for name in HOSTPLANE if not catalogue.is_known(name)] == []


def test_pterodactyl_per_server_keys_are_server_level() -> None:
    server = {permission.name for permission in catalogue.server_level()}
    assert set(PTERODACTYL) <= server
    # Pterodactyl's user.* keys manage a server's subusers; hostplane's user.read
    # is global (accounts), so those keys are spelt subuser.* and mapped.
    for key in PTERODACTYL_SUBUSER_KEYS:
        renamed = catalogue.PTERODACTYL_RENAMED[key]
        assert renamed == key.replace("user.", "subuser.")
        entry = catalogue.get(renamed)
        assert entry is not None and entry.scope is Scope.SERVER and entry.pterodactyl_key == key
    assert catalogue.get("user.read") is not None
    assert catalogue.get("user.read").scope is Scope.GLOBAL  # type: ignore[union-attr]


def test_every_aura_flag_maps_to_a_permission() -> None:
    assert sorted(catalogue.AURA_FLAGS) == sorted(AURA_FLAGS)
    for flag, name in catalogue.AURA_FLAGS.items():
        entry = catalogue.get(name)
        assert entry is not None and entry.aura_flag == flag and Source.AURA in entry.sources
    assert catalogue.AURA_FLAGS["canBanUsers"] == "user.ban"
    assert catalogue.AURA_FLAGS["canApproveCashout"] == "cashout.approve"


def test_entries_are_well_formed_and_unique() -> None:
    shape = re.compile(r"^[a-z][a-z-]*(\.[a-z][a-z_-]*)+$")
    names = [permission.name for permission in catalogue.all_permissions()]
    assert len(names) == len(set(names))
    for permission in catalogue.all_permissions():
        assert shape.match(permission.name), permission.name
        assert permission.description.strip(), permission.name
        assert permission.sources, permission.name


def test_server_level_and_global_are_told_apart() -> None:
    server = {permission.name for permission in catalogue.server_level()}
    assert {"control.console", "file.read-content", "backup.download", "server.start"} <= server
    assert not {"server.create", "server.suspend", "admin.read", "billing.write"} & server


def _permission_strings_used_in_src() -> set[str]:
    """Every string literal passed to ``require(...)`` or ``<principal>.has(...)`` in src/."""
    used: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            first = node.args[0]
            if (
                name in ("require", "has")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                used.add(first.value)
    return used


def test_every_permission_the_code_checks_is_in_the_catalogue() -> None:
    used = _permission_strings_used_in_src()
    assert {"job.read", "job.retry", "role.read", "role.manage"} <= used
    # Raises (and names them) if any string is neither an entry nor a valid wildcard.
    assert catalogue.validate(used) == sorted(used)


def test_validate_deduplicates_and_sorts() -> None:
    assert catalogue.validate(["server.stop", "server.start", "server.stop", " file.read "]) == [
        "file.read",
        "server.start",
        "server.stop",
    ]
    assert catalogue.validate([]) == []


@pytest.mark.parametrize("name", ["*", "server.*", "server.logs.*", "admin.*", "file.*"])
def test_wildcards_over_known_prefixes_are_valid(name: str) -> None:
    assert catalogue.validate([name]) == [name]


@pytest.mark.parametrize(
    "name", ["server.explode", "nope.*", ".*", "*.read", "server", "", "file.read-content.*"]
)
def test_unknown_strings_are_refused(name: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        catalogue.validate(["server.start", name])
    assert refused.value.status == 400
    assert refused.value.details["unknown"] == [name.strip()]


def test_refusal_lists_every_unknown_and_hints_renamed_keys() -> None:
    with pytest.raises(ValidationFailed) as refused:
        catalogue.validate(["user.create", "server.start", "bogus.thing"])
    assert refused.value.details["unknown"] == ["bogus.thing", "user.create"]
    assert refused.value.details["renamed"] == {"user.create": "subuser.create"}
    assert "bogus.thing" in refused.value.message


def test_server_scope_refuses_global_permissions_even_through_wildcards() -> None:
    assert catalogue.validate(["file.*", "control.console"], scope=Scope.SERVER) == [
        "control.console",
        "file.*",
    ]
    for name in ("server.create", "server.*", "*", "admin.read"):
        with pytest.raises(ValidationFailed):
            catalogue.validate([name], scope=Scope.SERVER)


def test_expand_lists_what_a_wildcard_covers() -> None:
    names = {permission.name for permission in catalogue.expand("backup.*")}
    assert names == {
        "backup.read",
        "backup.create",
        "backup.restore",
        "backup.delete",
        "backup.download",
    }
    assert catalogue.expand("server.logs.read")[0].name == "server.logs.read"
    assert catalogue.expand("nothing.here") == ()
    assert len(catalogue.expand("*")) == len(catalogue.all_permissions())


async def test_the_catalogue_is_served_to_any_authenticated_caller(client_as: ClientAs) -> None:
    http = await client_as(Principal(kind="user", id="u1", user_id="u1", tenant_id=None))
    response = await http.get("/api/permissions")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    listed = {entry["name"]: entry for entry in body["data"]}
    assert len(listed) == len(catalogue.all_permissions())
    assert listed["control.console"] == {
        "name": "control.console",
        "description": catalogue.get("control.console").description,  # type: ignore[union-attr]
        "scope": "server",
        "sources": ["qeintech", "pterodactyl"],
        "auraFlag": None,
        "pterodactylKey": None,
    }
    assert listed["user.ban"]["auraFlag"] == "canBanUsers"
    assert listed["user.ban"]["scope"] == "global"
    assert listed["subuser.update"]["pterodactylKey"] == "user.update"

    server_only = (await http.get("/api/permissions", params={"scope": "server"})).json()["data"]
    assert {entry["scope"] for entry in server_only} == {"server"}
    assert len(server_only) == len(catalogue.server_level())
    bad = await http.get("/api/permissions", params={"scope": "everything"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_the_catalogue_needs_authentication(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/permissions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
