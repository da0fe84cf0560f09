"""Disk usage walk: how long the agent takes to measure a server's folder.

Builds a tree of ``--files`` small files (default 100,000) spread over
folders of 100 files, nested 3 deep, then times ``hostplane.agent.disk.measure``
(median of ``--rounds`` runs, page cache warm after the first) against
``du -s -B1`` on the same tree, and prints both figures and the bytes each found.

    .venv/bin/python bench/disk_usage_walk.py [--files 100000] [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from hostplane.agent.disk import measure


def build(root: Path, files: int) -> None:
    for index in range(files):
        folder = root / f"d{index // 10000}" / f"e{index // 1000 % 10}" / f"f{index // 100 % 10}"
        if index % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{index}.dat").write_bytes(b"x" * (index % 2000 + 1))


def timed(action: object, rounds: int) -> tuple[float, int]:
    results = []
    value = 0
    for _ in range(rounds):
        started = time.perf_counter()
        value = action()  # type: ignore[operator]
        results.append(time.perf_counter() - started)
    return statistics.median(results), value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hp-disk-bench-"))
    try:
        started = time.perf_counter()
        build(root, args.files)
        print(f"built {args.files} files in {time.perf_counter() - started:.1f} s")
        walk, walked = timed(lambda: measure(root), args.rounds)

        def du() -> int:
            out = subprocess.run(
                ["du", "-s", "-B1", str(root)], check=True, capture_output=True, text=True
            )
            return int(out.stdout.split()[0])

        du_time, du_bytes = timed(du, args.rounds)
        print(f"measure(): {walk:.3f} s, {walked} bytes")
        print(f"du -s:     {du_time:.3f} s, {du_bytes} bytes")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
