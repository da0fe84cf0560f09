"""The generic entry of a mutating request, derived from its route."""

import pytest

from hostplane.platform.audit.derivation import derive_action, singular


@pytest.mark.parametrize(
    ("method", "route", "params", "expected"),
    [
        ("POST", "/api/jobs/{job_id}/retry", {"job_id": "j1"}, ("job.retry", "job", "j1")),
        ("POST", "/api/servers", {}, ("server.create", "server", None)),
        ("PUT", "/api/users/me", {}, ("user.update", "user", "caller")),
        ("PUT", "/api/users/{user_id}", {"user_id": "u9"}, ("user.update", "user", "u9")),
        (
            "DELETE",
            "/api/admin/api-keys/{key_id}",
            {"key_id": "k1"},
            ("api-key.delete", "api-key", "k1"),
        ),
        (
            "POST",
            "/api/servers/{server_id}/backups",
            {"server_id": "s1"},
            ("backup.create", "backup", None),
        ),
        (
            "POST",
            "/api/servers/{server_id}/backups/{backup_id}/restore",
            {"server_id": "s1", "backup_id": "b1"},
            ("backup.restore", "backup", "b1"),
        ),
        (
            "POST",
            "/api/servers/{server_id}/files/write",
            {"server_id": "s1"},
            ("file.write", "file", None),
        ),
        (
            "POST",
            "/api/servers/{server_id}/network/allocations",
            {"server_id": "s1"},
            ("allocation.create", "allocation", None),
        ),
        (
            "PATCH",
            "/api/invoices/{invoice_id}/status",
            {"invoice_id": "i1"},
            ("invoice.status", "invoice", "i1"),
        ),
        ("POST", "/api/alerts/bulk-resolve", {}, ("alert.bulk-resolve", "alert", None)),
        ("POST", "/api/auth/login", {}, ("auth.login", "auth", None)),
        ("PATCH", "/api/admin/config", {}, ("config.update", "config", None)),
        ("POST", "/api/email/mailboxes", {}, ("mailbox.create", "mailbox", None)),
        (
            "PUT",
            "/api/v1/owner/panel/cashouts/{cashout_id}/approve",
            {"cashout_id": "c1"},
            ("cashout.approve", "cashout", "c1"),
        ),
        ("POST", "/api/v1/settings/cache/clear", {}, ("cache.clear", "cache", None)),
        ("POST", "/api/alert-rules", {}, ("alert-rule.create", "alert-rule", None)),
        ("POST", "<unmatched>", {}, ("request.create", "request", None)),
    ],
)
def test_actions_come_from_the_route(
    method: str, route: str, params: dict[str, str], expected: tuple[str, str, str | None]
) -> None:
    derived = derive_action(method, route, params, caller_id="caller")
    assert (derived.action, derived.resource_type, derived.resource_id) == expected
    assert derived.metadata["method"] == method and derived.metadata["route"] == route
    assert derived.metadata.get("params", {}) == params


def test_credentials_in_the_path_are_never_recorded() -> None:
    derived = derive_action(
        "POST", "/api/auth/reset/{reset_token}", {"reset_token": "s3cr3t"}, caller_id=None
    )
    assert derived.resource_id is None
    assert derived.metadata["params"] == {"reset_token": "[redacted]"}
    assert "s3cr3t" not in repr(derived)


@pytest.mark.parametrize(
    ("plural", "one"),
    [
        ("servers", "server"),
        ("policies", "policy"),
        ("addresses", "address"),
        ("mailboxes", "mailbox"),
        ("databases", "database"),
        ("statuses", "status"),
        ("status", "status"),
        ("access", "access"),
        ("dns", "dns"),
        ("api-keys", "api-key"),
        ("config", "config"),
    ],
)
def test_singular(plural: str, one: str) -> None:
    assert singular(plural) == one
