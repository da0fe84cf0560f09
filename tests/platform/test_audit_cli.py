"""``hostplane audit verify`` and ``hostplane audit prune`` as an operator runs them."""

import asyncio
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from hostplane.app import build_runtime
from hostplane.core.clock import shifted
from hostplane.core.runtime import Runtime
from hostplane.models import metadata
from hostplane.platform.audit.chain import PLATFORM_CHAIN
from hostplane.platform.audit.models import AuditLog
from hostplane.platform.audit.service import record
from tests.conftest import POSTGRES_URL, TEST_SECRET, make_settings
from tests.support.databases import empty_database
from tests.support.processes import base_env, hostplane_command

# The table itself, for changing rows behind the application's back.
audit_logs = metadata.tables["audit_logs"]


def run(*args: str, data_dir: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = base_env(
        **({"HOSTPLANE_SECRET_KEY": TEST_SECRET, "HOSTPLANE_DATABASE_URL": url} | env)
    )
    return subprocess.run(
        hostplane_command(*args, "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def hostplane(
    *args: str, data_dir: Path, url: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *args, data_dir=data_dir, url=url, **env)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hostplane: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    async with empty_database(POSTGRES_URL, tmp_path) as url:
        yield url


@pytest.fixture
async def migrated(tmp_path: Path, database_url: str) -> AsyncIterator[Runtime]:
    """A migrated database (``hostplane migrate``) and a runtime on it for writing entries."""
    result = await hostplane("migrate", data_dir=tmp_path, url=database_url)
    assert result.returncode == 0, result.stderr
    runtime = build_runtime(make_settings(tmp_path, database_url=database_url))
    try:
        yield runtime
    finally:
        await runtime.engine.dispose()


async def write_entries(runtime: Runtime, count: int) -> None:
    for n in range(count):
        async with runtime.unit_of_work() as session:
            record(session, action="thing.poke", resource_type="thing", metadata={"n": n})


async def count_entries(runtime: Runtime) -> int:
    async with runtime.unit_of_work(read_only=True) as session:
        return int(await session.scalar(select(func.count()).select_from(AuditLog)) or 0)


async def test_verify_and_prune(tmp_path: Path, database_url: str, migrated: Runtime) -> None:
    with shifted(timedelta(days=-40)):
        await write_entries(migrated, 5)
    await write_entries(migrated, 2)

    verified = await hostplane("audit", "verify", data_dir=tmp_path, url=database_url)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == "ok: 7 entries in 1 chain verified\n"

    pruned = await hostplane(
        "audit", "prune", "--older-than-days", "30", data_dir=tmp_path, url=database_url
    )
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 5 entries older than ")
    assert pruned.stdout.rstrip().endswith("from 1 chain")
    assert await count_entries(migrated) == 3, "two recent entries and the prune's own"

    again = await hostplane("audit", "verify", data_dir=tmp_path, url=database_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "ok: 3 entries in 1 chain verified\n"


async def test_verify_names_the_chain_and_entry_that_were_tampered_with(
    tmp_path: Path, database_url: str, migrated: Runtime
) -> None:
    await write_entries(migrated, 4)
    async with migrated.engine.begin() as connection:
        await connection.execute(
            update(audit_logs).where(audit_logs.c.seq == 2).values(metadata={"n": "rewritten"})
        )
    result = await hostplane("audit", "verify", data_dir=tmp_path, url=database_url)
    line = one_line_error(result)
    assert f"audit chain {PLATFORM_CHAIN} is broken at sequence 2" in line
    assert result.stdout == ""


async def test_verify_fails_when_the_newest_entries_are_cut_off_and_the_head_rewound(
    tmp_path: Path, database_url: str, migrated: Runtime
) -> None:
    await write_entries(migrated, 8)
    heads = metadata.tables["audit_chain_heads"]
    async with migrated.engine.begin() as connection:
        kept_hash = await connection.scalar(select(audit_logs.c.hash).where(audit_logs.c.seq == 5))
        await connection.execute(delete(audit_logs).where(audit_logs.c.seq > 5))
        await connection.execute(update(heads).values(seq=5, hash=kept_hash))
    result = await hostplane("audit", "verify", data_dir=tmp_path, url=database_url)
    line = one_line_error(result)
    assert f"audit chain {PLATFORM_CHAIN} is broken at sequence 6" in line
    assert "truncated after checkpoint 8" in line and "entries 6 to 8 were removed" in line
    assert result.stdout == ""

    # Verified with another secret, the untouched checkpoint itself is refused.
    other = await hostplane(
        "audit",
        "verify",
        data_dir=tmp_path,
        url=database_url,
        HOSTPLANE_SECRET_KEY=TEST_SECRET + "-another",
    )
    assert "altered or forged" in one_line_error(other)

    # Accepting the finding takes the secret and an explicit --accept.
    unconfirmed = await hostplane("audit", "reseal", data_dir=tmp_path, url=database_url)
    assert "--accept" in one_line_error(unconfirmed)
    resealed = await hostplane("audit", "reseal", "--accept", data_dir=tmp_path, url=database_url)
    assert resealed.returncode == 0, resealed.stderr
    assert resealed.stdout.splitlines() == [
        f"accepted {PLATFORM_CHAIN}: {line.removeprefix('hostplane: error: ')}",
        "resealed 1 chain of 1",
    ]
    verified = await hostplane("audit", "verify", data_dir=tmp_path, url=database_url)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == "ok: 6 entries in 1 chain verified\n", "five kept and the reseal"


async def test_failures_are_one_line(tmp_path: Path, database_url: str) -> None:
    unmigrated = one_line_error(
        await hostplane("audit", "verify", data_dir=tmp_path, url=database_url)
    )
    assert "cannot use the audit log" in unmigrated
    bad_config = one_line_error(
        await hostplane(
            "audit",
            "prune",
            "--older-than-days",
            "30",
            data_dir=tmp_path,
            url=database_url,
            HOSTPLANE_JOBS__MAX_ATTEMPTS="lots",
        )
    )
    assert "invalid configuration" in bad_config and "jobs.max_attempts" in bad_config
    missing = one_line_error(await hostplane("audit", "prune", data_dir=tmp_path, url=database_url))
    assert "--older-than-days" in missing
