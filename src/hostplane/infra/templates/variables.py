"""What a template lets servers set, and how values reach the process safely.

A template declares its variables in Pterodactyl's egg shape (name,
``env_variable``, ``default_value``, ``user_viewable``, ``user_editable``,
``rules``). Only declared variables can be given a value; the older
``environment`` / ``required_variables`` fields map onto declarations (see
:func:`definitions`). Built-in names (filled by hostplane from the server's
resources) and names that change how a program or the dynamic loader starts
(:func:`denied_reason`) can never be declared nor set.

Values never enter a shell line: ``{{VAR}}`` in a start command becomes a
quoted reference to the environment variable (:func:`shell_references`), and
the value travels in the process's environment, where the shell expands it
without parsing it again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hostplane.core.errors import ValidationFailed
from hostplane.infra.templates.rules import Rule, parse_rules, rules_text

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Every name hostplane fills from the server (``builtin_variables``), plus the
# ones Pterodactyl reserves for the same purpose, so an imported egg cannot
# claim them either.
BUILTIN_NAMES = frozenset(
    {
        "SERVER_MEMORY",
        "SERVER_IP",
        "SERVER_PORT",
        "SERVER_HOST_PORT",
        "SERVER_UUID",
        "SERVER_NAME",
        "SERVER_PUBLIC_ADDRESS",
        "STARTUP",
        "P_SERVER_UUID",
        "P_SERVER_LOCATION",
        "P_SERVER_ALLOCATION_LIMIT",
    }
)

# Names that make a process load or run something other than the start command:
# the dynamic loader, shells' start-up files and hooks, language runtimes'
# option and module-path variables. The real defence is the allow-list
# (only declared variables can be set); this list stops a template from
# declaring one of them in the first place.
_DENIED: dict[str, str] = {
    "PATH": "decides which programs run",
    "HOME": "decides which start-up files programs read",
    "SHELL": "decides which shell programs start",
    "IFS": "changes how the shell splits words",
    "ENV": "names a file the shell runs at start",
    "BASH_ENV": "names a file bash runs at start",
    "CDPATH": "changes where the shell's cd goes",
    "PS4": "is expanded (and can run commands) when the shell traces",
    "PROMPT_COMMAND": "is run by bash",
    "SHELLOPTS": "changes how bash runs",
    "BASHOPTS": "changes how bash runs",
    "GLOBIGNORE": "changes how the shell expands names",
    "GLIBC_TUNABLES": "tunes the C library loader",
    "GCONV_PATH": "makes the C library load code",
    "LOCPATH": "makes the C library load locale files",
    "NLSPATH": "makes the C library load message files",
    "HOSTALIASES": "redirects name lookups",
    "RESOLV_HOST_CONF": "redirects name lookups",
    "PERL5LIB": "makes Perl load modules",
    "PERLLIB": "makes Perl load modules",
    "PERL5OPT": "passes options to every Perl",
    "PERL5DB": "makes Perl run debugger code",
    "RUBYOPT": "passes options to every Ruby",
    "RUBYLIB": "makes Ruby load libraries",
    "NODE_OPTIONS": "passes options (such as --require) to every Node.js",
    "NODE_PATH": "makes Node.js load modules",
    "JAVA_TOOL_OPTIONS": "passes options (such as -javaagent) to every JVM",
    "_JAVA_OPTIONS": "passes options (such as -javaagent) to every JVM",
    "JDK_JAVA_OPTIONS": "passes options (such as -javaagent) to every JVM",
    "CLASSPATH": "makes the JVM load classes",
    "LUA_INIT": "makes Lua run code at start",
    "LUA_PATH": "makes Lua load modules",
    "LUA_CPATH": "makes Lua load native modules",
    "PHPRC": "makes PHP read another configuration",
    "PHP_INI_SCAN_DIR": "makes PHP read another configuration",
    "DOTNET_STARTUP_HOOKS": "makes .NET run code at start",
}
_DENIED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LD_", "configures the dynamic loader (LD_PRELOAD loads any library)"),
    ("DYLD_", "configures the dynamic loader"),
    ("MALLOC_", "configures the C library's allocator"),
    ("BASH_FUNC_", "defines bash functions"),
    ("CORECLR_", "makes .NET load a profiler"),
    ("PYTHON", "makes Python load or run code at start"),
)
# Python settings that only change output or hashing: harmless, and common.
_PYTHON_ALLOWED = frozenset(
    {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8"}
)


def denied_reason(name: str) -> str | None:
    """Why ``name`` may never be set by a server's variables, or None."""
    upper = name.upper()
    if upper in _DENIED:
        return _DENIED[upper]
    if upper in _PYTHON_ALLOWED:
        return None
    for prefix, reason in _DENIED_PREFIXES:
        if upper.startswith(prefix):
            return reason
    return None


def is_builtin(name: str) -> bool:
    return name in BUILTIN_NAMES or name.startswith("P_SERVER_")


