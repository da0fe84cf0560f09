"""A server's variables: the built-ins hostplane fills, and who may set or see the rest.

The policy (see docs/decisions.md, "Server variables"):

- Only variables the template declares can hold a value (the allow-list).
- Owners and subusers set those the template marks ``user_editable`` (and
  ``user_viewable``); operators (a global ``server.update``) any declared one.
- Built-ins and names that change how programs start are never settable;
  templates cannot declare them either (``templates.variables.check_name``).
- Every value is checked against its declared rules; a refusal is a 400 naming
  the variable and the rule, and nothing changes.
- Only callers allowed ``server.details`` see values; ``user_viewable: false``
  ones only with a global ``server.details``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import ValidationFailed
from hostplane.core.principal import Principal
from hostplane.identity.access import service as access
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers.models import Server
from hostplane.infra.templates.models import Template
from hostplane.infra.templates.rules import check
from hostplane.infra.templates.variables import (
    Definition,
    NameNotSettable,
    definitions,
    denied_reason,
    is_builtin,
)

# Large enough for any real setting (a URL, a list of mods); a value travels
# in every start message and in the process's environment.
MAX_VALUE_LENGTH: Final = 4096


def builtin_variables(server: Server, node: Node, bindings: Mapping[int, int]) -> dict[str, str]:
    """Variables every template may use (Pterodactyl's names)."""
    values = {
        "SERVER_MEMORY": str(server.allocated_memory_mb),
        "SERVER_IP": "0.0.0.0",  # noqa: S104 - the server listens on every interface of its node
        "SERVER_UUID": server.uuid,
        "SERVER_NAME": server.name,
    }
    if server.primary_port is not None:
        values["SERVER_PORT"] = str(server.primary_port)
        if server.primary_port in bindings:
            values["SERVER_HOST_PORT"] = str(bindings[server.primary_port])
    values["SERVER_PUBLIC_ADDRESS"] = node.public_address
    return values


def variables_for(
    server: Server, node: Node, bindings: Mapping[int, int], environment: Mapping[str, Any]
) -> dict[str, str]:
    """The server's values with the built-ins laid over them: a stored value can never
    stand in for a built-in (``templates.render`` keeps only declared names and built-ins)."""
    return {k: str(v) for k, v in environment.items()} | builtin_variables(server, node, bindings)


def _editable(variable: Definition, *, operator: bool) -> bool:
    return operator or (variable.user_editable and variable.user_viewable)


def _check_settable(
    name: str, value: str, declared: Mapping[str, Definition], current: Mapping[str, str]
) -> Definition | None:
    """The declaration ``name`` sets; None when ``value`` is the stored one (no change)."""
    if is_builtin(name):
        raise NameNotSettable(name, "builtin", "hostplane fills it from the server")
    reason = denied_reason(name)
    if reason is not None:
        raise NameNotSettable(name, "denied", f"it {reason}")
    variable = declared.get(name)
    if variable is None:
        raise NameNotSettable(name, "declared", "the server's template does not declare it")
    if current.get(name) == value:
        return None
    return variable


def apply_changes(
    template: Template,
    current: Mapping[str, str],
    requested: Mapping[str, str],
    *,
    operator: bool,
) -> dict[str, str]:
    """The server's new stored values after ``requested``; 400 naming the variable and
    rule for the first refusal.

    ``requested`` stands for every variable the caller may edit: one it leaves
    out goes back to its default. Variables the caller may not edit keep their
    value, and sending one back unchanged is not a change.
    """
    declared = {d.env_variable: d for d in definitions(template)}
    for name, value in requested.items():
        variable = _check_settable(name, value, declared, current)
        if variable is None:
            continue
        if not _editable(variable, operator=operator):
            raise NameNotSettable(
                name, "user_editable", "the template does not let owners change it"
            )
        if "\x00" in value:
            raise ValidationFailed(
                f"Variable {name} holds a NUL character", details={"variable": name, "rule": "nul"}
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise ValidationFailed(
                f"Variable {name} is longer than {MAX_VALUE_LENGTH} characters",
                details={"variable": name, "rule": f"max:{MAX_VALUE_LENGTH}"},
            )
        check(name, value, variable.parsed)
    kept = {
        name: value
        for name, value in current.items()
        if name in declared and not _editable(declared[name], operator=operator)
    }
    return kept | dict(requested)


def visible_environment(
    template: Template, environment: Mapping[str, Any], *, operator: bool
) -> dict[str, str]:
    """The stored values a caller allowed ``server.details`` sees: declared names only,
    and the ``user_viewable: false`` ones only for operators."""
    declared = {d.env_variable: d for d in definitions(template)}
    return {
        name: str(value)
        for name, value in environment.items()
        if name in declared and (operator or declared[name].user_viewable)
    }


def visible_variables(
    template: Template, environment: Mapping[str, Any], *, operator: bool
) -> list[dict[str, Any]]:
    """Pterodactyl's startup view: each variable the caller may see, its value and
    whether the caller may change it."""
    return [
        {
            "name": d.name,
            "description": d.description,
            "env_variable": d.env_variable,
            "default_value": d.default_value,
            "server_value": str(environment.get(d.env_variable, d.default_value)),
            "is_editable": _editable(d, operator=operator),
            "rules": d.rules,
        }
        for d in definitions(template)
        if operator or d.user_viewable
    ]


# Catalyst/QeinTech's ``server.details`` and Pterodactyl's ``startup.read`` both
# mean "may read the startup command and variables".
DETAILS_PERMISSIONS: Final = ("server.details", "startup.read")


async def details_access(
    session: AsyncSession, principal: Principal, server: Server
) -> tuple[bool, bool]:
    """(may see the startup command and variables, sees the hidden ones too)."""
    for permission in DETAILS_PERMISSIONS:
        if await access.allowed(session, principal, permission, server, resource_type="server"):
            operator = principal.has("server.details") and principal.within_scopes("server.details")
            return True, operator
    return False, False
