"""The agent's measure of a server's disk usage, and the budgets taken from it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hostplane.agent.disk import MB, DiskUsage, limit_bytes, measure
from hostplane.agent.files import DiskLimitExceeded, ServerRoot, atomic_write, copy


def blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_measure_counts_blocks_once_per_inode_and_never_follows_links(tmp_path: Path) -> None:
    server = tmp_path / "server"
    outside = tmp_path / "outside"
    server.mkdir()
    outside.mkdir()
    (outside / "huge.bin").write_bytes(os.urandom(2 * MB))
    (server / "data.bin").write_bytes(os.urandom(300_000))
    os.link(server / "data.bin", server / "same.bin")
    (server / "sub").mkdir()
    (server / "sub" / "to-outside").symlink_to(outside)
    (server / "to-file").symlink_to(outside / "huge.bin")
    with open(server / "sparse.bin", "wb") as sparse:
        sparse.truncate(50 * MB)

    expected = sum(
        blocks(path)
        for path in (
            server,
            server / "data.bin",
            server / "sub",
            server / "sub" / "to-outside",
            server / "to-file",
            server / "sparse.bin",
        )
    )
    assert measure(server) == expected
    # Sparse files cost what they hold; the hard link and the links cost nothing more.
    assert 300_000 <= measure(server) < MB
    assert measure(tmp_path / "missing") == 0


def test_limits_zero_or_negative_are_unlimited() -> None:
    assert limit_bytes(None) is None
    assert limit_bytes(0) is None
    assert limit_bytes(-1) is None
    assert limit_bytes(3) == 3 * MB


def test_the_figure_is_cached_and_kept_current_by_charges(tmp_path: Path) -> None:
    now = [0.0]
    usage = DiskUsage(lambda server_id: tmp_path / server_id, clock=lambda: now[0])
    folder = tmp_path / "s1"
    folder.mkdir()
    (folder / "a.bin").write_bytes(os.urandom(100_000))
    first = usage.used("s1")
    assert first >= 100_000
    (folder / "b.bin").write_bytes(os.urandom(100_000))
    # Cached: the game's write is seen only by the next walk.
    assert usage.used("s1") == first
    now[0] += 61
    assert usage.used("s1") >= first + 100_000

    quota = usage.quota("s1", 1)
    assert quota is not None
    quota.charge(500_000)
    assert usage.cached("s1") == usage.used("s1") >= first + 600_000
    with pytest.raises(DiskLimitExceeded, match="allocation is 1 MB"):
        quota.charge(MB)
    quota.refund()
    assert usage.used("s1") >= first + 100_000
    assert usage.quota("s1", 0) is None


def test_two_writers_cannot_both_take_the_last_megabyte(tmp_path: Path) -> None:
    usage = DiskUsage(lambda server_id: tmp_path / server_id)
    (tmp_path / "s1").mkdir()
    root = ServerRoot(tmp_path / "s1")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def write(name: str) -> None:
        quota = usage.quota("s1", 2)
        barrier.wait()
        try:
            with atomic_write(root, name, max_bytes=None, quota=quota) as out:
                for _ in range(12):
                    out.write(bytes(100_000))
            outcomes.append("written")
        except DiskLimitExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(f"/f{i}.bin",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "written"]
    # The written file only: the refused one's temporary file is gone.
    assert len(list((tmp_path / "s1").iterdir())) == 1


def test_a_refused_copy_of_a_folder_is_removed_whole(tmp_path: Path) -> None:
    usage = DiskUsage(lambda server_id: tmp_path / server_id)
    folder = tmp_path / "s1"
    (folder / "world").mkdir(parents=True)
    for index in range(4):
        (folder / "world" / f"r{index}.bin").write_bytes(os.urandom(200_000))
    quota = usage.quota("s1", 1)
    with pytest.raises(DiskLimitExceeded):
        copy(ServerRoot(folder), "/world", "/world2", quota=quota)
    assert sorted(p.name for p in folder.iterdir()) == ["world"]
    assert quota is not None and quota.charged == 0


def test_a_start_over_the_allocation_is_refused(tmp_path: Path) -> None:
    usage = DiskUsage(lambda server_id: tmp_path / server_id)
    folder = tmp_path / "s1"
    folder.mkdir()
    (folder / "fill.bin").write_bytes(os.urandom(2 * MB))
    with pytest.raises(DiskLimitExceeded, match="cannot start"):
        usage.check_start("s1", 1)
    assert usage.excess("s1") is not None
    usage.check_start("s1", 3)
    assert usage.excess("s1") is None
    usage.check_start("s1", 0)
