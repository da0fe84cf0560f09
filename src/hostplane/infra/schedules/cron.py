"""Five-field cron in an IANA time zone: validation and the next run time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from hostplane.core.errors import ValidationFailed

FIELDS = ("minute", "hour", "dayOfMonth", "month", "dayOfWeek")
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = {
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    "sun", "mon", "tue", "wed", "thu", "fri", "sat",
}  # fmt: skip


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; 400 naming ``timezone`` when there is none."""
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(
            f"Unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin",
            details={"field": "timezone"},
        ) from exc


def _check_field(index: int, text: str) -> None:
    low, high = _RANGES[index]
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(part)
        if base == "*":
            continue
        for bound in base.split("-", 1):
            if bound.lower() in _NAMES and index >= 3:
                continue
            if not bound.isdigit() or not low <= int(bound) <= high:
                raise ValueError(part)


def validate(expression: str) -> str:
    """The normalised expression; 400 naming the field (``schedule.hour``, ...) when wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValidationFailed(
            "A schedule has five fields: minute hour day-of-month month day-of-week",
            details={"field": "schedule", "fields": len(fields)},
        )
    for index, text in enumerate(fields):
        try:
            _check_field(index, text)
        except ValueError:
            name = FIELDS[index]
            low, high = _RANGES[index]
            raise ValidationFailed(
                f"The schedule's {name} field {text!r} is not valid (values {low}-{high})",
                details={"field": f"schedule.{name}", "value": text},
            ) from None
    normalised = " ".join(fields)
    if not croniter.is_valid(normalised):
        raise ValidationFailed(
            f"The schedule {normalised!r} is not a valid cron expression",
            details={"field": "schedule"},
        )
    return normalised


def next_run(expression: str, timezone: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expression`` matches in ``timezone``,
    in UTC (exact: to the minute, never a tick later)."""
    local = after.astimezone(zone(timezone))
    try:
        found = croniter(expression, local).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError) as exc:
        raise ValidationFailed(
            f"The schedule {expression!r} never matches", details={"field": "schedule"}
        ) from exc
    if not isinstance(found, datetime):  # croniter's return type follows its argument
        raise TypeError(type(found).__name__)
    return found.astimezone(ZoneInfo("UTC"))