@dataclass(frozen=True)
class Definition:
    """One variable a template declares."""

    env_variable: str
    name: str
    description: str | None = None
    default_value: str = ""
    user_viewable: bool = True
    user_editable: bool = True
    rules: str = "nullable|string"
    parsed: tuple[Rule, ...] = field(default=(), compare=False)

    @property
    def required(self) -> bool:
        return any(rule.name == "required" for rule in self.parsed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "env_variable": self.env_variable,
            "default_value": self.default_value,
            "user_viewable": self.user_viewable,
            "user_editable": self.user_editable,
            "rules": self.rules,
        }


class NameNotSettable(ValidationFailed):
    def __init__(self, name: str, rule: str, reason: str) -> None:
        super().__init__(
            f"Variable {name} cannot be set: {reason}", details={"variable": name, "rule": rule}
        )


def check_name(name: str) -> None:
    """400 unless ``name`` is one a template may declare."""
    if not NAME.match(name):
        raise NameNotSettable(name, "name", "not a valid environment variable name")
    if is_builtin(name):
        raise NameNotSettable(name, "builtin", "hostplane fills it from the server")
    reason = denied_reason(name)
    if reason is not None:
        raise NameNotSettable(name, "denied", f"it {reason}")


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def definition(raw: Mapping[str, Any]) -> Definition:
    """A declaration from its stored or submitted form (400 when it is not a valid one)."""
    env_variable = str(raw.get("env_variable") or "").strip()
    check_name(env_variable)
    rules = rules_text(raw.get("rules")) or "nullable|string"
    default = raw.get("default_value")
    return Definition(
        env_variable=env_variable,
        name=str(raw.get("name") or env_variable)[:191],
        description=None if raw.get("description") is None else str(raw["description"]),
        default_value="" if default is None else str(default),
        user_viewable=_flag(raw.get("user_viewable"), True),
        user_editable=_flag(raw.get("user_editable"), True),
        rules=rules,
        parsed=tuple(parse_rules(env_variable, rules)),
    )


def _legacy(environment: Mapping[str, Any], required: Sequence[Any]) -> list[Definition]:
    """Declarations read from the older fields: a ``KEY: "{{KEY}}"`` entry or a
    ``required_variables`` name is a required variable without a default (the
    placeholder had to be filled); a ``KEY: "value"`` entry is an optional variable
    with that default; an entry built from other placeholders is derived, not settable."""
    required_names = [str(name) for name in required]
    found: list[Definition] = []

    def add(name: str, default: str, *, must: bool) -> None:
        if is_builtin(name) or denied_reason(name) or not NAME.match(name):
            return
        if any(d.env_variable == name for d in found):
            return
        rules = "required|string" if must or name in required_names else "nullable|string"
        found.append(definition({"env_variable": name, "default_value": default, "rules": rules}))

    for key, value in environment.items():
        text = str(value)
        used = PLACEHOLDER.findall(text)
        if not used:
            add(key, text, must=False)
        elif used == [key] and PLACEHOLDER.fullmatch(text.strip()):
            add(key, "", must=True)
    for name in required_names:
        add(name, "", must=True)
    return found


def definitions(template: Any) -> list[Definition]:
    """Every variable ``template`` declares: its ``variables``, then those the older
    ``environment`` / ``required_variables`` fields imply (a declaration wins)."""
    declared = [definition(raw) for raw in getattr(template, "variables", None) or ()]
    names = {d.env_variable for d in declared}
    legacy = _legacy(template.environment or {}, template.required_variables or ())
    return declared + [d for d in legacy if d.env_variable not in names]


def check_declarations(raw_variables: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated, normalised declarations for storage (400 naming the first bad one)."""
    seen: set[str] = set()
    normalised = []
    for raw in raw_variables:
        parsed = definition(raw)
        if parsed.env_variable in seen:
            raise ValidationFailed(
                f"Variable {parsed.env_variable} is declared twice",
                details={"variable": parsed.env_variable},
            )
        seen.add(parsed.env_variable)
        normalised.append(parsed.as_dict())
    return normalised


# --- rendering -----------------------------------------------------------------------------


def shell_references(command: str, resolve: Callable[[str], bool]) -> tuple[str, list[str]]:
    """``command`` with each ``{{VAR}}`` turned into a quoted ``${VAR}`` reference.

    The quoting follows the shell's own state at that point: ``"${VAR}"`` outside
    quotes, ``${VAR}`` inside double quotes, and ``'"${VAR}"'`` (leave, reference,
    re-enter) inside single quotes, so the value is one word and is never
    parsed as shell syntax. ``resolve(name)`` says whether the environment will
    hold ``name``; the names it refuses are returned, in order, for the caller's
    error.
    """
    out: list[str] = []
    unresolved: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(command):
        match = PLACEHOLDER.match(command, index)
        if match is not None:
            name = match.group(1)
            if not NAME.match(name) or not resolve(name):
                unresolved.append(name)
            reference = "${" + name + "}"
            if quote is None:
                out.append(f'"{reference}"')
            elif quote == '"':
                out.append(reference)
            else:
                out.append(f"'\"{reference}\"'")
            index = match.end()
            continue
        char = command[index]
        if char == "\\" and quote != "'" and index + 1 < len(command):
            out.append(command[index : index + 2])
            index += 2
            continue
        if quote is None and char in "'\"":
            quote = char
        elif quote is not None and char == quote:
            quote = None
        out.append(char)
        index += 1
    return "".join(out), unresolved
