"""The supervisor's ring of recent console lines, kept per read."""

from __future__ import annotations

from hostplane.agent.console_ring import ConsoleRing, Run
from hostplane.agent.supervisor import _lines


def flatten(runs: list[Run]) -> list[tuple[int, str, str]]:
    return [(run.seq + i, run.stream, line) for run in runs for i, line in enumerate(run.lines)]


def test_lines_are_numbered_across_reads_and_batched_by_stream() -> None:
    ring = ConsoleRing(100, next_seq=5)
    assert ring.append("stdout", ["a", "b"]) == 5
    assert ring.append("stdout", ["c"]) == 7
    assert ring.append("stderr", ["d"]) == 8
    runs = ring.batch(6, 100, 1000)
    # Consecutive reads of one stream travel as one run.
    assert [(r.seq, r.stream, r.lines) for r in runs] == [
        (6, "stdout", ["b", "c"]),
        (8, "stderr", ["d"]),
    ]
    assert runs[-1].end == ring.next_seq == 9


def test_the_oldest_lines_go_first_even_inside_one_read() -> None:
    ring = ConsoleRing(5, next_seq=1)
    ring.append("stdout", ["1", "2", "3"])
    ring.append("stdout", ["4", "5", "6", "7"])
    assert ring.size == 5
    assert ring.oldest == 3
    assert flatten(ring.batch(3, 100, 1000)) == [(i, "stdout", str(i)) for i in range(3, 8)]
    ring.append("stdout", [str(i) for i in range(8, 20)])
    assert ring.oldest == 15
    assert [line for _, _, line in flatten(ring.batch(15, 100, 1000))] == [
        "15",
        "16",
        "17",
        "18",
        "19",
    ]


def test_batches_end_at_the_line_and_character_limits() -> None:
    ring = ConsoleRing(1000, next_seq=1)
    for _ in range(10):
        ring.append("stdout", ["x" * 10] * 10)
    assert len(flatten(ring.batch(1, 25, 10_000))) == 25
    # The line reaching the character budget is the last one.
    assert len(flatten(ring.batch(4, 1000, 95))) == 10
    assert len(flatten(ring.batch(4, 1000, 100))) == 10
    assert len(flatten(ring.batch(4, 1000, 101))) == 11
    # A single line over the budget still goes out alone.
    ring.append("stdout", ["y" * 500, "z"])
    assert flatten(ring.batch(101, 1000, 100)) == [(101, "stdout", "y" * 500)]


def test_reading_the_whole_ring_in_batches_covers_every_line_once() -> None:
    ring = ConsoleRing(50, next_seq=1)
    for n in range(1, 200, 3):
        ring.append("stdout" if n % 2 else "stderr", [str(n), str(n + 1), str(n + 2)])
    cursor = ring.oldest
    seen: list[int] = []
    while cursor < ring.next_seq:
        runs = ring.batch(cursor, 7, 10_000)
        seen.extend(seq for seq, _, _ in flatten(runs))
        cursor = runs[-1].end
    assert seen == list(range(ring.oldest, ring.next_seq))
    assert len(seen) == 50


def test_output_is_decoded_at_once_with_the_same_result_as_line_by_line() -> None:
    data = "a\r\nb\r\r\n\nü€\n\xff".encode() + b"\xc3\nend"
    expected = [p.rstrip(b"\r").decode("utf-8", "replace") for p in data.split(b"\n")]
    assert _lines(data) == expected
    assert _lines(b"plain\nlines") == ["plain", "lines"]
