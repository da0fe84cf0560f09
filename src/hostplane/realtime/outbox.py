"""A client's outgoing frames: bounded, and honest about what it drops.

A slow client must never slow the agent, the server or other clients. Each
client gets a bounded queue; when it is full, console lines for that client
are dropped and counted per server, and the client is told how many
(``lines_dropped``) as soon as there is room again, at the latest when the
queue has drained (so drops at the end of a burst are reported too, with
no later frame to carry them). State changes and stats
are small and rare; they are dropped too only if the queue is full, and
counted the same way.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

DEFAULT_CAPACITY = 2048


@dataclass(frozen=True, slots=True)
class Frame:
    server_id: str
    text: str
    lines: int = 0  # console lines carried (0 for other frames)


class Outbox:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=capacity)
        self.dropped: dict[str, int] = defaultdict(int)
        self.total_dropped = 0
        self._ready = asyncio.Event()

    def offer(self, frame: Frame) -> bool:
        """Queue a frame without waiting; False (and counted) when the client is behind."""
        self._ready.set()
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped[frame.server_id] += max(frame.lines, 1)
            self.total_dropped += max(frame.lines, 1)
            return False
        return True

    def note_dropped(self, server_id: str, count: int) -> None:
        """Lines of ``server_id`` lost before they reached this outbox (to be reported)."""
        if count > 0:
            self.dropped[server_id] += count
            self._ready.set()

    async def next(self) -> Frame | None:
        """The next frame; ``None`` when none is queued but drops wait to be reported."""
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            if any(self.dropped.values()):
                return None
            self._ready.clear()
            await self._ready.wait()

    def take_drop_reports(self) -> dict[str, int]:
        """The per-server counts not yet reported (and forget them)."""
        reports = {server: count for server, count in self.dropped.items() if count}
        self.dropped.clear()
        return reports

    def qsize(self) -> int:
        return self._queue.qsize()
