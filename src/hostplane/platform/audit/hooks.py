"""Wiring the audit log into every unit of work."""

from __future__ import annotations

from hostplane.core.runtime import Runtime
from hostplane.platform.audit.checkpoint import SESSION_KEY, derive_key
from hostplane.platform.audit.service import before_commit


def install_audit(runtime: Runtime) -> None:
    """Seal audit entries into every transaction the runtime commits.

    Appends :func:`hostplane.platform.audit.service.before_commit` to the
    runtime's before-commit hooks (once, however often it is called): it
    writes what services recorded and the generic entry of a successful
    mutating request, in the transaction of the change itself, and signs
    each chain's checkpoint with a key derived from ``secret_key``.
    """
    if before_commit not in runtime.before_commit:
        runtime.before_commit.append(before_commit)
    # Every session of the runtime carries the checkpoint key, so sealing
    # (inside the commit, where no runtime is at hand) and verifying can use it.
    key = derive_key(runtime.settings.secret_key.get_secret_value())
    for factory in (runtime.sessions, runtime.read_sessions):
        if factory is not None:
            factory.configure(info={**(factory.kw.get("info") or {}), SESSION_KEY: key})
