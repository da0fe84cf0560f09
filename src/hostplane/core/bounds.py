"""Bounds for the numbers and moments a client can send in a query.

A query value reaches SQL as a 64-bit integer or a timestamp; anything past
those ranges (``page=10**20``, ``before=1e30``, ``NaN``, year 0) is a 400
``VALIDATION_ERROR`` naming the field, decided here before the database sees
it. Pagination's own bounds live in :mod:`hostplane.core.pagination`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hostplane.core.errors import ValidationFailed

# The largest value a BIGINT column (and SQLite's INTEGER) holds.
DB_INT_MAX = 2**63 - 1


def _invalid(field: str, message: str, kind: str) -> ValidationFailed:
    return ValidationFailed(
        f"Invalid request: {field}: {message}",
        details={"fields": [{"field": field, "in": "query", "message": message, "type": kind}]},
    )


def parse_moment(value: str, *, field: str) -> datetime:
    """An ISO 8601 date or date-time in UTC; one without an offset is taken as UTC."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        # OverflowError: an offset that moves 0001-01-01 or 9999-12-31 out of range.
        raise _invalid(
            field,
            "an ISO 8601 date or date-time, e.g. 2026-01-25T02:29:17Z",
            "datetime_parsing",
        ) from None


def sequence_or_moment(value: str, *, field: str) -> int | datetime:
    """A positive integer id (up to :data:`DB_INT_MAX`) or an ISO 8601 moment."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Length first: int() of thousands of digits is slow, then refused.
        number = int(text) if len(text) <= len(str(DB_INT_MAX)) else DB_INT_MAX + 1
        if not 1 <= number <= DB_INT_MAX:
            raise _invalid(
                field, f"a number from 1 to {DB_INT_MAX}, or an ISO 8601 date-time", "range"
            )
        return number
    return parse_moment(text, field=field)
