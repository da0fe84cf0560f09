"""The server lifecycle of the Catalyst appendix, as an explicit state machine.

::

    stopped --install--> installing --> stopped
                                    installing --> install_failed --install--> installing
    stopped --start--> starting --> running --stop--> stopping --> stopped
                                      running --crash--> crashed --> starting | stopped

plus ``transferring`` (moving between nodes) and ``suspended`` (blocked from
every action until unsuspended). ``install_failed`` says the last install did
not finish (no image, a refused container, a failing script, an interrupted
or overdue install); the reason is on the server (``status_reason``) and the
only ways out are another install or a delete. :data:`TRANSITIONS` is the whole table; a
change outside it is refused with 409 naming the state.
"""

from __future__ import annotations

from typing import Final, Literal

from hostplane.core.errors import Conflict, Locked

State = Literal[
    "stopped",
    "installing",
    "install_failed",
    "starting",
    "running",
    "stopping",
    "crashed",
    "transferring",
    "suspended",
]
STATES: Final[tuple[State, ...]] = (
    "stopped",
    "installing",
    "install_failed",
    "starting",
    "running",
    "stopping",
    "crashed",
    "transferring",
    "suspended",
)

TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    "stopped": frozenset({"installing", "starting", "transferring", "suspended"}),
    # An install ends stopped (ready) or install_failed; crashed is an older
    # agent's way of saying it failed.
    "installing": frozenset({"stopped", "install_failed", "crashed", "suspended"}),
    # Retry the install, or suspend; nothing can start before an install ended well.
    "install_failed": frozenset({"installing", "suspended"}),
    "starting": frozenset({"running", "stopping", "stopped", "crashed", "suspended"}),
    # running -> starting is a restart the agent reports without a stop in between.
    "running": frozenset({"stopping", "stopped", "crashed", "starting", "suspended"}),
    "stopping": frozenset({"stopped", "crashed", "suspended"}),
    "crashed": frozenset({"starting", "stopped", "installing", "transferring", "suspended"}),
    "transferring": frozenset({"stopped", "crashed"}),
    "suspended": frozenset({"stopped"}),
}

# Not running: resources, allocations and deletion may change.
OFF: Final[frozenset[State]] = frozenset({"stopped", "crashed"})
# Running or on its way: console commands reach a process.
LIVE: Final[frozenset[State]] = frozenset({"starting", "running"})
# May be deleted (a server whose install failed has nothing running either).
DELETABLE: Final[frozenset[State]] = OFF | {"install_failed"}
# States that only last while something is under way; the sweeper ends any of
# them that outlives its timeout (:mod:`hostplane.infra.servers.sweeper`).
TRANSITIONAL: Final[frozenset[State]] = frozenset(
    {"installing", "starting", "stopping", "transferring"}
)


class InvalidTransition(Conflict):
    def __init__(self, current: str, wanted: str, action: str | None = None) -> None:
        verb = action or f"move to {wanted}"
        super().__init__(
            f"Cannot {verb} while the server is {current}",
            details={"status": current, "target": wanted},
        )


class ServerSuspended(Locked):
    def __init__(self) -> None:
        super().__init__("Server is suspended", details={"status": "suspended"})


def can_transition(current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS.get(current, frozenset())  # type: ignore[call-overload]


def check_transition(current: str, wanted: State, *, action: str | None = None) -> State:
    """``wanted`` if the table allows it from ``current``; else 423 (suspended) or 409."""
    if current == "suspended" and wanted != "stopped":
        raise ServerSuspended
    if not can_transition(current, wanted):
        raise InvalidTransition(current, wanted, action)
    return wanted


def ensure_not_suspended(current: str) -> None:
    if current == "suspended":
        raise ServerSuspended


def ensure_off(current: str, *, action: str, allowed: frozenset[State] = OFF) -> None:
    """423 when suspended; 409 unless the server is stopped (or crashed, or
    another state of ``allowed``)."""
    ensure_not_suspended(current)
    if current not in allowed:
        raise Conflict(
            f"Server must be stopped to {action} (it is {current})", details={"status": current}
        )
