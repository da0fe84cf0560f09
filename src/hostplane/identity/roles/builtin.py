"""The built-in roles: Aura's admin hierarchy plus the customer role.

Built-in roles have no tenant and are shared by every tenant. Their
permission sets are defined here, as data, and ``ensure_builtin_roles``
brings the stored rows in line with them, so a change here reaches every
installation on its next start.

The hierarchy, top down (Aura: "Owner, Country Admin, Admin L1-L3,
Support"; level 3 is the most senior admin level, as in tiered support):

- ``owner``: everything (``*``).
- ``country-admin``: runs a tenant below its owner (hostplane runs a
  country, or any other business unit, as a tenant). Everything except
  what is the platform operator's: other tenants, the platform
  configuration, the economy, platform-level security approvals, and
  QeinTech's catch-all ``admin.access``.
- ``admin`` (admin level 3): operates the fleet and the hosted services,
  manages users, roles and API keys. Reads money, never moves it.
- ``admin-l2``: full access to existing servers, suspensions, bans,
  moderation and guide approval; creates nothing on the fleet.
- ``admin-l1``: power and console on servers, room moderation, read access
  to administrative data.
- ``support``: reads a lot (users, servers, billing, hosted services),
  answers tickets and chats, maintains the FAQ. No money, no roles, no
  server files or console.
- ``customer``: no global grants; customers act on what they own.

Each level holds everything the level below holds, so a more senior admin
can always assign a junior role (the grant rules require it).
"""

from __future__ import annotations

from dataclasses import dataclass

from hostplane.identity.permissions.catalogue import all_permissions, server_level


@dataclass(frozen=True, slots=True)
class BuiltinRole:
    name: str
    description: str
    rank: int
    permissions: tuple[str, ...]


OWNER = "owner"
COUNTRY_ADMIN = "country-admin"
ADMIN = "admin"
ADMIN_L2 = "admin-l2"
ADMIN_L1 = "admin-l1"
SUPPORT = "support"
CUSTOMER = "customer"

OWNER_RANK = 100
# Custom roles rank below the owner: nobody but an owner holds every permission.
MAX_CUSTOM_RANK = OWNER_RANK - 1

_SERVER_LEVEL = frozenset(permission.name for permission in server_level())

_SUPPORT = frozenset(
    {
        "user.read",
        "customer.read",
        "role.read",
        "billing.read",
        "plan.read",
        "config.read",
        "node.read",
        "template.read",
        "alert.read",
        "job.read",
        "pod.read",
        "domain.read",
        "dns.read",
        "mail.read",
        "ssl.read",
        "ticket.read",
        "ticket.manage",
        "chat.manage",
        "faq.manage",
        "feedback.read",
        # Per-server reading that helps answer a customer; not files, console,
        # startup variables or database passwords, which hold the customer's secrets.
        "server.read",
        "server.logs.read",
        "activity.read",
        "allocation.read",
        "backup.read",
        "database.read",
        "schedule.read",
        "task.read",
        "subuser.read",
    }
)

_ADMIN_L1 = _SUPPORT | {
    "admin.read",
    "audit.read",
    "alert.resolve",
    "room.kick",
    "message.delete",
    "server.start",
    "server.stop",
    "server.restart",
    "server.kill",
    "server.console",
    "control.power",
    "control.console",
    "control.start",
    "control.stop",
    "control.restart",
    "websocket.connect",
}

_ADMIN_L2 = (
    _ADMIN_L1
    | _SERVER_LEVEL
    | {
        "server.suspend",
        "user.ban",
        "customer.manage",
        "room.manage",
        "event.manage",
        "guide.read",
        "guide.approve",
        "job.retry",
        "security.read",
        "webhook.read",
        "api-key.read",
    }
)

_ADMIN_L3 = _ADMIN_L2 | {
    "admin.write",
    "server.create",
    "server.delete",
    "server.transfer",
    "node.manage",
    "template.manage",
    "alert.manage",
    "user.manage",
    "role.manage",
    "api-key.create",
    "api-key.revoke",
    "product.manage",
    "plan.write",
    "pod.manage",
    "domain.manage",
    "dns.manage",
    "mail.manage",
    "ssl.manage",
    "security.manage",
    "security.approve-tenant",
    "webhook.manage",
    "tenant.read",
    "cashout.read",
}

# The platform operator's alone: other tenants, platform-wide settings, the
# economy, and QeinTech's catch-all admin.access (kept for API-key scopes).
_OWNER_ONLY = frozenset(
    {
        "admin.access",
        "tenant.manage",
        "config.manage",
        "economy.manage",
        "security.approve-platform",
    }
)
_COUNTRY_ADMIN = frozenset(permission.name for permission in all_permissions()) - _OWNER_ONLY

BUILTIN_ROLES: tuple[BuiltinRole, ...] = (
    BuiltinRole(OWNER, "Owns the installation: every permission.", OWNER_RANK, ("*",)),
    BuiltinRole(
        COUNTRY_ADMIN,
        "Runs a tenant (a country or business unit) below its owner: everything but other "
        "tenants, platform configuration and the economy.",
        90,
        tuple(sorted(_COUNTRY_ADMIN)),
    ),
    BuiltinRole(
        ADMIN,
        "Admin level 3: operates nodes, templates, servers and hosted services; manages "
        "users, roles and API keys. Reads billing, never moves money.",
        80,
        tuple(sorted(_ADMIN_L3)),
    ),
    BuiltinRole(
        ADMIN_L2,
        "Admin level 2: full access to existing servers, suspensions, bans, moderation "
        "and guide approval.",
        70,
        tuple(sorted(_ADMIN_L2)),
    ),
    BuiltinRole(
        ADMIN_L1,
        "Admin level 1: server power and console, room moderation, administrative reads.",
        60,
        tuple(sorted(_ADMIN_L1)),
    ),
    BuiltinRole(
        SUPPORT,
        "Customer support: reads accounts, servers and billing; answers tickets and chats.",
        50,
        tuple(sorted(_SUPPORT)),
    ),
    BuiltinRole(CUSTOMER, "A hosting customer: acts on what they own.", 0, ()),
)

BUILTIN_BY_NAME: dict[str, BuiltinRole] = {role.name: role for role in BUILTIN_ROLES}
BUILTIN_NAMES = frozenset(BUILTIN_BY_NAME)

# Accounts holding these run the installation (the CLI's first admin).
ADMIN_ROLE_NAMES = (OWNER, ADMIN)
# Everyone but customers: the operators of mPanel's /users.
STAFF_ROLE_NAMES = tuple(role.name for role in BUILTIN_ROLES if role.name != CUSTOMER)
