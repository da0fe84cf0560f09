"""The permission catalogue: every permission string hostplane knows, in one place.

A permission is a ``resource.action`` string; roles and API keys hold lists of
them, and ``*`` / ``prefix.*`` wildcards cover many at once (see
:func:`hostplane.core.principal.permission_matches`). This module is the
union of what the five specification documents use, Pterodactyl's per-server
subuser keys, and what hostplane's own routes need.

Where a document names a string (Catalyst's ``server.start``, QeinTech's
``control.power``), it is kept exactly. Where a document describes a
capability without naming a permission (mPanel's DNS routes, SkyPANEL's
webhooks, Aura's owner panel), hostplane names it in the same form and the
entry credits that document. Aura's ``can*`` flags and Pterodactyl keys that
had to be renamed keep their original spelling on the entry, so both can be
shown and imported.

Scope says where a permission may be granted:

- ``server``: about one server. A role may grant it for every server of the
  tenant, and a per-server grant (a subuser) may grant it for one server.
  Owners hold all of these on what they own, implicitly.
- ``global``: only through a role or an API key scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from hostplane.core.errors import ValidationFailed
from hostplane.core.principal import permission_matches


class Scope(StrEnum):
    GLOBAL = "global"
    SERVER = "server"


class Source(StrEnum):
    """The documents a permission comes from."""

    CATALYST = "catalyst"  # 001: Catalyst backend
    QEINTECH = "qeintech"  # 000: QeinTech platform
    MPANEL = "mpanel"  # 002: mPanel
    AURA = "aura"  # 003: Aura Voice Chat backend
    SKYPANEL = "skypanel"  # 004: SkyPANEL
    PTERODACTYL = "pterodactyl"  # Pterodactyl's subuser permission keys
    HOSTPLANE = "hostplane"  # hostplane's own routes


@dataclass(frozen=True, slots=True)
class Permission:
    name: str
    description: str
    scope: Scope
    sources: tuple[Source, ...]
    # Aura's boolean admin flag this string replaces ("canBanUsers").
    aura_flag: str | None = None
    # Pterodactyl's key, where hostplane had to rename it.
    pterodactyl_key: str | None = None

    @property
    def is_server_level(self) -> bool:
        return self.scope is Scope.SERVER


C, Q, M, A, S, P, H = (
    Source.CATALYST,
    Source.QEINTECH,
    Source.MPANEL,
    Source.AURA,
    Source.SKYPANEL,
    Source.PTERODACTYL,
    Source.HOSTPLANE,
)


def _global(
    name: str, description: str, *sources: Source, aura_flag: str | None = None
) -> Permission:
    return Permission(name, description, Scope.GLOBAL, sources, aura_flag=aura_flag)


def _server(
    name: str, description: str, *sources: Source, pterodactyl_key: str | None = None
) -> Permission:
    return Permission(name, description, Scope.SERVER, sources, pterodactyl_key=pterodactyl_key)


_CATALOGUE: tuple[Permission, ...] = (
    # --- administration -----------------------------------------------------------------------
    _global(
        "admin.read",
        "Read administrative data: system statistics, every server, detailed health, "
        "audit logs, jobs, nodes, roles and the user list (Catalyst's admin reads).",
        C,
    ),
    _global(
        "admin.write",
        "Make the administrative changes Catalyst gates with its admin permission "
        "(nodes and their deployment tokens, locations, templates, alert rules).",
        C,
    ),
    _global(
        "admin.access",
        "QeinTech's global admin access: every administrative route of the tenant "
        "(users and bans, roles, API keys, jobs, audit, nodes, templates, forced suspension, "
        "deletion and transfer of any server, platform configuration, balances). Not other "
        "tenants, and not a customer's own server powers: those are the '*' wildcard's.",
        Q,
    ),
    _global("rate-limit.bypass", "Not subject to the per-user and per-IP request rate limits.", C),
    _global(
        "config.read",
        "Read the platform configuration: prices, limits, maintenance mode, app version.",
        Q,
        A,
    ),
    _global(
        "config.manage",
        "Change the platform configuration (hot reload), including maintenance mode.",
        Q,
        A,
    ),
    _global(
        "platform.read",
        "Read the system statistics and the detailed health of the fleet "
        "(/api/admin/stats, /api/admin/health).",
        C,
    ),
    _global("audit.read", "Read the audit log of the tenant.", M, C, A),
    _global("job.read", "Read background jobs (provisioning, deliveries, renewals).", M),
    _global("job.retry", "Retry a failed background job.", M),
    _global("system.read", "Read host metrics and the queue's event log (/api/system).", M),
    # --- tenants, users, roles, API keys -----------------------------------------------------
    _global("tenant.read", "Read tenants.", M),
    _global("tenant.manage", "Create and change tenants.", M),
    _global("user.read", "Read user accounts of the tenant.", Q, M, C),
    _global("user.manage", "Create, update and delete user accounts (operators).", M),
    _global("user.ban", "Ban and unban users.", Q, A, aura_flag="canBanUsers"),
    _global("customer.read", "Read customers (paying clients) and their details.", M),
    _global("customer.manage", "Create and update customers.", M),
    _global("role.read", "Read roles and which roles users hold.", H),
    _global(
        "role.manage",
        "Create, change and delete roles, and assign them, within the caller's own "
        "permissions and rank.",
        H,
    ),
    _global("api-key.read", "List the tenant's API keys.", Q, H),
    _global(
        "api-key.create",
        "Create API keys whose scopes are a subset of the creator's permissions.",
        Q,
        H,
    ),
    _global("api-key.revoke", "Revoke API keys.", Q, H),
    # --- infrastructure -------------------------------------------------------------------------
    _global("node.read", "Read nodes (the machines that run servers) and their state.", C, M),
    _global(
        "node.manage",
        "Create, change and delete nodes and issue their deployment tokens.",
        C,
        M,
    ),
    _global("database-host.read", "Read database hosts (never their passwords).", H),
    _global("database-host.manage", "Add, change and remove database hosts.", H),
    _global("template.read", "Read server templates.", C),
    _global("template.manage", "Create, change and delete server templates.", C),
    _global("alert.read", "Read every alert of the tenant (owners see their own servers').", C),
    _global("alert.resolve", "Resolve alerts, one at a time or in bulk.", C),
    _global("alert.manage", "Create, change and delete alert rules.", C),
    # --- servers: fleet-wide actions ---------------------------------------------------------
    _global("server.create", "Create servers on any node, for any owner.", C),
    _global("server.delete", "Delete servers, including forced deletion.", C, Q),
    _global("server.suspend", "Suspend and unsuspend servers.", C, Q),
    _global("server.transfer", "Move a server to another node.", C),
    # --- servers: per server ------------------------------------------------------------------
    _server("server.read", "See a server's basic information: address, port, status.", C, Q),
    _server(
        "server.details",
        "See a server's sensitive settings: startup command and environment variables.",
        Q,
    ),
    _server("server.update", "Change a server's settings, allocations and restart policy.", C),
    _server("server.install", "Install or reinstall a server.", C),
    _server("server.start", "Start a server.", C),
    _server("server.stop", "Stop a server.", C),
    _server("server.restart", "Restart a server.", C),
    _server("server.kill", "Force-stop a server.", C),
    _server("server.console", "Send commands to a server's console.", C),
    _server("server.logs.read", "Read a server's console log history.", C),
    _server("control.power", "Send power signals (start, stop, restart, kill).", Q),
    _server("control.console", "Open the live console stream and send commands.", Q, P),
    _server("control.start", "Start the server.", P),
    _server("control.stop", "Stop the server.", P),
    _server("control.restart", "Restart the server.", P),
    _server("websocket.connect", "Connect to the server's live WebSocket stream.", P),
    _server("activity.read", "Read the server's activity log.", P),
    _server("settings.rename", "Rename the server and change its description.", P),
    _server("settings.reinstall", "Reinstall the server.", P),
    _server("startup.read", "Read the startup command and variables.", P),
    _server("startup.update", "Change startup variables.", P),
    _server("startup.docker-image", "Change the server's Docker image.", P),
    _server(
        "subuser.create",
        "Add subusers to the server.",
        P,
        pterodactyl_key="user.create",
    ),
    _server(
        "subuser.read",
        "See the server's subusers and their permissions.",
        P,
        pterodactyl_key="user.read",
    ),
    _server("subuser.update", "Change a subuser's permissions.", P, pterodactyl_key="user.update"),
    _server("subuser.delete", "Remove subusers from the server.", P, pterodactyl_key="user.delete"),
    # files
    _server("file.read", "List files and download them.", C, P),
    _server("file.read-content", "Read the content of files.", P),
    _server("file.write", "Create, upload, edit and rename files.", C, Q),
    _server("file.create", "Create and upload files and directories.", P),
    _server("file.update", "Edit and rename files.", P),
    _server("file.delete", "Delete files and directories.", C, P),
    _server("file.archive", "Compress files into archives and extract archives.", P),
    _server("file.sftp", "Connect to the server's files over SFTP.", P),
    # backups
    _server("backup.read", "List backups.", C, P),
    _server("backup.create", "Create backups.", C, P),
    _server("backup.restore", "Restore a backup over the server's files.", C, P),
    _server("backup.delete", "Delete backups.", C, P),
    _server("backup.download", "Download backups.", P),
    # network allocations
    _server("allocation.read", "See the server's ports.", P),
    _server("allocation.create", "Assign ports to the server.", P),
    _server("allocation.update", "Change the server's ports and its primary port.", P),
    _server("allocation.delete", "Remove ports from the server.", P),
    # databases
    _server("database.read", "List the server's databases.", C, P),
    _server("database.create", "Create databases for the server.", C, P),
    _server("database.update", "Change the server's databases.", P),
    _server("database.rotate", "Rotate a database password.", C),
    _server("database.view_password", "See database passwords.", P),
    _server("database.delete", "Delete the server's databases.", C, P),
    # scheduled tasks: Catalyst's tasks and Pterodactyl's schedules are one feature
    _server("task.read", "List scheduled tasks.", C),
    _server("task.create", "Create scheduled tasks.", C),
    _server("task.update", "Change scheduled tasks.", C),
    _server("task.delete", "Delete scheduled tasks.", C),
    _server("task.execute", "Run a scheduled task now.", C),
    _server("schedule.read", "List schedules.", P),
    _server("schedule.create", "Create schedules.", P),
    _server("schedule.update", "Change schedules.", P),
    _server("schedule.delete", "Delete schedules.", P),
    # --- money ---------------------------------------------------------------------------------
    _global(
        "billing.read",
        "Read other users' invoices, orders, subscriptions, payments and wallet history "
        "(everyone reads their own).",
        Q,
        M,
        S,
    ),
    _global(
        "billing.write",
        "Change money state: adjust wallet balances, manage payment methods, set invoice "
        "status, create orders and cancel subscriptions for customers.",
        Q,
        M,
    ),
    _global(
        "product.manage", "Create, change and retire products, plans, add-ons and coupons.", M, Q
    ),
    _global(
        "plan.read", "Read every plan of the catalogue, retired ones included (admin view).", H
    ),
    _global("plan.write", "Create, change and retire the plans servers are bought on.", H),
    _global(
        "economy.read", "Read the economy configuration: targets, conversion rates, limits.", A
    ),
    _global("economy.manage", "Change earning targets, conversion rates and economy limits.", A),
    _global("cashout.read", "Read cashout requests.", A),
    _global(
        "cashout.approve",
        "Approve or reject cashout requests.",
        A,
        aura_flag="canApproveCashout",
    ),
    # --- hosting services ---------------------------------------------------------------------
    _global("pod.read", "Read every cloud pod of the tenant.", M),
    _global("pod.manage", "Provision, suspend and delete cloud pods.", M),
    _global("domain.read", "Read every domain of the tenant.", M),
    _global("domain.manage", "Register and renew domains for customers.", M),
    _global("dns.read", "Read DNS zones and records.", M),
    _global("dns.manage", "Create, change and delete DNS records.", M),
    _global("mail.read", "Read email domains and mailboxes.", M),
    _global("mail.manage", "Attach email to domains and manage mailboxes.", M),
    _global("ssl.read", "Read SSL certificates.", M),
    _global("ssl.manage", "Request and renew SSL certificates.", M),
    _global("security.read", "Read security posture, scans, findings and remediations.", M),
    _global(
        "security.manage", "Configure security scanning, run scans and request remediations.", M
    ),
    _global("security.approve-tenant", "Approve a remediation on behalf of the tenant.", M),
    _global(
        "security.approve-platform",
        "Approve a remediation on behalf of the platform operator.",
        M,
    ),
    _global("webhook.read", "Read outbound webhook endpoints and their delivery log.", S),
    _global("webhook.manage", "Create, change, replay and delete outbound webhook endpoints.", S),
    # --- support ------------------------------------------------------------------------------
    _global("ticket.read", "Read every support ticket of the tenant.", A, S),
    _global("ticket.manage", "Answer support tickets and change their status.", A, S),
    _global("chat.manage", "Read and answer users' live support chats.", A),
    _global(
        "message.delete",
        "Delete messages written by others.",
        A,
        aura_flag="canDeleteMessages",
    ),
    _global("faq.manage", "Create, change and delete FAQ entries.", A),
    _global("feedback.read", "Read the feedback users submitted.", A),
    # --- community ----------------------------------------------------------------------------
    _global(
        "room.manage",
        "Manage rooms and their watch-together sessions.",
        A,
        aura_flag="canManageRooms",
    ),
    _global("room.kick", "Remove a user from a room.", A, aura_flag="canKickUsers"),
    _global(
        "event.manage",
        "Manage community events.",
        A,
        aura_flag="canManageEvents",
    ),
    _global("guide.read", "Read guide applications and guide profiles.", A),
    _global(
        "guide.approve",
        "Approve or reject guide applications.",
        A,
        aura_flag="canApproveGuides",
    ),
)

_BY_NAME: dict[str, Permission] = {permission.name: permission for permission in _CATALOGUE}
if len(_BY_NAME) != len(_CATALOGUE):  # pragma: no cover - a typo in the table above
    raise RuntimeError("duplicate permission in the catalogue")

# --- what the administrative permissions open ----------------------------------------------
# Catalyst gates its admin reads with admin.read and its admin writes with
# "admin permission"; QeinTech gives admin.access every admin route ("bypass
# all checks"). hostplane's routes check finer permissions, so each of the
# three stands for the permissions of the routes the documents give it. This
# table is the only place that says so (see docs/decisions.md).
_ADMIN_READ = frozenset(
    {
        "user.read",  # GET /api/admin/users, /api/users
        "server.read",  # every user's servers
        "node.read",  # nodes and locations
        "database-host.read",
        "template.read",
        "alert.read",
        "audit.read",  # GET /api/admin/audit-logs, /api/audit
        "job.read",
        "system.read",  # GET /api/system/health, /api/system/events
        "role.read",  # GET /api/admin/roles, a user's roles
        "platform.read",  # GET /api/admin/stats, /api/admin/health
    }
)
_ADMIN_WRITE = frozenset(
    {
        "node.manage",  # nodes, deployment tokens, locations
        "database-host.manage",
        "template.manage",  # templates and egg imports
        "alert.manage",  # alert rules
    }
)
_ADMIN_ACCESS = (
    _ADMIN_READ
    | _ADMIN_WRITE
    | {
        "api-key.read",  # QeinTech: /admin/api-keys
        "api-key.create",
        "api-key.revoke",
        "user.manage",
        "user.ban",  # QeinTech: /admin/users/:id/ban
        "role.manage",
        "job.retry",
        "server.suspend",  # QeinTech: force suspend
        "server.delete",  # QeinTech: force delete
        "server.transfer",
        "config.read",  # QeinTech: /admin/config
        "config.manage",
        "billing.write",  # QeinTech: /admin/users/:id/balance
    }
)
IMPLIED: Mapping[str, frozenset[str]] = {
    "admin.read": _ADMIN_READ,
    "admin.write": _ADMIN_WRITE,
    "admin.access": frozenset(_ADMIN_ACCESS),
}
"""Permissions that stand for others: holding the key holds every permission of its set."""


def with_implied(permissions: Iterable[str]) -> frozenset[str]:
    """``permissions`` plus what the administrative permissions among them imply.

    A wildcard that covers ``admin.read`` (``admin.*``) implies its set too;
    implied permissions another entry already covers are not repeated.
    """
    held = frozenset(permissions)
    implied = {
        permission
        for key, opened in IMPLIED.items()
        if any(permission_matches(granted, key) for granted in held)
        for permission in opened
        if not any(permission_matches(granted, permission) for granted in held)
    }
    return held | implied


AURA_FLAGS: Mapping[str, str] = {
    permission.aura_flag: permission.name for permission in _CATALOGUE if permission.aura_flag
}
"""Aura's ``can*`` admin flags and the permission each became."""

