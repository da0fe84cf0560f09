"""Templates, ``{{VAR}}`` substitution, bundled templates and Pterodactyl egg import."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import NotFound, ValidationFailed
from hostplane.infra.templates.models import Template
from hostplane.infra.templates.variables import (
    NAME,
    PLACEHOLDER,
    NameNotSettable,
    check_declarations,
    definitions,
    denied_reason,
    is_builtin,
    shell_references,
)

FIELDS = (
    "name",
    "description",
    "docker_image",
    "start_command",
    "stop_command",
    "ports",
    "environment",
    "required_variables",
    "variables",
    "features",
    "install_script",
    "install_image",
)


class TemplateNotFound(NotFound):
    def __init__(self, template_id: str) -> None:
        super().__init__("template", template_id)


class MissingVariables(ValidationFailed):
    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__(
            f"Missing required template variables: {', '.join(missing)}",
            details={"missing": list(missing)},
        )


class Renderable(Protocol):
    @property
    def start_command(self) -> str: ...

    @property
    def environment(self) -> dict[str, Any]: ...

    @property
    def required_variables(self) -> list[Any]: ...

    @property
    def variables(self) -> list[Any]: ...


def placeholders(text: str) -> list[str]:
    return [match.group(1) for match in PLACEHOLDER.finditer(text)]


def render(template: Renderable, variables: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The start command and the environment the server's process gets.

    ``variables`` holds the built-in values and the server's own. Only declared
    variables (their value, else their default) and built-ins enter the
    environment; any other name is dropped. The template's derived environment
    entries (``"JAVA_OPTS": "-Xmx{{SERVER_MEMORY}}M"``) are filled from those.
    The start command holds no value: each ``{{VAR}}`` becomes a quoted
    ``${VAR}`` reference that the shell expands from the environment.

    Raises ``ValidationFailed`` (400) naming every required variable without a
    value and every placeholder nothing fills, in the order they appear.
    """
    declared = definitions(template)
    environment: dict[str, str] = {}
    for variable in declared:
        name = variable.env_variable
        environment[name] = str(variables.get(name, variable.default_value))
    for name, value in variables.items():
        if is_builtin(name):
            environment[name] = str(value)
    required = [str(name) for name in template.required_variables or ()]
    required += [v.env_variable for v in declared if v.required]
    missing = [name for name in required if not environment.get(name, "").strip()]

    def fill(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environment:
                missing.append(name)
                return ""
            return environment[name]

        return PLACEHOLDER.sub(value, text)

    derived = {
        key: fill(str(value))
        for key, value in (template.environment or {}).items()
        if key not in environment and not is_builtin(key) and denied_reason(key) is None
    }
    environment |= derived
    command, unresolved = shell_references(template.start_command, environment.__contains__)
    missing.extend(unresolved)
    if missing:
        raise MissingVariables(list(dict.fromkeys(missing)))
    return command, environment


def _validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with its variable declarations checked and normalised (400 if bad)."""
    for name in values.get("required_variables") or ():
        if not NAME.match(name):
            raise ValidationFailed(f"Invalid variable name: {name}")
    for name in values.get("environment") or {}:
        if not NAME.match(name):
            raise ValidationFailed(f"Invalid environment variable name: {name}")
        reason = denied_reason(name)
        if reason is not None:
            raise NameNotSettable(name, "denied", f"it {reason}")
    checked = dict(values)
    if values.get("variables") is not None:
        checked["variables"] = check_declarations(values["variables"])
    return checked


async def list_templates(session: AsyncSession) -> Sequence[Template]:
    return (await session.scalars(select(Template).order_by(Template.name, Template.id))).all()


async def get_template(session: AsyncSession, template_id: str) -> Template:
    template = await session.get(Template, template_id)
    if template is None:
        raise TemplateNotFound(template_id)
    return template


async def create_template(session: AsyncSession, values: Mapping[str, Any]) -> Template:
    values = _validate(values)
    template = Template(**{key: values[key] for key in FIELDS if key in values})
    session.add(template)
    await session.flush()
    return template


async def update_template(
    session: AsyncSession, template_id: str, changes: Mapping[str, Any]
) -> Template:
    template = await get_template(session, template_id)
    changes = _validate(changes)
    for key in FIELDS:
        if key in changes:
            setattr(template, key, changes[key])
    await session.flush()
    return template


async def delete_template(session: AsyncSession, template_id: str) -> None:
    """Delete a template. Callers check first that no server uses it."""
    template = await get_template(session, template_id)
    await session.delete(template)
    await session.flush()


# --- bundled templates ---------------------------------------------------------------------


def bundled_templates() -> list[dict[str, Any]]:
    """The templates shipped in ``hostplane/templates/*.json`` (snake_case keys)."""
    folder = resources.files("hostplane") / "templates"
    return [
        json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    ]


async def install_bundled_templates(session: AsyncSession) -> list[Template]:
    """Create the bundled templates in the session's tenant, skipping names that exist."""
    existing = set((await session.scalars(select(Template.name))).all())
    return [
        await create_template(session, values)
        for values in bundled_templates()
        if values["name"] not in existing
    ]


# --- Pterodactyl / Pelican eggs ------------------------------------------------------------

# Pterodactyl's built-in variables and the names hostplane fills them under.
_EGG_BUILTINS = {
    "SERVER_MEMORY": "SERVER_MEMORY",
    "SERVER_IP": "SERVER_IP",
    "SERVER_PORT": "SERVER_PORT",
    "server.build.default.port": "SERVER_PORT",
    "server.build.memory": "SERVER_MEMORY",
}


def egg_to_template(egg: Mapping[str, Any]) -> dict[str, Any]:
    """Template values from a Pterodactyl or Pelican egg (PTDL_v1/v2 JSON)."""
    if not isinstance(egg, Mapping) or "startup" not in egg:
        raise ValidationFailed("Not an egg: the JSON has no startup command")
    images = egg.get("docker_images")
    if isinstance(images, Mapping) and images:
        image = str(next(iter(images.values())))
    elif isinstance(egg.get("image"), str):
        image = str(egg["image"])
    elif isinstance(images, list) and images:
        image = str(images[0])
    else:
        raise ValidationFailed("The egg names no Docker image")
    declared: list[dict[str, Any]] = []
    for variable in egg.get("variables") or ():
        if not isinstance(variable, Mapping):
            raise ValidationFailed("The egg's variables must be objects")
        declared.append(
            {
                key: variable.get(key)
                for key in (
                    "name",
                    "description",
                    "env_variable",
                    "default_value",
                    "user_viewable",
                    "user_editable",
                    "rules",
                )
            }
        )
    # Checked here so a bad egg is refused before anything is created.
    variables = check_declarations(declared)
    # The older fields too, for clients that read only them.
    environment = {v["env_variable"]: v["default_value"] for v in variables}
    required = [v["env_variable"] for v in variables if "required" in str(v["rules"]).split("|")]

    def translate(text: str) -> str:
        return PLACEHOLDER.sub(
            lambda m: "{{" + _EGG_BUILTINS.get(m.group(1), m.group(1)) + "}}", text
        )

    config = egg.get("config") or {}
    stop = config.get("stop") if isinstance(config, Mapping) else None
    all_scripts = egg.get("scripts")
    found = all_scripts.get("installation") if isinstance(all_scripts, Mapping) else None
    scripts: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    files = config.get("files") if isinstance(config, Mapping) else None
    if isinstance(files, str):
        try:
            files = json.loads(files)
        except ValueError:
            files = None
    return {
        "name": str(egg.get("name") or "Imported egg")[:100],
        "description": _text(egg.get("description")),
        "docker_image": _short(image, "docker image"),
        "start_command": translate(str(egg["startup"])),
        "stop_command": _short(stop, "stop command") if isinstance(stop, str) else None,
        "ports": [],
        "environment": environment,
        "required_variables": required,
        "variables": variables,
        "features": {"configFiles": sorted(files)} if isinstance(files, Mapping) else {},
        "install_script": _text(scripts.get("script")),
        "install_image": _short(_text(scripts.get("container")), "install image"),
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _short(value: str | None, what: str) -> str | None:
    """Egg fields stored in 255-character columns: a longer one is refused, not cut."""
    if value is not None and len(value) > 255:
        raise ValidationFailed(f"The egg's {what} is longer than 255 characters")
    return value


async def import_egg(session: AsyncSession, egg: Mapping[str, Any]) -> Template:
    """Create a template from a Pterodactyl or Pelican egg."""
    return await create_template(session, egg_to_template(egg))
