"""The entry a mutating request gets when its service recorded none.

The action is derived from the route template, the method and the path
parameters. The rule, read from the end of the path (after dropping leading
``/api``, version segments such as ``v1`` and the namespaces ``admin``,
``owner`` and ``panel``):

1. The path ends with a parameter (``/servers/{server_id}``): the resource is
   the collection before it, singularised, and its id is the parameter;
   the action comes from the method: POST ``create``, PUT and PATCH
   ``update``, DELETE ``delete``.
   ``DELETE /api/admin/api-keys/{key_id}`` is ``api-key.delete``.
2. One word after the last parameter:

   - a plural noun is a sub-collection (``POST /servers/{server_id}/backups``
     is ``backup.create``, without a resource id);
   - anything else is a verb acting on the parameter's resource
     (``POST /api/jobs/{job_id}/retry`` is ``job.retry`` on that job).

3. No parameter, or two or more words after the last one: a plural last word
   is a collection acted on by the method (``POST /api/servers`` is
   ``server.create``, ``POST /servers/{id}/network/allocations`` is
   ``allocation.create``); otherwise the last word is a verb on the word
   before it (``POST /api/auth/login`` is ``auth.login``,
   ``POST /servers/{id}/files/write`` is ``file.write``).

``me`` stands for the caller: ``PUT /api/users/me`` is ``user.update`` on the
caller's own user. Singular forms come from a few English rules plus a table
of exceptions; hyphenated names singularise their last word
(``alert-rules`` -> ``alert-rule``).

The metadata holds the method, the route template and the path parameters.
Parameters whose names suggest a credential (token, secret, password, code)
are redacted and never used as the resource id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_LEADING_NAMESPACES = frozenset({"api", "admin", "owner", "panel"})
_VERSION = re.compile(r"^v\d+$")
_SECRET_PARAM = re.compile(r"token|secret|password|passwd|code|otp", re.IGNORECASE)
REDACTED = "[redacted]"
CALLER_SEGMENT = "me"

METHOD_ACTIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}

# Words the suffix rules get wrong.
_IRREGULAR = {
    "aliases": "alias",
    "analyses": "analysis",
    "caches": "cache",
    "children": "child",
    "cookies": "cookie",
    "indices": "index",
    "movies": "movie",
    "people": "person",
    "statuses": "status",
}
# Words that end in "s" but are not plurals.
_UNCOUNTABLE = frozenset(
    {"access", "analytics", "dns", "news", "sms", "ssl", "status", "https", "stats"}
)


def singular(name: str) -> str:
    """``servers`` -> ``server``, ``api-keys`` -> ``api-key``, ``policies`` -> ``policy``."""
    head, sep, word = name.rpartition("-")
    return f"{head}{sep}{_singular_word(word)}"


def _singular_word(word: str) -> str:
    lower = word.lower()
    if lower in _IRREGULAR:
        return _IRREGULAR[lower]
    if lower in _UNCOUNTABLE:
        return lower
    if lower.endswith("ies") and len(lower) > 4:
        return lower[:-3] + "y"
    if lower.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return lower[:-2]
    if lower.endswith("s") and not lower.endswith(("ss", "us", "is")):
        return lower[:-1]
    return lower


def is_plural(name: str) -> bool:
    return singular(name) != name.lower()


@dataclass(frozen=True, slots=True)
class DerivedAction:
    action: str
    resource_type: str
    resource_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    value: str | None


def derive_action(
    method: str, route: str | None, path_params: Mapping[str, Any], *, caller_id: str | None
) -> DerivedAction:
    """The generic entry of a successful mutating request (see the module's rule)."""
    method = method.upper()
    verb = METHOD_ACTIONS.get(method, method.lower())
    params = {
        name: (REDACTED if _SECRET_PARAM.search(name) else str(value))
        for name, value in path_params.items()
    }
    metadata: dict[str, Any] = {"method": method, "route": route}
    if params:
        metadata["params"] = params
    if not route or not route.startswith("/"):
        return DerivedAction(f"request.{verb}", "request", None, metadata)

    tokens: list[str | _Param] = []
    for segment in route.strip("/").split("/"):
        if not segment:
            continue
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1].split(":", 1)[0]  # "{path:path}" converters
            value = params.get(name)
            tokens.append(_Param(name, None if value == REDACTED else value))
        elif segment == CALLER_SEGMENT:
            tokens.append(_Param(CALLER_SEGMENT, caller_id))
        elif not any(isinstance(token, str) for token in tokens) and (
            segment.lower() in _LEADING_NAMESPACES or _VERSION.match(segment.lower())
        ):
            continue
        else:
            tokens.append(segment.lower())
    resource_type, action, resource_id = _resolve(tokens, verb)
    return DerivedAction(f"{resource_type}.{action}", resource_type, resource_id, metadata)


def _resolve(tokens: list[str | _Param], verb: str) -> tuple[str, str, str | None]:
    """``(resource type, action, resource id)`` from the path's words and parameters."""
    param: _Param | None = None
    owner: str | None = None  # the word before the last parameter
    trailing: list[str] = []  # the words after it
    for token in tokens:
        if isinstance(token, _Param):
            param, owner = token, (trailing[-1] if trailing else owner)
            trailing = []
        else:
            trailing.append(token)
    if param is not None and len(trailing) <= 1:
        resource = singular(owner or param.name.removesuffix("_id"))
        if not trailing:
            return resource, verb, param.value
        word = trailing[0]
        if is_plural(word):
            return singular(word), verb, None
        return resource, word, param.value
    if not trailing:
        return "request", verb, None
    last = trailing[-1]
    if len(trailing) == 1 or is_plural(last):
        return singular(last), verb, None
    return singular(trailing[-2]), last, None
