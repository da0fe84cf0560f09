from __future__ import annotations

import gc
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from hostplane.agent.backups import (
    ArchiveReceiver,
    ArchiveStream,
    ChecksumMismatch,
    TooLarge,
    create_archive,
    extract_into,
)
from tests.agent.backups import expected_after_restore, make_tree, snapshot, write

LIMITS = {"max_bytes": 1 << 30, "max_files": 10_000}


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "archive-stream"]


def wait_for_no_stream_threads(timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while stream_threads():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_stream_to_receiver_round_trip_matches_create_archive(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    make_tree(tree)
    destination = tmp_path / "node-b" / "incoming.tar.zst"
    chunk_size = 64 << 10

    stream = ArchiveStream(tree, chunk_size=chunk_size)
    receiver = ArchiveReceiver(destination, max_bytes=1 << 30)
    sizes = []
    for chunk in stream:
        sizes.append(len(chunk))
        receiver.write(chunk)
    received = receiver.finish("sha256:" + stream.sha256)

    assert all(size == chunk_size for size in sizes[:-1]) and 0 < sizes[-1] <= chunk_size
    assert received.sha256 == stream.sha256 == hashlib.sha256(destination.read_bytes()).hexdigest()
    assert received.size_bytes == stream.size_bytes == destination.stat().st_size
    assert not destination.with_name("incoming.tar.zst.partial").exists()

    via_stream = tmp_path / "via-stream"
    extract_into(destination, via_stream, **LIMITS)
    via_file = tmp_path / "via-file"
    info = create_archive(tree, tmp_path / "b.tar.zst")
    extract_into(tmp_path / "b.tar.zst", via_file, **LIMITS)
    assert snapshot(via_stream) == snapshot(via_file) == expected_after_restore(snapshot(tree))
    assert stream.info.files == info.files
    assert stream.info.source_bytes == info.source_bytes
    assert wait_for_no_stream_threads()


def test_receiver_refuses_a_wrong_checksum_and_keeps_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    write(tree / "a.txt", b"hello")
    destination = tmp_path / "in" / "x.tar.zst"
    receiver = ArchiveReceiver(destination, max_bytes=1 << 20)
    with ArchiveStream(tree) as stream:
        for chunk in stream:
            receiver.write(chunk)
    with pytest.raises(ChecksumMismatch):
        receiver.finish("sha256:" + "0" * 64)
    assert list(destination.parent.iterdir()) == []


def test_receiver_stops_at_max_bytes(tmp_path: Path) -> None:
    destination = tmp_path / "in" / "x.tar.zst"
    receiver = ArchiveReceiver(destination, max_bytes=1000)
    receiver.write(b"x" * 600)
    with pytest.raises(TooLarge):
        receiver.write(b"x" * 600)
    assert list(destination.parent.iterdir()) == []


def test_receiver_abort_removes_the_partial_file(tmp_path: Path) -> None:
    destination = tmp_path / "in" / "x.tar.zst"
    with ArchiveReceiver(destination, max_bytes=1000) as receiver:
        receiver.write(b"partial")
        assert destination.with_name("x.tar.zst.partial").exists()
    assert list(destination.parent.iterdir()) == []


def incompressible_tree(root: Path, megabytes: int) -> None:
    for n in range(megabytes):
        write(root / f"blob-{n}.bin", os.urandom(1 << 20))


def test_slow_consumer_blocks_the_producer(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    incompressible_tree(tree, 4)
    stream = ArchiveStream(tree, chunk_size=16 << 10, queue_chunks=2)
    try:
        next(stream)
        time.sleep(0.3)
        # 4 MB would be produced in well under that time if nothing held the
        # producer back; it is still waiting for the consumer.
        assert stream_threads()
        total = 16 << 10
        for chunk in stream:
            total += len(chunk)
        assert total == stream.size_bytes
    finally:
        stream.close()


def test_closing_early_stops_the_thread(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    incompressible_tree(tree, 4)
    stream = ArchiveStream(tree, chunk_size=16 << 10, queue_chunks=2)
    next(stream)
    assert stream_threads()
    stream.close()
    assert stream_threads() == []
    with pytest.raises(StopIteration):
        next(stream)
    with pytest.raises(RuntimeError):
        _ = stream.sha256


def test_abandoned_stream_stops_its_thread(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    incompressible_tree(tree, 4)
    stream = ArchiveStream(tree, chunk_size=16 << 10, queue_chunks=2)
    next(stream)
    del stream
    gc.collect()
    assert wait_for_no_stream_threads()


def test_stream_of_missing_folder_raises_on_iteration(tmp_path: Path) -> None:
    stream = ArchiveStream(tmp_path / "missing")
    with pytest.raises(Exception, match="does not exist"):
        next(stream)
    assert wait_for_no_stream_threads()
