"""The state machine table of the Catalyst appendix."""

import pytest

from hostplane.core.errors import Conflict, Locked
from hostplane.infra.servers import lifecycle
from hostplane.infra.servers.lifecycle import STATES, TRANSITIONS

EXPECTED = {
    ("stopped", "installing"), ("stopped", "starting"), ("stopped", "transferring"), ("stopped", "suspended"),
    ("installing", "stopped"), ("installing", "install_failed"), ("installing", "crashed"), ("installing", "suspended"),
    ("install_failed", "installing"), ("install_failed", "suspended"),
    ("starting", "running"), ("starting", "stopping"), ("starting", "stopped"), ("starting", "crashed"), ("starting", "suspended"),
    ("running", "stopping"), ("running", "stopped"), ("running", "crashed"), ("running", "starting"), ("running", "suspended"),
    ("stopping", "stopped"), ("stopping", "crashed"), ("stopping", "suspended"),
    ("crashed", "starting"), ("crashed", "stopped"), ("crashed", "installing"), ("crashed", "transferring"), ("crashed", "suspended"),
    ("transferring", "stopped"), ("transferring", "crashed"),
    ("suspended", "stopped"),
}  # fmt: skip


def test_the_table_is_exactly_the_documented_lifecycle() -> None:
    assert set(TRANSITIONS) == set(STATES)
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == EXPECTED


@pytest.mark.parametrize("current", STATES)
@pytest.mark.parametrize("wanted", STATES)
def test_check_transition(current: str, wanted: lifecycle.State) -> None:
    if (current, wanted) in EXPECTED:
        assert lifecycle.check_transition(current, wanted) == wanted
    elif current == "suspended":
        with pytest.raises(Locked):
            lifecycle.check_transition(current, wanted)
    else:
        with pytest.raises(Conflict) as raised:
            lifecycle.check_transition(current, wanted)
        assert raised.value.status == 409
        assert current in raised.value.message


def test_ensure_off() -> None:
    lifecycle.ensure_off("stopped", action="x")
    lifecycle.ensure_off("crashed", action="x")
    with pytest.raises(Conflict, match="running"):
        lifecycle.ensure_off("running", action="x")
    with pytest.raises(Locked):
        lifecycle.ensure_off("suspended", action="x")


def test_a_failed_install_is_retried_or_deleted_never_started() -> None:
    assert lifecycle.check_transition("installing", "install_failed") == "install_failed"
    assert lifecycle.check_transition("install_failed", "installing") == "installing"
    for wanted in ("starting", "stopped", "running", "transferring"):
        with pytest.raises(Conflict):
            lifecycle.check_transition("install_failed", wanted)  # type: ignore[arg-type]
    lifecycle.ensure_off("install_failed", action="delete it", allowed=lifecycle.DELETABLE)
    with pytest.raises(Conflict):
        lifecycle.ensure_off("install_failed", action="change its resources")


def test_every_passing_state_has_an_end() -> None:
    from hostplane.infra.servers.sweeper import ENDS

    assert set(ENDS) == set(lifecycle.TRANSITIONAL)
    for state, end in ENDS.items():
        assert lifecycle.can_transition(state, end), (state, end)
