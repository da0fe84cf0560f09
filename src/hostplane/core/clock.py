"""The one source of "now" for the whole code base.

Everything that stores or compares times calls :func:`utcnow`, so tests can
move time forward without sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC) + _offset


@contextmanager
def shifted(by: timedelta) -> Iterator[None]:
    """Move the clock forward (or back) for the duration of the block."""
    global _offset
    previous = _offset
    _offset = previous + by
    try:
        yield
    finally:
        _offset = previous


def isoformat(moment: datetime, *, timespec: str = "milliseconds") -> str:
    """ISO 8601 in UTC with a ``Z`` suffix (milliseconds unless asked otherwise)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not allowed; use hostplane.core.clock.utcnow()")
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
