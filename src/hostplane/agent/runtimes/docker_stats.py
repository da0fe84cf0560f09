"""Turning the engine's stats samples into :class:`ServerStats`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from hostplane.agent.runtime import ServerStats

_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def timestamp_ns(value: Any) -> int | None:
    """An RFC 3339 timestamp with nanoseconds (as the engine writes them) in ns."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.match(value)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    nanos = int((fraction or "0")[:9].ljust(9, "0"))
    return int(moment.timestamp()) * 1_000_000_000 + nanos


def _usage(section: Any) -> int | None:
    if not isinstance(section, dict):
        return None
    cpu_usage = section.get("cpu_usage")
    if not isinstance(cpu_usage, dict):
        return None
    total = cpu_usage.get("total_usage")
    return int(total) if isinstance(total, int | float) else None


def server_stats(server_id: str, sample: dict[str, Any]) -> ServerStats:
    """CPU % (100 = one core) over the sample's interval and memory in MB.

    CPU is Δ``total_usage`` / (``read`` - ``preread``): the Docker CLI's
    formula (Δusage / Δsystem * cores) reads about four times too high from
    Podman, whose ``system_cpu_usage`` does not advance like Docker's.
    """
    cpu = 0.0
    now, before = _usage(sample.get("cpu_stats")), _usage(sample.get("precpu_stats"))
    read, preread = timestamp_ns(sample.get("read")), timestamp_ns(sample.get("preread"))
    if now is not None and before is not None and read is not None and preread is not None:
        elapsed = read - preread
        if elapsed > 0 and now >= before:
            cpu = (now - before) / elapsed * 100.0
    memory = sample.get("memory_stats")
    usage = memory.get("usage") if isinstance(memory, dict) else None
    pids = sample.get("pids_stats")
    current = pids.get("current") if isinstance(pids, dict) else None
    return ServerStats(
        server_id=server_id,
        cpu_percent=round(cpu, 2),
        memory_mb=round(float(usage or 0) / 2**20, 2),
        processes=int(current or 0),
    )
