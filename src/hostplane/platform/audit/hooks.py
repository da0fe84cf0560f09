"""Wiring the audit log into every unit of work (placeholder)."""

from __future__ import annotations

from hostplane.core.runtime import Runtime


def install_audit(runtime: Runtime) -> None:
    return None
