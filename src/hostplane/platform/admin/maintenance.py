"""Maintenance mode: every ``/api`` route answers 503 ``MAINTENANCE`` to non-staff.

An app-wide dependency, so it runs after routing (it knows the route) and can
resolve the caller (cached on the request for the route itself). When the
mode is off, which is nearly always, it costs one dictionary lookup and one
attribute read. Staff (holders of ``config.read`` or ``admin.read``),
agents and the system pass; so do ``/health``, ``/status``, ``/metrics`` and
the agents' socket, which are not under ``/api``. Logging in stays open so
an operator can get a token to switch the mode off; what a customer's token
then opens is only the public configuration, which carries the message.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from hostplane.core.errors import HostplaneError
from hostplane.core.http.deps import RuntimeDep, get_principal
from hostplane.core.http.middleware import route_template
from hostplane.core.principal import ANONYMOUS, Principal
from hostplane.platform.admin import live

STAFF_PERMISSIONS = ("config.read", "admin.read")
# Reached during maintenance by anyone: getting (and dropping) a session, and
# the public configuration that tells clients about the maintenance.
OPEN_ROUTES = frozenset(
    {
        "/api/auth/login",
        "/api/auth/login/2fa",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/me",
        "/api/v1/settings/system/config",
    }
)


class UnderMaintenance(HostplaneError):
    status = 503
    code = "MAINTENANCE"


def passes(principal: Principal) -> bool:
    if principal.kind in ("node", "system"):
        return True
    return any(principal.has(permission) for permission in STAFF_PERMISSIONS)


async def enforce_maintenance(connection: HTTPConnection, runtime: RuntimeDep) -> None:
    """Refuse the request with 503 while maintenance mode is on, unless the caller is staff."""
    maintenance = live.current(runtime).maintenance
    if not maintenance.enabled or connection.scope["type"] != "http":
        return
    route = route_template(connection.scope)
    if not route.startswith("/api/") or route in OPEN_ROUTES:
        return
    try:
        principal = await get_principal(connection, runtime)
    except Exception:  # noqa: BLE001 - an unresolvable caller is not staff; the 503 stands
        principal = ANONYMOUS
    if passes(principal):
        return
    raise UnderMaintenance(
        maintenance.message,
        details={"retryAfter": maintenance.retry_after_seconds},
        headers={"Retry-After": str(maintenance.retry_after_seconds)},
    )
