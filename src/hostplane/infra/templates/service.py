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

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

FIELDS = (
    "name",
    "description",
    "docker_image",
    "start_command",
    "stop_command",
    "ports",
    "environment",
    "required_variables",
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


def placeholders(text: str) -> list[str]:
    return [match.group(1) for match in _PLACEHOLDER.finditer(text)]


def render(template: Renderable, variables: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The start command and environment with every ``{{VAR}}`` filled from ``variables``.

    The environment is the template's, with the server's variables laid over
    it. Raises ``ValidationFailed`` (400) naming every required variable that
    has no value and every placeholder nothing fills, in the order they appear.
    """
    missing = [
        name for name in template.required_variables if not str(variables.get(name, "")).strip()
    ]
    referenced = placeholders(template.start_command)
    for value in template.environment.values():
        referenced.extend(placeholders(str(value)))
    missing.extend(name for name in referenced if name not in variables and name not in missing)
    if missing:
        raise MissingVariables(list(dict.fromkeys(missing)))

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda match: str(variables[match.group(1)]), text)

    environment = {key: fill(str(value)) for key, value in template.environment.items()}
    for key, value in variables.items():
        if key not in environment and _VARIABLE.match(key):
            environment[key] = str(value)
    return fill(template.start_command), environment


def _validate(values: Mapping[str, Any]) -> None:
    for name in values.get("required_variables") or ():
        if not _VARIABLE.match(name):
            raise ValidationFailed(f"Invalid variable name: {name}")
    for name in values.get("environment") or {}:
        if not _VARIABLE.match(name):
            raise ValidationFailed(f"Invalid environment variable name: {name}")


async def list_templates(session: AsyncSession) -> Sequence[Template]:
    return (await session.scalars(select(Template).order_by(Template.name, Template.id))).all()


async def get_template(session: AsyncSession, template_id: str) -> Template:
    template = await session.get(Template, template_id)
    if template is None:
        raise TemplateNotFound(template_id)
    return template


async def create_template(session: AsyncSession, values: Mapping[str, Any]) -> Template:
    _validate(values)
    template = Template(**{key: values[key] for key in FIELDS if key in values})
    session.add(template)
    await session.flush()
    return template


async def update_template(
    session: AsyncSession, template_id: str, changes: Mapping[str, Any]
) -> Template:
    template = await get_template(session, template_id)
    _validate(changes)
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
    environment: dict[str, str] = {}
    required: list[str] = []
    for variable in egg.get("variables") or ():
        name = str(variable.get("env_variable", "")).strip()
        if not _VARIABLE.match(name):
            continue
        environment[name] = str(variable.get("default_value") or "")
        rules = variable.get("rules") or ""
        rules_text = "|".join(rules) if isinstance(rules, list) else str(rules)
        if "required" in rules_text.split("|"):
            required.append(name)

    def translate(text: str) -> str:
        return _PLACEHOLDER.sub(
            lambda m: "{{" + _EGG_BUILTINS.get(m.group(1), m.group(1)) + "}}", text
        )

    config = egg.get("config") or {}
    stop = config.get("stop") if isinstance(config, Mapping) else None
    scripts = (egg.get("scripts") or {}).get("installation") or {}
    files = config.get("files") if isinstance(config, Mapping) else None
    if isinstance(files, str):
        try:
            files = json.loads(files)
        except ValueError:
            files = None
    return {
        "name": str(egg.get("name") or "Imported egg")[:100],
        "description": egg.get("description"),
        "docker_image": image,
        "start_command": translate(str(egg["startup"])),
        "stop_command": stop if isinstance(stop, str) else None,
        "ports": [],
        "environment": environment,
        "required_variables": required,
        "features": {"configFiles": sorted(files)} if isinstance(files, Mapping) else {},
        "install_script": scripts.get("script"),
        "install_image": scripts.get("container"),
    }


async def import_egg(session: AsyncSession, egg: Mapping[str, Any]) -> Template:
    """Create a template from a Pterodactyl or Pelican egg."""
    return await create_template(session, egg_to_template(egg))
