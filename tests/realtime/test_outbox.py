"""A slow client's outbox: bounded, and it counts what it drops per server."""

import asyncio

from hostplane.core.clock import utcnow
from hostplane.realtime.outbox import Frame, Outbox
from hostplane.realtime.replay import Chunk, ReplayBuffer


async def test_a_full_outbox_drops_and_counts_lines_per_server() -> None:
    outbox = Outbox(capacity=2)
    assert outbox.offer(Frame("a", "1", lines=10))
    assert outbox.offer(Frame("b", "2", lines=5))
    assert not outbox.offer(Frame("a", "3", lines=7))
    assert not outbox.offer(Frame("b", "4", lines=1))
    assert not outbox.offer(Frame("a", "state"))  # a non-console frame counts as one
    assert outbox.take_drop_reports() == {"a": 8, "b": 1}
    assert outbox.take_drop_reports() == {}, "reported once"
    assert (await outbox.next()).text == "1"
    assert outbox.offer(Frame("a", "5", lines=1)), "room again once the client reads"


async def test_drops_at_the_end_of_a_burst_are_reported_once_the_queue_drains() -> None:
    outbox = Outbox(capacity=1)
    assert outbox.offer(Frame("a", "1", lines=3))
    assert not outbox.offer(Frame("a", "2", lines=4))  # the burst's last frame: dropped
    assert (await outbox.next()) == Frame("a", "1", lines=3), "frames first"
    # Nothing else will come: the writer is woken to report the drop anyway.
    assert await asyncio.wait_for(outbox.next(), 1) is None
    assert outbox.take_drop_reports() == {"a": 4}
    waiting = asyncio.ensure_future(outbox.next())
    await asyncio.sleep(0.01)
    assert not waiting.done(), "nothing queued, nothing to report: it waits"
    outbox.note_dropped("b", 2)  # lost before the outbox (the bus, a replay)
    assert await asyncio.wait_for(waiting, 1) is None
    assert outbox.take_drop_reports() == {"b": 2}


def test_the_replay_buffer_keeps_the_newest_lines_and_slices_batches() -> None:
    buffer = ReplayBuffer(max_lines=5)
    now = utcnow()
    buffer.add(Chunk(1, "stdout", now, ("a", "b", "c")))
    buffer.add(Chunk(4, "stdout", now, ("d", "e")))
    buffer.add(Chunk(6, "stderr", now, ("f",)))
    chunks, missed = buffer.since(4)
    assert [(c.seq, c.lines) for c in chunks] == [(5, ("e",)), (6, ("f",))]
    assert missed == 0
    chunks, missed = buffer.since(0)
    assert [c.seq for c in chunks] == [4, 6]
    assert missed == 3, "lines 1-3 were evicted"