PTERODACTYL_RENAMED: Mapping[str, str] = {
    permission.pterodactyl_key: permission.name
    for permission in _CATALOGUE
    if permission.pterodactyl_key
}
"""Pterodactyl keys hostplane spells differently.

Pterodactyl's ``user.*`` keys manage a server's subusers; hostplane's
``user.read`` is about accounts across the tenant, so the subuser keys
became ``subuser.*``.
"""


def all_permissions() -> tuple[Permission, ...]:
    """Every permission, in catalogue order (grouped by area)."""
    return _CATALOGUE


def server_level() -> tuple[Permission, ...]:
    """The permissions a per-server grant (a subuser) may hold."""
    return tuple(permission for permission in _CATALOGUE if permission.is_server_level)


def get(name: str) -> Permission | None:
    return _BY_NAME.get(name)


def is_known(name: str) -> bool:
    """Whether ``name`` is a catalogue entry (wildcards are patterns, not entries)."""
    return name in _BY_NAME


def is_wildcard(name: str) -> bool:
    return name == "*" or name.endswith(".*")


def expand(pattern: str) -> tuple[Permission, ...]:
    """The entries a permission string covers: itself, or every match of a wildcard."""
    if not is_wildcard(pattern):
        entry = _BY_NAME.get(pattern)
        return (entry,) if entry else ()
    return tuple(p for p in _CATALOGUE if permission_matches(pattern, p.name))


