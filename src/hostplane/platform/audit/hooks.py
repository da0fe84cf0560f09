"""Wiring the audit log into every unit of work."""

from __future__ import annotations

from hostplane.core.runtime import Runtime
from hostplane.platform.audit.service import before_commit


def install_audit(runtime: Runtime) -> None:
    """Seal audit entries into every transaction the runtime commits.

    Appends :func:`hostplane.platform.audit.service.before_commit` to the
    runtime's before-commit hooks (once, however often it is called): it
    writes what services recorded and the generic entry of a successful
    mutating request, in the transaction of the change itself.
    """
    if before_commit not in runtime.before_commit:
        runtime.before_commit.append(before_commit)
