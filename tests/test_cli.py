"""The ``hostplane`` command's contract: flags, no prompts without a terminal, one-line errors."""

import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET
from tests.support.processes import base_env, free_port, hostplane_command


def run(
    *args: str, data_dir: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = base_env(**({"HOSTPLANE_SECRET_KEY": TEST_SECRET} | env))
    return subprocess.run(
        hostplane_command(*args, "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hostplane: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


def test_migrate_then_admin_create_without_prompts(tmp_path: Path) -> None:
    migrated = run("migrate", data_dir=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "revision" in migrated.stdout

    created = run(
        "admin",
        "create",
        "--email",
        "Ops@Example.com",
        "--password",
        "long enough pw",
        "--username",
        "ops",
        data_dir=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    assert "created admin ops@example.com (username ops" in created.stdout

    again = run(
        "admin",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "long enough pw",
        data_dir=tmp_path,
    )
    assert_one_line_error(again, "already exists")


def test_admin_create_refuses_weak_passwords_and_missing_flags(tmp_path: Path) -> None:
    run("migrate", data_dir=tmp_path)
    assert_one_line_error(
        run("admin", "create", "--email", "a@b.co", "--password", "short", data_dir=tmp_path),
        "min 8",
    )
    assert_one_line_error(
        run("admin", "create", "--email", "a@b.co", data_dir=tmp_path), "--password"
    )


def test_admin_password_sets_a_new_password(tmp_path: Path) -> None:
    run("migrate", data_dir=tmp_path)
    assert (
        run(
            "admin",
            "create",
            "--email",
            "a@b.co",
            "--password",
            "first password",
            data_dir=tmp_path,
        ).returncode
        == 0
    )
    changed = run("admin", "password", "--email", "a@b.co", data_dir=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("password of a@b.co changed: ")
    assert_one_line_error(
        run("admin", "password", "--email", "nobody@b.co", data_dir=tmp_path), "No account"
    )


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(
        run("migrate", data_dir=tmp_path, HOSTPLANE_JOBS__MAX_ATTEMPTS="lots"),
        "invalid configuration",
        "jobs.max_attempts",
    )
    (tmp_path / "hostplane.toml").write_text("prot = 8080\n")
    assert_one_line_error(run("migrate", data_dir=tmp_path), "invalid configuration", "prot")


def test_placeholder_secret_is_refused(tmp_path: Path) -> None:
    result = run("serve", data_dir=tmp_path, HOSTPLANE_SECRET_KEY="change-me")
    assert_one_line_error(result, "secret_key is a placeholder")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port), data_dir=tmp_path)
    assert_one_line_error(result, f"port {port}", "already in use")


def test_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    result = run(
        "serve",
        "--port",
        str(free_port()),
        data_dir=tmp_path,
        HOSTPLANE_DATABASE_URL="postgresql://hp:hunter2@127.0.0.1:1/hostplane",
    )
    assert_one_line_error(result, "cannot reach the database", "hp:***@127.0.0.1:1")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("to_file", [True, False])
def test_openapi_prints_the_document(tmp_path: Path, to_file: bool) -> None:
    target = tmp_path / "openapi.json"
    result = run(
        "openapi",
        *(["--output", str(target)] if to_file else []),
        data_dir=tmp_path,
        HOSTPLANE_SECRET_KEY="",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(target.read_text() if to_file else result.stdout)
    assert "/api/jobs" in document["paths"]
    assert "/health" in document["paths"]


def test_keys_rotate_starts_a_new_signing_key(tmp_path: Path) -> None:
    assert run("migrate", data_dir=tmp_path).returncode == 0
    first = run("keys", "rotate", data_dir=tmp_path)
    second = run("keys", "rotate", data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("new signing key ")
    assert first.stdout.split()[3] != second.stdout.split()[3]


def test_templates_import_turns_an_egg_into_a_template(tmp_path: Path) -> None:
    egg = {
        "meta": {"version": "PTDL_v2"},
        "name": "Paper",
        "docker_images": {"Java 21": "ghcr.io/pterodactyl/yolks:java_21"},
        "startup": "java -Xms128M -Xmx{{SERVER_MEMORY}}M -jar {{SERVER_JARFILE}}",
        "config": {"stop": "stop"},
        "scripts": {
            "installation": {"script": "#!/bin/ash\necho installing", "container": "alpine"}
        },
        "variables": [
            {
                "env_variable": "SERVER_JARFILE",
                "default_value": "server.jar",
                "rules": "required|string",
            }
        ],
    }
    (tmp_path / "egg.json").write_text(json.dumps(egg))
    assert run("migrate", data_dir=tmp_path).returncode == 0
    result = run("templates", "import", str(tmp_path / "egg.json"), data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "imported template 'Paper'" in result.stdout
    assert_one_line_error(
        run("templates", "import", str(tmp_path / "missing.json"), data_dir=tmp_path), "cannot read"
    )


def test_jobs_watch_follows_a_job_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from hostplane.app import build_runtime
    from hostplane.cli import _settings
    from hostplane.platform.jobs import service as jobs

    assert run("migrate", data_dir=tmp_path).returncode == 0
    monkeypatch.setenv("HOSTPLANE_SECRET_KEY", TEST_SECRET)

    async def make_jobs() -> tuple[str, str]:
        runtime = build_runtime(_settings(tmp_path))
        try:
            async with runtime.unit_of_work() as session:
                done = await jobs.enqueue(session, "backups.create", backup_id="b1")
                broken = await jobs.enqueue(session, "transfers.run", transfer_id="t1")
                done.status, done.progress = "succeeded", 100
                broken.status, broken.progress = "failed", 40
                broken.error_message = "the node did not answer in time"
                return done.id, broken.id
        finally:
            await runtime.engine.dispose()

    done_id, broken_id = asyncio.run(make_jobs())
    watched = run("jobs", "watch", done_id, data_dir=tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert "100%" in watched.stdout and f"job {done_id} succeeded" in watched.stdout
    assert_one_line_error(
        run("jobs", "watch", broken_id, data_dir=tmp_path),
        "failed: the node did not answer in time",
    )
    assert_one_line_error(run("jobs", "watch", "nope", data_dir=tmp_path), "no job nope")


def test_admin_create_prepares_a_fresh_folder_like_up(tmp_path: Path) -> None:
    """Scripted installs create the first operator before the first start."""
    folder = tmp_path / "fresh"
    environment = base_env()  # no HOSTPLANE_SECRET_KEY: the folder must provide one
    created = subprocess.run(
        hostplane_command(
            "admin",
            "create",
            "--email",
            "first@example.com",
            "--password",
            "long enough pw",
            "--role",
            "owner",
            "--data-dir",
            str(folder),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert "created owner first@example.com" in created.stdout
    config = folder / "hostplane.toml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert "secret_key" in config.read_text()
    assert (folder / "hostplane.db").exists()


def test_ledger_verify_checks_balances_against_entries(tmp_path: Path) -> None:
    import asyncio
    import sqlite3

    from hostplane.app import build_runtime
    from hostplane.commerce.wallet import service as wallet
    from hostplane.core.config import load_settings
    from hostplane.identity.tenants.service import ensure_default_tenant
    from tests.support.factories import make_user

    assert run("migrate", data_dir=tmp_path).returncode == 0
    empty = run("ledger", "verify", data_dir=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "ok: 0 movements on 0 accounts balance"

    async def spend() -> None:
        runtime = build_runtime(load_settings(data_dir=tmp_path, secret_key=TEST_SECRET))
        try:
            async with runtime.unit_of_work() as session:
                tenant = await ensure_default_tenant(session)
                user = await make_user(session, tenant=tenant)
                for n, amount in enumerate((50, -20)):
                    await wallet.move(
                        session,
                        tenant_id=tenant.id,
                        user_id=user.id,
                        currency="coins",
                        amount=amount,
                        kind="test",
                        key=f"move:{n}",
                        system="rewards",
                    )
        finally:
            await runtime.engine.dispose()

    asyncio.run(spend())
    good = run("ledger", "verify", data_dir=tmp_path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "ok: 2 movements on 2 accounts balance"

    database = next(tmp_path.glob("*.db"))
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE ledger_accounts SET balance = 999 WHERE owner <> 'system'")
    bad = run("ledger", "verify", data_dir=tmp_path)
    assert_one_line_error(bad, "holds 999 but its entries sum to 30")
