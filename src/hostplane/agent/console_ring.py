"""The supervisor's memory of a server's recent console lines.

Lines are kept as they were read: one entry per read of the server's pipe
(a run of consecutive lines of one stream, numbered from its first line's
sequence), not one per line. A server writing 2,000 lines at a time then
costs the supervisor a handful of operations per read instead of several per
line, and a batch for the agent is a few list slices.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Run:
    """Consecutive lines of one stream; the first has sequence number ``seq``."""

    seq: int
    stream: str
    lines: list[str]

    @property
    def end(self) -> int:
        """The sequence number after this run's last line."""
        return self.seq + len(self.lines)


class ConsoleRing:
    """The last ``capacity`` lines, numbered consecutively from ``next_seq``."""

    def __init__(self, capacity: int, next_seq: int) -> None:
        self.capacity = capacity
        self.next_seq = next_seq
        self.size = 0
        self._runs: deque[Run] = deque()

    @property
    def oldest(self) -> int:
        """The sequence number of the oldest line retained (``next_seq`` when empty)."""
        return self._runs[0].seq if self._runs else self.next_seq

    def append(self, stream: str, lines: list[str]) -> int:
        """Number ``lines`` and keep them; returns the first one's sequence number."""
        first = self.next_seq
        self._runs.append(Run(first, stream, lines))
        self.next_seq += len(lines)
        self.size += len(lines)
        while self.size > self.capacity:
            head = self._runs[0]
            excess = self.size - self.capacity
            if len(head.lines) <= excess:
                self._runs.popleft()
                self.size -= len(head.lines)
            else:
                head.lines = head.lines[excess:]
                head.seq += excess
                self.size -= excess
        return first

    def batch(self, cursor: int, max_lines: int, max_chars: int) -> list[Run]:
        """Lines from ``cursor`` on (retained, ``oldest <= cursor < next_seq``),
        at most ``max_lines`` of them, ending with the line that reaches
        ``max_chars`` characters, as runs of one stream each."""
        # The reader is nearly always at the end: look for its run from there.
        index = len(self._runs) - 1
        while index > 0 and self._runs[index].seq > cursor:
            index -= 1
        out: list[Run] = []
        count = chars = 0
        while index < len(self._runs) and count < max_lines and chars < max_chars:
            run = self._runs[index]
            index += 1
            lines = run.lines[cursor - run.seq : cursor - run.seq + max_lines - count]
            size = sum(map(len, lines))
            if chars + size >= max_chars:
                # Cut where the character budget ends: the line that reaches it is the last.
                kept: list[str] = []
                for line in lines:
                    kept.append(line)
                    chars += len(line)
                    if chars >= max_chars:
                        break
                lines = kept
            else:
                chars += size
            if not lines:
                break
            if out and out[-1].stream == run.stream:
                out[-1].lines.extend(lines)
            else:
                out.append(Run(cursor, run.stream, lines))
            cursor += len(lines)
            count += len(lines)
        return out
