"""``hostplane audit verify``, ``hostplane audit prune`` and ``hostplane audit reseal``.

Like every ``hostplane`` command: ``--data-dir`` (env ``HOSTPLANE_DATA_DIR``),
and any failure is one line on stderr (``hostplane: error: ...``) with exit
status 1. ``hostplane.cli`` imports this module, so nothing here imports it
back; the runtime is built lazily inside the commands.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from hostplane.core.clock import isoformat, utcnow
from hostplane.core.config import Settings, load_settings, redact_url
from hostplane.core.errors import HostplaneError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

audit_cli = typer.Typer(
    help="The audit log: verify its hash chains, prune old entries, reseal checkpoints.",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="HOSTPLANE_DATA_DIR", help="Folder for the database, config and files."
    ),
]


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"hostplane: error: {message}\n")
    raise SystemExit(1)


def _settings(data_dir: Path | None) -> Settings:
    try:
        return load_settings(data_dir=data_dir)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        _fail(f"invalid configuration: {problems}")
    except FileNotFoundError as exc:
        _fail(str(exc))


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(inner).strip()
    return (text.splitlines()[0] if text else type(inner).__name__)[:200]


def _in_transaction(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[T]], *, read_only: bool = False
) -> T:
    """Run ``work`` in one unit of work on the configured database; errors become one line."""

    async def run() -> T:
        from hostplane.app import build_runtime

        runtime = build_runtime(settings)
        try:
            async with runtime.unit_of_work(read_only=read_only) as session:
                return await work(session)
        finally:
            await runtime.engine.dispose()

    try:
        return asyncio.run(run())
    except HostplaneError as exc:
        _fail(exc.message)
    except (DBAPIError, OSError) as exc:
        _fail(f"cannot use the audit log at {redact_url(settings.database_url)}: {_reason(exc)}")


@audit_cli.command("verify")
def verify_command(data_dir: DataDirOption = None) -> None:
    """Check every chain of the audit log from its anchor to its head."""
    from hostplane.platform.audit.service import verify

    settings = _settings(data_dir)
    report = _in_transaction(settings, verify, read_only=True)
    if not report.ok:
        problem = report.breaks[0]
        more = len(report.breaks) - 1
        _fail(f"{problem}" + (f" (and {more} more broken chains)" if more else ""))
    typer.echo(f"ok: {report.entries} entries in {_chains(report.chains)} verified")


@audit_cli.command("prune")
def prune_command(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            "--older-than-days", min=0, help="Delete entries created more than this many days ago."
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Delete old entries; every chain stays verifiable from its new anchor."""
    from hostplane.platform.audit.service import prune

    if older_than_days is None:
        # Deleting history is never a default: the cutoff must be given.
        _fail("missing --older-than-days (how many days of entries to keep)")
    settings = _settings(data_dir)
    cutoff = utcnow() - timedelta(days=older_than_days)
    report = _in_transaction(settings, lambda session: prune(session, cutoff))
    typer.echo(
        f"pruned {report.deleted} entries older than {isoformat(report.cutoff)} "
        f"from {_chains(report.chains)}"
    )


@audit_cli.command("reseal")
def reseal_command(
    accept: Annotated[
        bool,
        typer.Option(
            "--accept",
            help="Confirm: accept every chain as it is now (after a secret_key change, "
            "or once a reported truncation has been investigated).",
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Sign each chain's checkpoint afresh where it objects; the act is itself audited."""
    from hostplane.platform.audit.reseal import reseal

    if not accept:
        # Accepting a finding is never a default: it must be asked for.
        _fail("missing --accept (reseal accepts every chain as it is now; see `audit verify`)")
    settings = _settings(data_dir)
    report = _in_transaction(settings, reseal)
    for chain, finding in sorted(report.accepted.items()):
        typer.echo(f"accepted {chain}: {finding}")
    typer.echo(f"resealed {_chains(len(report.accepted))} of {report.chains}")


def _chains(count: int) -> str:
    return f"{count} chain" if count == 1 else f"{count} chains"
