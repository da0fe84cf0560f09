"""Recent console lines per server, so a reconnecting client misses nothing.

The gateway session that hears a node's agent keeps the last lines of each of
its servers, numbered by the agent's sequence. A client that reconnects with
``lastSeq`` asks for what came after it (over the event bus, so the client's
replica need not be the agent's); lines older than the buffer are reported as
dropped rather than silently skipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

DEFAULT_MAX_LINES = 10_000


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    stream: str
    timestamp: datetime
    lines: tuple[str, ...]

    @property
    def last_seq(self) -> int:
        return self.seq + len(self.lines) - 1

    def after(self, seq: int) -> Chunk | None:
        """The part of this chunk after ``seq``, if any."""
        if self.last_seq <= seq:
            return None
        skip = max(0, seq - self.seq + 1)
        return Chunk(self.seq + skip, self.stream, self.timestamp, self.lines[skip:])


class ReplayBuffer:
    def __init__(self, max_lines: int = DEFAULT_MAX_LINES) -> None:
        self.max_lines = max_lines
        self._chunks: deque[Chunk] = deque()
        self._lines = 0

    def add(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._lines += len(chunk.lines)
        while self._lines > self.max_lines and len(self._chunks) > 1:
            self._lines -= len(self._chunks.popleft().lines)

    def since(self, seq: int) -> tuple[list[Chunk], int]:
        """Chunks after ``seq``, and how many lines after it are no longer held."""
        if not self._chunks:
            return [], 0
        oldest = self._chunks[0].seq
        missed = max(0, oldest - seq - 1)
        chunks = [part for chunk in self._chunks if (part := chunk.after(seq)) is not None]
        return chunks, missed
