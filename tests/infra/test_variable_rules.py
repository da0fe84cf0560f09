"""The egg rule subset, the deny-list and the built-in names, without a database."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hostplane.core.errors import ValidationFailed
from hostplane.infra.servers.variables import builtin_variables
from hostplane.infra.templates.rules import InvalidRules, RuleViolation, check, parse_rules
from hostplane.infra.templates.variables import check_name, denied_reason, is_builtin


def _passes(value: str, rules: str) -> bool:
    try:
        check("V", value, parse_rules("V", rules))
    except RuleViolation:
        return False
    return True


@pytest.mark.parametrize(
    ("rules", "good", "bad"),
    [
        ("required|string|max:5", ["abcde"], ["abcdef", ""]),
        ("nullable|string|min:3", ["abc", ""], ["ab"]),
        ("nullable|integer|between:1,100", ["1", "100", "+7"], ["0", "101", "1.5", "ten"]),
        ("numeric|min:0.5", ["0.5", "1e3"], ["0.4", "x"]),
        ("integer|max:10", ["10", "-3"], ["11"]),
        ("in:a,b", ["a", "b"], ["c", "a,b"]),
        ("not_in:root,admin", ["bob"], ["root"]),
        ("boolean", ["0", "1", "true", "false"], ["yes", "2"]),
        ("regex:/^(a|b)+$/", ["abba"], ["abc"]),
        ("regex:/^[A-Z]+$/i", ["abc"], ["ab1"]),
        ("not_regex:/\\s/", ["one"], ["o ne"]),
        ("alpha_dash", ["a-b_c1"], ["a b"]),
        ("alpha_num", ["ab1"], ["a-b"]),
        ("digits:4", ["1234"], ["123", "12a4"]),
        ("digits_between:2,3", ["12", "123"], ["1", "1234"]),
        ("size:3", ["abc"], ["ab"]),
        ("url", ["https://example.com/x"], ["example.com", "https://"]),
        ("ipv4", ["10.0.0.1"], ["::1", "10.0.0.256"]),
        ("ip", ["::1", "10.0.0.1"], ["host"]),
        ("starts_with:paper,spigot", ["paper.jar"], ["vanilla.jar"]),
        ("ends_with:.jar", ["x.jar"], ["x.sh"]),
        ("lowercase", ["abc"], ["Abc"]),
    ],
)
def test_rules_accept_and_refuse_like_laravel(rules: str, good: list[str], bad: list[str]) -> None:
    for value in good:
        assert _passes(value, rules), (rules, value)
    for value in bad:
        assert not _passes(value, rules), (rules, value)


def test_a_refusal_names_the_variable_and_the_rule() -> None:
    with pytest.raises(RuleViolation) as raised:
        check("PLAYERS", "101", parse_rules("PLAYERS", "required|integer|between:1,100"))
    assert raised.value.status == 400
    assert raised.value.details == {"variable": "PLAYERS", "rule": "between:1,100"}


def test_a_regex_keeps_its_pipes_and_lists_of_rules_work() -> None:
    rules = parse_rules("V", ["required", "regex:/^(a|b)$/", "max:1"])
    assert [str(rule) for rule in rules] == ["required", "regex:/^(a|b)$/", "max:1"]
    split = parse_rules("V", "regex:/^(a|b)$/|max:1")
    assert [str(rule) for rule in split] == ["regex:/^(a|b)$/", "max:1"]


@pytest.mark.parametrize(
    "rules", ["uuid", "required|timezone", "max", "max:x", "between:1", "regex:abc", "regex:/(/"]
)
def test_unknown_or_malformed_rules_are_refused(rules: str) -> None:
    with pytest.raises(InvalidRules):
        parse_rules("V", rules)


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "ld_preload",
        "LD_AUDIT",
        "PATH",
        "HOME",
        "SHELL",
        "IFS",
        "ENV",
        "BASH_ENV",
        "BASH_FUNC_x%%",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PYTHONWARNINGS",
        "PERL5OPT",
        "PERL5LIB",
        "NODE_OPTIONS",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "GCONV_PATH",
        "MALLOC_CHECK_",
        "GLIBC_TUNABLES",
    ],
)
def test_dangerous_names_are_denied_with_a_reason(name: str) -> None:
    assert denied_reason(name)


@pytest.mark.parametrize("name", ["MOTD", "SERVER_JARFILE", "PYTHONUNBUFFERED", "EULA"])
def test_ordinary_names_are_not_denied(name: str) -> None:
    assert denied_reason(name) is None
    check_name(name)


def test_every_builtin_the_panel_fills_is_unsettable() -> None:
    server = SimpleNamespace(allocated_memory_mb=512, uuid="u", name="n", primary_port=25565)
    node = SimpleNamespace(public_address="203.0.113.1")
    names = builtin_variables(server, node, {25565: 30001})  # type: ignore[arg-type]
    assert set(names) >= {"SERVER_MEMORY", "SERVER_PORT", "SERVER_HOST_PORT", "SERVER_IP"}
    for name in names:
        assert is_builtin(name), name
        with pytest.raises(ValidationFailed):
            check_name(name)
