"""The Laravel validation rules that Pterodactyl eggs put on their variables.

An egg writes ``"rules": "required|string|max:20"`` (or a list of rules).
Only the subset real eggs use is understood; :func:`parse_rules` refuses any
other rule, so a template never holds a rule that would silently pass.

Semantics follow Laravel where it matters to a customer: an empty value
fails only ``required`` (the other rules are not run on it, as in Laravel);
``min``/``max``/``between``/``size`` compare the number when the rules also
say ``integer`` or ``numeric``, else the length in characters.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hostplane.core.errors import ValidationFailed

# Rules without an argument, and those that take one (``name:argument``).
_FLAGS = frozenset(
    {
        "required",
        "nullable",
        "sometimes",
        "string",
        "integer",
        "int",
        "numeric",
        "boolean",
        "bool",
        "alpha",
        "alpha_num",
        "alpha_dash",
        "url",
        "active_url",
        "ip",
        "ipv4",
        "ipv6",
        "lowercase",
        "uppercase",
    }
)
_WITH_ARGUMENT = frozenset(
    {
        "min",
        "max",
        "between",
        "size",
        "in",
        "not_in",
        "regex",
        "not_regex",
        "digits",
        "digits_between",
        "starts_with",
        "ends_with",
    }
)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#]+\S*$")
_PCRE_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "u": 0}
_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}


@dataclass(frozen=True)
class Rule:
    name: str
    argument: str | None = None

    def __str__(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument}"


class InvalidRules(ValidationFailed):
    def __init__(self, variable: str, rule: str, reason: str) -> None:
        super().__init__(
            f"Variable {variable}: rule {rule!r} {reason}",
            details={"variable": variable, "rule": rule},
        )


class RuleViolation(ValidationFailed):
    def __init__(self, variable: str, rule: Rule, reason: str) -> None:
        super().__init__(
            f"Variable {variable} fails rule {rule}: {reason}",
            details={"variable": variable, "rule": str(rule)},
        )


def _split(text: str) -> list[str]:
    """``a|regex:/x|y/|b`` -> ``["a", "regex:/x|y/", "b"]``: a regex may hold ``|``."""
    parts: list[str] = []
    position = 0
    while position < len(text):
        if text.startswith(("regex:", "not_regex:"), position):
            start = text.index(":", position) + 1
            end = _regex_end(text, start)
            parts.append(text[position:end])
            position = end + 1
            continue
        end = text.find("|", position)
        end = len(text) if end == -1 else end
        parts.append(text[position:end])
        position = end + 1
    return [part.strip() for part in parts if part.strip()]


def _regex_end(text: str, start: int) -> int:
    """Where a ``/pattern/flags`` that begins at ``start`` ends (the ``|`` after it, or the end)."""
    if start >= len(text):
        return start
    closing = _BRACKETS.get(text[start], text[start])
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == closing:
            after = index + 1
            while after < len(text) and text[after].isalpha():
                after += 1
            if after == len(text) or text[after] == "|":
                return after
        index += 1
    end = text.find("|", start)
    return len(text) if end == -1 else end


def compile_pcre(pattern: str) -> re.Pattern[str]:
    """A Python pattern from PHP's ``/pattern/flags`` (ValueError when it is not one)."""
    if len(pattern) < 2 or pattern[0].isalnum() or pattern[0] == "\\":
        raise ValueError("must be written /pattern/ with delimiters")
    closing = _BRACKETS.get(pattern[0], pattern[0])
    end = pattern.rfind(closing)
    if end <= 0:
        raise ValueError("has no closing delimiter")
    flags = 0
    for flag in pattern[end + 1 :]:
        if flag not in _PCRE_FLAGS:
            raise ValueError(f"uses the unsupported flag {flag!r}")
        flags |= _PCRE_FLAGS[flag]
    try:
        return re.compile(pattern[1:end], flags)
    except re.error as exc:
        raise ValueError(f"is not a valid pattern ({exc.msg})") from None


def _number(text: str, variable: str, rule: str) -> float:
    if not _NUMBER.match(text):
        raise InvalidRules(variable, rule, "needs a number")
    return float(text)


