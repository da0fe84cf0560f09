"""CPU, memory and disk figures read straight from ``/proc`` (no psutil)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class GroupUsage:
    """Cumulative CPU seconds and resident memory of one process group."""

    cpu_seconds: float
    rss_bytes: int
    processes: int
    sampled_at: float


def group_usage(pgid: int) -> GroupUsage:
    """Sum ``utime + stime`` and RSS over every process whose group is ``pgid``."""
    ticks = 0
    rss_pages = 0
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ")".
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) < 22 or int(fields[2]) != pgid:
            continue
        ticks += int(fields[11]) + int(fields[12])
        rss_pages += int(fields[21])
        count += 1
    return GroupUsage(
        cpu_seconds=ticks / CLOCK_TICKS,
        rss_bytes=rss_pages * PAGE_SIZE,
        processes=count,
        sampled_at=time.monotonic(),
    )


def group_members(pgid: int) -> list[tuple[int, str]]:
    """``(pid, command name)`` of every process in group ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        close = raw.rfind(b")")
        fields = raw[close + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            name = raw[raw.find(b"(") + 1 : close].decode(errors="replace")
            members.append((int(entry.name), name))
    return members


def cpu_percent(before: GroupUsage, after: GroupUsage) -> float:
    """CPU use between two samples; 100 means one core fully busy."""
    elapsed = after.sampled_at - before.sampled_at
    if elapsed <= 0:
        return 0.0
    return max(0.0, (after.cpu_seconds - before.cpu_seconds) / elapsed * 100.0)


@dataclass(frozen=True)
class HostSample:
    busy: int
    total: int


def host_cpu_sample() -> HostSample:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return HostSample(busy=total - idle, total=total)


def host_cpu_percent(before: HostSample, after: HostSample) -> float:
    """Whole-machine CPU use between two samples, 0-100."""
    total = after.total - before.total
    return 0.0 if total <= 0 else (after.busy - before.busy) / total * 100.0


def memory_mb() -> tuple[float, float]:
    """(used, total) in MiB, "used" being total minus available."""
    info: dict[str, int] = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0])
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    return (total - available) / 1024, total / 1024


def disk_mb(path: Path) -> tuple[float, float]:
    """(used, total) in MiB of the file system holding ``path``."""
    usage = shutil.disk_usage(path)
    return usage.used / 2**20, usage.total / 2**20


def uptime_seconds() -> int:
    with open("/proc/uptime") as fh:
        return int(float(fh.read().split()[0]))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :][:1] != b"Z"
