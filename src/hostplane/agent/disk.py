"""How much disk each server uses, and the budget its allocation leaves.

Usage is the space a server's folder takes on the node's disk: allocated
blocks (``st_blocks * 512``), not apparent sizes. A sparse file that claims
terabytes but holds nothing costs nothing, and a file full of data costs
what it holds whatever it claims; either way the figure is what the node
actually lost. Everything the agent writes itself (uploads, copies,
extractions, restores) is written densely, so it is counted in full.

The walk never follows a link (a link costs its own inode, never its
target's), opens every folder relative to its parent with ``O_NOFOLLOW`` (a
folder swapped for a link mid-walk is skipped, not followed), and counts a
file with several hard links once.

A walk of a large tree takes a while (see docs/decisions.md for the figures
measured here), so the figure is cached per server and walked again once it
is older than twenty times its last walk took (so walking costs at most
about 5% of one core per server), but at least every
:data:`REFRESH_SECONDS` and at most every :data:`MIN_REFRESH_SECONDS`: a
small folder is measured every few seconds, a huge one about once a minute.
Between walks the figure is kept current by the agent's own writes: each operation takes a :class:`Quota` and charges what
it writes before writing it, so two uploads at once cannot both take the
last free megabyte. The running game's own writes are only seen by the next
walk.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostplane.agent.files.confine import DIR_FLAGS, open_relative
from hostplane.agent.files.errors import DiskLimitExceeded
from hostplane.agent.runtime import LAST_START, AgentRuntimeError
from hostplane.agent.supervisor import read_json

MB = 2**20
REFRESH_SECONDS = 60.0
"""A cached figure older than this is always walked again before it is relied on."""
MIN_REFRESH_SECONDS = 2.0
"""A figure younger than this is never walked again (but for :meth:`DiskUsage.refresh`)."""
WALK_SHARE = 20
"""A figure is fresh for this many times as long as its walk took."""


def limit_bytes(limit_mb: int | None) -> int | None:
    """The allocation in bytes; ``None`` for unlimited (no figure, 0 or negative,
    Pterodactyl's convention for "no limit")."""
    if limit_mb is None or limit_mb <= 0:
        return None
    return limit_mb * MB


def measure(folder: Path) -> int:
    """The bytes ``folder`` and everything below it take on disk (0 if missing)."""
    try:
        top = os.open(folder, DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    total = 0
    seen: set[tuple[int, int]] = set()
    try:
        total += os.fstat(top).st_blocks * 512
        # Relative paths rather than open descriptors: a deep tree cannot run
        # the agent out of descriptors, and there is no recursion limit.
        pending: deque[tuple[str, ...]] = deque([()])
        while pending:
            parts = pending.popleft()
            try:
                fd = open_relative(top, parts)
            except OSError:
                # Removed, or replaced by a link or a file, since it was listed.
                continue
            try:
                with os.scandir(fd) as scan:
                    for item in scan:
                        try:
                            info = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if stat.S_ISDIR(info.st_mode):
                            pending.append((*parts, item.name))
                        elif info.st_nlink > 1:
                            key = (info.st_dev, info.st_ino)
                            if key in seen:
                                continue
                            seen.add(key)
                        total += info.st_blocks * 512
            finally:
                os.close(fd)
    finally:
        os.close(top)
    return total


@dataclass
class _Figure:
    used: int
    measured_at: float
    walk_seconds: float = 0.0
    charged: int = 0
    """What operations charged (less what they gave back) in all, so that a
    walk can tell which charges it overlapped (see :meth:`DiskUsage.refresh`)."""


class DiskUsage:
    """Every server's usage on this node, cached; safe to use from several threads."""

    def __init__(
        self,
        server_dir: Callable[[str], Path],
        *,
        max_age: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._server_dir = server_dir
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._figures: dict[str, _Figure] = {}
        self._limits: dict[str, int | None] = {}
        self.recorded_limit: Callable[[str], int | None] = lambda server_id: None
        """The allocation a server was last started with, as the runtime
        recorded it (for servers still running from before an agent restart)."""

    def used(self, server_id: str) -> int:
        """The server's usage in bytes; walks its folder when the figure is stale.

        Blocks (call it through ``asyncio.to_thread``)."""
        with self._lock:
            figure = self._figures.get(server_id)
            if figure is not None and self._clock() - figure.measured_at < self._fresh_for(figure):
                return figure.used
        return self.refresh(server_id)

    def _fresh_for(self, figure: _Figure) -> float:
        return min(self._max_age, max(MIN_REFRESH_SECONDS, figure.walk_seconds * WALK_SHARE))

    def cached(self, server_id: str) -> int | None:
        """The last figure without walking (``None`` if never measured)."""
        with self._lock:
            figure = self._figures.get(server_id)
            return None if figure is None else figure.used

    def refresh(self, server_id: str) -> int:
        """Walk the server's folder now. Charges made while the walk runs are
        added on top of it: the walk may or may not have seen their bytes, and
        counting them twice for a moment errs on the safe side."""
        folder = self._server_dir(server_id)
        with self._lock:
            before = self._charged(server_id)
        started = self._clock()
        try:
            walked = measure(folder)
        finally:
            with self._lock:
                # Never below zero: the figure may have been dropped meanwhile.
                during = max(0, self._charged(server_id) - before)
                now = self._clock()
                figure = _Figure(
                    used=max(0, walked + during), measured_at=now, walk_seconds=now - started
                )
                figure.charged = self._charged(server_id)
                self._figures[server_id] = figure
        return figure.used

    def _charged(self, server_id: str) -> int:
        figure = self._figures.get(server_id)
        return 0 if figure is None else figure.charged

    def invalidate(self, server_id: str) -> None:
        """Forget the figure: the folder was replaced (restore, transfer) or deleted."""
        with self._lock:
            self._figures.pop(server_id, None)

    def adjust(self, server_id: str, delta: int) -> None:
        """Account for ``delta`` bytes written (or, negative, freed) by the agent."""
        with self._lock:
            figure = self._figures.get(server_id)
            if figure is not None:
                figure.used = max(0, figure.used + delta)
                figure.charged += delta

    def _charge(self, server_id: str, size: int, limit: int) -> None:
        while True:
            with self._lock:
                figure = self._figures.get(server_id)
                if figure is not None:
                    if figure.used + size > limit:
                        raise DiskLimitExceeded(
                            f"Not enough disk space: the server's allocation is {limit // MB}"
                            f" MB and {_mb(figure.used)} MB of it is in use"
                        )
                    figure.used += size
                    figure.charged += size
                    return
            # Dropped (a delete, a restore) since the quota was taken: never
            # charge against nothing, measure first.
            self.refresh(server_id)

    def remember(self, server_id: str, limit_mb: int | None) -> None:
        """The panel told this allocation (in a start or a file request)."""
        if limit_mb is not None:
            with self._lock:
                self._limits[server_id] = limit_mb

    def limit_mb(self, server_id: str) -> int | None:
        with self._lock:
            if server_id in self._limits:
                return self._limits[server_id]
        recorded = self.recorded_limit(server_id)
        self.remember(server_id, recorded)
        return recorded

    def check_start(self, server_id: str, limit_mb: int | None) -> None:
        """Refuse to start a server whose files already exceed its allocation
        (:class:`DiskLimitExceeded`). Measures afresh: blocks."""
        self.remember(server_id, limit_mb)
        limit = limit_bytes(self.limit_mb(server_id))
        if limit is None:
            return
        used = self.refresh(server_id)
        if used > limit:
            raise DiskLimitExceeded(
                f"The server cannot start: its files take {_mb(used)} MB of its"
                f" {limit // MB} MB disk allocation; delete some first"
            )

    def excess(self, server_id: str) -> str | None:
        """Why a running server must be stopped, if its files (as last
        measured) exceed its allocation; ``None`` otherwise."""
        limit = limit_bytes(self.limit_mb(server_id))
        used = self.cached(server_id)
        if limit is None or used is None or used <= limit:
            return None
        return (
            f"The server's files take {_mb(used)} MB, more than its {limit // MB} MB"
            " disk allocation: stopping it"
        )

    def quota(self, server_id: str, limit_mb: int | None) -> Quota | None:
        """A budget for one operation on the server; ``None`` when unlimited.

        Blocks (may walk the folder)."""
        self.remember(server_id, limit_mb)
        limit = limit_bytes(limit_mb)
        if limit is None:
            return None
        self.used(server_id)
        return Quota(self, server_id, limit)


def _mb(size: int) -> str:
    return f"{size / MB:.1f}"


class Quota:
    """One operation's share of a server's allocation.

    :meth:`charge` before writing; :meth:`refund` what was charged when the
    operation's result is removed again (a failed upload, extraction or copy).
    """

    def __init__(self, usage: DiskUsage, server_id: str, limit: int) -> None:
        self._usage = usage
        self.server_id = server_id
        self.limit = limit
        self.charged = 0

    @property
    def remaining(self) -> int:
        """What the allocation still leaves, as of the cached figure."""
        used = self._usage.cached(self.server_id) or 0
        return max(0, self.limit - used)

    def charge(self, size: int) -> None:
        """Reserve ``size`` more bytes; :class:`DiskLimitExceeded` if they do not fit."""
        if size <= 0:
            return
        self._usage._charge(self.server_id, size, self.limit)
        self.charged += size

    def credit(self, size: int) -> None:
        """``size`` bytes were freed by the operation itself (a file it replaced)."""
        if size > 0:
            self._usage.adjust(self.server_id, -size)

    def refund(self) -> None:
        """Give back everything charged (the operation's output is gone)."""
        if self.charged:
            self._usage.adjust(self.server_id, -self.charged)
            self.charged = 0


def recorded_limits(run_dir: Callable[[str], Path] | None) -> Callable[[str], int | None]:
    """Reads the allocation each server was last started with from the record
    both runtimes keep (``last-start.json`` in its run folder)."""

    def read(server_id: str) -> int | None:
        if run_dir is None:
            return None
        try:
            record = read_json(run_dir(server_id) / LAST_START) or {}
        except AgentRuntimeError:
            return None
        spec = record.get("spec")
        value = spec.get("disk_mb") if isinstance(spec, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return read
