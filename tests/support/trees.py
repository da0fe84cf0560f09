"""Small game-server-like file trees, and their contents for byte-for-byte comparison."""

from __future__ import annotations

import os
from pathlib import Path


def write_tree(root: Path, *, big: int = 0) -> dict[str, bytes]:
    """A config, a world file, plugin configs and, with ``big``, a region file of that size."""
    files = {
        "server.properties": b"motd=hello\n",
        "world/level.dat": os.urandom(100_000),
        "world/region/r.0.0.mca": os.urandom(300_000),
        "plugins/a/config.yml": b"a: 1\n" * 1000,
    }
    if big:
        files["world/region/big.mca"] = os.urandom(big)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
