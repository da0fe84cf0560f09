"""Pro-rating in integer minor units, to the second."""

from __future__ import annotations

from datetime import datetime

DAY_SECONDS = 86_400


def remaining_seconds(expires_at: datetime, now: datetime) -> int:
    """Whole seconds left in the term (0 once it ended)."""
    return max(0, int((expires_at - now).total_seconds()))


def prorated(price: int, period_seconds: int, seconds: int) -> int:
    """``price`` per ``period_seconds`` for ``seconds``, rounded half up to a minor unit.

    Integer arithmetic only: ``price * seconds`` is exact, and one rounding at
    the end keeps a charge and a later refund of the same span equal.
    """
    if period_seconds <= 0 or seconds <= 0 or price <= 0:
        return 0
    whole, rest = divmod(price * seconds, period_seconds)
    return whole + (1 if 2 * rest >= period_seconds else 0)
