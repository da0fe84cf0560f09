"""Backup throughput: hostplane's archive library against GNU tar + zstd.

Generates a game-server-like tree (a few large region files of random bytes
mixed with repeated runs, about 2:1 with zstd -1; a few thousand configs,
JSON, logs and text files of 1 KB-512 KB in nested folders), then runs, in
alternating order and after one warm-up run of each side:

    create:  create_archive(tree, out)  vs  tar -I 'zstd -1' -cf out.tar.zst -C tree .
    restore: restore_archive(out, dest) vs  tar -I zstd -xf out.tar.zst -C dest

Restores go into an empty folder on both sides. Prints the median MB/s of
source bytes per side and the ratios hostplane/tar.

    .venv/bin/python bench/backup_throughput.py [--size-mb 1024] [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hostplane.agent.backups import create_archive, restore_archive

MB = 1 << 20
WORDS = [
    "server",
    "player",
    "world",
    "chunk",
    "spawn",
    "entity",
    "block",
    "level",
    "region",
    "config",
    "enabled",
    "false",
    "true",
    "max",
    "min",
    "port",
    "motd",
    "difficulty",
    "gamemode",
    "survival",
    "creative",
    "tick",
    "thread",
    "memory",
    "plugin",
    "permission",
    "group",
    "admin",
    "moderator",
    "whitelist",
    "banned",
    "join",
    "leave",
    "saved",
    "loaded",
    "error",
    "warn",
    "info",
    "debug",
    "inventory",
    "item",
    "stack",
]


def text_corpus(rng: random.Random, size: int) -> bytes:
    lines: list[str] = []
    length = 0
    t = 1_700_000_000
    while length < size:
        kind = rng.random()
        if kind < 0.5:
            t += rng.randint(0, 5)
            level = rng.choice(["INFO", "WARN", "ERROR", "DEBUG"])
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
            line = f"[{time.strftime('%H:%M:%S', time.gmtime(t))}] [Server thread/{level}]: {words} {rng.randint(0, 99999)}"
        elif kind < 0.8:
            line = json.dumps(
                {
                    "uuid": f"{rng.getrandbits(128):032x}",
                    "name": rng.choice(WORDS) + str(rng.randint(0, 999)),
                    "x": rng.uniform(-3e4, 3e4),
                    "y": rng.randint(0, 255),
                    "z": rng.uniform(-3e4, 3e4),
                    "flags": [rng.choice(WORDS) for _ in range(rng.randint(0, 4))],
                }
            )
        else:
            line = f"{rng.choice(WORDS)}.{rng.choice(WORDS)}: {rng.choice(['true', 'false', rng.randint(0, 65535)])}"
        lines.append(line)
        length += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def region_bytes(rng: random.Random, size: int, pool: bytes) -> bytes:
    # Like a region file: sectors of compressed chunk data (incompressible)
    # next to zero padding and repeated palette runs.
    out = bytearray()
    while len(out) < size:
        random_len = rng.randint(1024, 6144)
        start = rng.randrange(0, len(pool) - random_len)
        out += pool[start : start + random_len]
        run = bytes([rng.randrange(256)]) * rng.randint(16, 64)
        out += run * (rng.randint(2048, 6144) // len(run))
    return bytes(out[:size])


def make_tree(root: Path, size_mb: int, seed: int = 7) -> int:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    total = size_mb * MB
    small_budget = total // 5
    pool = os.urandom(64 * MB)
    corpus = text_corpus(rng, 8 * MB)
    written = 0

    plugins = [
        f"{rng.choice(WORDS).capitalize()}{rng.choice(WORDS).capitalize()}" for _ in range(40)
    ]
    folders = (
        [
            Path("config"),
            Path("logs"),
            Path("world/data"),
            Path("world/playerdata"),
            Path("world/stats"),
        ]
        + [Path("plugins") / p / sub for p in plugins for sub in ("", "data", "lang")]
        + [Path("world/DIM-1/data"), Path("world/DIM1/data"), Path("cache/mojang/libraries/a/b/c")]
    )
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "world/empty-dimension").mkdir(parents=True)
    small = 0
    index = 0
    while small < small_budget and index < 4000:
        # Log-uniform 1 KB-512 KB: mostly small files, a few medium ones.
        size = int(1024 * 2 ** rng.uniform(0, 9))
        folder = rng.choice(folders)
        ext = rng.choice([".yml", ".json", ".log", ".txt", ".properties", ".dat"])
        if ext == ".dat" and rng.random() < 0.5:
            start = rng.randrange(0, len(pool) - size)
            data = pool[start : start + size]
        else:
            start = rng.randrange(0, len(corpus) - size)
            data = corpus[start : start + size]
        (root / folder / f"{rng.choice(WORDS)}-{index}{ext}").write_bytes(data)
        small += size
        index += 1
    written += small

    large_total = total - written
    count = max(1, min(12, large_total // (32 * MB)))
    region = root / "world/region"
    region.mkdir(parents=True)
    for n in range(count):
        size = large_total // count
        (region / f"r.{n % 4}.{n // 4}.mca").write_bytes(region_bytes(rng, size, pool))
        written += size
    os.symlink("world/region", root / "regions-link")
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the generated tree and archives")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the temporary folder")
    args = parser.parse_args()
    if not shutil.which("tar") or not shutil.which("zstd"):
        print("needs GNU tar and zstd on PATH", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="hostplane-backup-bench-", dir=args.dir))
    tree = work / "tree"
    tree.mkdir()
    print(f"generating {args.size_mb} MB in {tree} ...", flush=True)
    source_bytes = make_tree(tree, args.size_mb)
    files = sum(1 for _ in tree.rglob("*"))
    mb = source_bytes / MB
    print(f"tree: {mb:.0f} MB of file content, {files} entries; {os.cpu_count()} CPUs")

    ours = work / "hostplane.tar.zst"
    theirs = work / "tar.tar.zst"
    checksum: list[str] = []

    def create_ours() -> None:
        ours.unlink(missing_ok=True)
        checksum[:] = [create_archive(tree, ours).sha256]

    def create_tar() -> None:
        theirs.unlink(missing_ok=True)
        subprocess.run(
            ["tar", "-I", "zstd -1", "-cf", str(theirs), "-C", str(tree), "."], check=True
        )

    def restore_ours() -> None:
        dest = work / "dest-hostplane"
        dest.mkdir()
        restore_archive(ours, dest, expected_sha256=checksum[0], max_bytes=1 << 50, max_files=10**9)

    def restore_tar() -> None:
        dest = work / "dest-tar"
        dest.mkdir()
        subprocess.run(["tar", "-I", "zstd", "-xf", str(theirs), "-C", str(dest)], check=True)

    def clean_dests() -> None:
        for name in ("dest-hostplane", "dest-tar"):
            shutil.rmtree(work / name, ignore_errors=True)

    results: dict[str, list[float]] = {
        "create hostplane": [],
        "create tar": [],
        "restore hostplane": [],
        "restore tar": [],
    }
    try:
        # Warm-up: both sides read the tree and write their archive once.
        create_ours()
        create_tar()
        for index in range(args.rounds):
            pairs = [("create hostplane", create_ours), ("create tar", create_tar)]
            for label, action in pairs if index % 2 == 0 else reversed(pairs):
                results[label].append(timed(action))
        restore_ours()
        restore_tar()
        clean_dests()
        for index in range(args.rounds):
            pairs = [("restore hostplane", restore_ours), ("restore tar", restore_tar)]
            for label, action in pairs if index % 2 == 0 else reversed(pairs):
                results[label].append(timed(action))
                clean_dests()
        print(
            f"archives: hostplane {ours.stat().st_size / MB:.0f} MB, tar {theirs.stat().st_size / MB:.0f} MB"
        )
        speed = {label: mb / statistics.median(times) for label, times in results.items()}
        for label, times in results.items():
            rounds = ", ".join(f"{mb / t:.0f}" for t in times)
            print(f"{label:18} median {speed[label]:7.0f} MB/s   (rounds: {rounds})")
        print(f"ratio create  hostplane/tar: {speed['create hostplane'] / speed['create tar']:.2f}")
        print(
            f"ratio restore hostplane/tar: {speed['restore hostplane'] / speed['restore tar']:.2f}"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