def parse_rules(variable: str, rules: str | Sequence[str] | None) -> list[Rule]:
    """The rules of ``variable``; 400 naming the first unknown or malformed one."""
    if rules is None:
        return []
    texts = _split(rules) if isinstance(rules, str) else [r for rule in rules for r in _split(rule)]
    parsed: list[Rule] = []
    for text in texts:
        name, colon, argument = text.partition(":")
        if name in _FLAGS and not colon:
            parsed.append(Rule(name))
            continue
        if name not in _WITH_ARGUMENT or not colon or not argument:
            reason = "needs an argument" if name in _WITH_ARGUMENT else "is not supported"
            raise InvalidRules(variable, text, reason)
        rule = Rule(name, argument)
        if name in ("min", "max", "size"):
            _number(argument, variable, text)
        elif name in ("between", "digits_between"):
            bounds = argument.split(",")
            if len(bounds) != 2:
                raise InvalidRules(variable, text, "needs two numbers: between:low,high")
            for bound in bounds:
                _number(bound.strip(), variable, text)
        elif name == "digits" and not argument.isdigit():
            raise InvalidRules(variable, text, "needs a whole number")
        elif name in ("regex", "not_regex"):
            try:
                compile_pcre(argument)
            except ValueError as exc:
                raise InvalidRules(variable, text, str(exc)) from None
        parsed.append(rule)
    return parsed


def rules_text(rules: str | Sequence[str] | None) -> str:
    """Rules as one ``a|b:c`` string (eggs write either form)."""
    if rules is None:
        return ""
    return rules if isinstance(rules, str) else "|".join(rules)


def _options(argument: str) -> list[str]:
    return [option.strip().strip('"') for option in argument.split(",")]


def _is_numeric_context(rules: Sequence[Rule]) -> bool:
    return any(rule.name in ("integer", "int", "numeric") for rule in rules)


def _measure(value: str, numeric: bool) -> float:
    return float(value) if numeric and _NUMBER.match(value) else float(len(value))


def check(variable: str, value: str, rules: Sequence[Rule]) -> None:
    """400 naming ``variable`` and the first rule ``value`` breaks."""
    names = {rule.name for rule in rules}
    if value == "":
        if "required" in names:
            raise RuleViolation(variable, Rule("required"), "a value is required")
        return
    numeric = _is_numeric_context(rules)
    for rule in rules:
        reason = _violation(rule, value, numeric)
        if reason is not None:
            raise RuleViolation(variable, rule, reason)


def _violation(rule: Rule, value: str, numeric: bool) -> str | None:
    name, argument = rule.name, rule.argument or ""
    unit = "" if numeric else " characters"
    if name in ("integer", "int"):
        return None if _INTEGER.match(value) else "must be a whole number"
    if name == "numeric":
        return None if _NUMBER.match(value) else "must be a number"
    if name in ("boolean", "bool"):
        return None if value in ("0", "1", "true", "false") else "must be 0, 1, true or false"
    if name == "min":
        limit = float(argument)
        return None if _measure(value, numeric) >= limit else f"must be at least {argument}{unit}"
    if name == "max":
        limit = float(argument)
        return None if _measure(value, numeric) <= limit else f"must be at most {argument}{unit}"
    if name == "size":
        return None if _measure(value, numeric) == float(argument) else f"must be {argument}{unit}"
    if name == "between":
        low, high = (float(b) for b in argument.split(","))
        measured = _measure(value, numeric)
        return None if low <= measured <= high else f"must be between {argument}{unit}"
    if name == "in":
        options = _options(argument)
        return None if value in options else f"must be one of {', '.join(options)}"
    if name == "not_in":
        return f"must not be {value}" if value in _options(argument) else None
    if name == "regex":
        return None if compile_pcre(argument).search(value) else "has the wrong format"
    if name == "not_regex":
        return "has the wrong format" if compile_pcre(argument).search(value) else None
    if name == "alpha":
        return None if value.isalpha() else "may hold only letters"
    if name == "alpha_num":
        return None if value.isalnum() else "may hold only letters and digits"
    if name == "alpha_dash":
        ok = value.replace("-", "").replace("_", "").isalnum()
        return None if ok else "may hold only letters, digits, dashes and underscores"
    if name == "digits":
        ok = value.isdigit() and len(value) == int(argument)
        return None if ok else f"must be {argument} digits"
    if name == "digits_between":
        low, high = (float(b) for b in argument.split(","))
        ok = value.isdigit() and low <= len(value) <= high
        return None if ok else f"must be between {argument} digits"
    if name in ("url", "active_url"):
        return None if _URL.match(value) else "must be a URL"
    if name in ("ip", "ipv4", "ipv6"):
        return _ip(value, name)
    if name == "starts_with":
        options = _options(argument)
        return None if value.startswith(tuple(options)) else f"must start with {argument}"
    if name == "ends_with":
        options = _options(argument)
        return None if value.endswith(tuple(options)) else f"must end with {argument}"
    if name == "lowercase":
        return None if value == value.lower() else "must be lowercase"
    if name == "uppercase":
        return None if value == value.upper() else "must be uppercase"
    # required, nullable, sometimes, string: every value that reached here passes.
    return None


def _ip(value: str, name: str) -> str | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address"
    if name == "ipv4" and address.version != 4:
        return "must be an IPv4 address"
    if name == "ipv6" and address.version != 6:
        return "must be an IPv6 address"
    return None
