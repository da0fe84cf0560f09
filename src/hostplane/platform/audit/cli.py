"""``hostplane audit ...`` (placeholder)."""

import typer

audit_cli = typer.Typer(help="The audit log.", no_args_is_help=True)