def _is_valid(name: str, scope: Scope | None) -> bool:
    if is_wildcard(name) and name != "*" and not name[:-2]:
        return False  # ".*"
    covered = expand(name)
    if not covered:
        return False
    # A per-server grant may not smuggle a global permission in through a wildcard.
    return scope is None or all(permission.scope is scope for permission in covered)


def validate(names: Iterable[str], *, scope: Scope | None = None) -> list[str]:
    """The given permission strings, deduplicated and sorted, if all are valid.

    Valid: a catalogue entry, ``*``, or ``prefix.*`` where the prefix names at
    least one entry. With ``scope=Scope.SERVER`` every string, and everything
    a wildcard covers, must be server-level. Raises ``ValidationFailed`` (400)
    listing the unknown strings, with the hostplane name for renamed
    Pterodactyl keys.
    """
    cleaned = sorted({name.strip() for name in names})
    invalid = [name for name in cleaned if not _is_valid(name, scope)]
    if invalid:
        renamed = {
            name: PTERODACTYL_RENAMED[name] for name in invalid if name in PTERODACTYL_RENAMED
        }
        scope_note = f" {scope.value}-level" if scope is not None else ""
        raise ValidationFailed(
            f"Unknown{scope_note} permissions: {', '.join(invalid)}",
            details={
                "fields": [{"field": "permissions", "message": f"unknown: {', '.join(invalid)}"}],
                "unknown": invalid,
                **({"renamed": renamed} if renamed else {}),
            },
        )
    return cleaned
