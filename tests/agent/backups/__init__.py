"""Helpers shared by the backup tests: a small tree with every kind of entry
the archive format must carry, and a snapshot of a tree to compare."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Distinct, sub-second mtimes, so that losing precision shows.
BASE_MTIME_NS = 1_600_000_000_123_456_789


def write(path: Path, data: bytes, mode: int = 0o644, mtime_ns: int = BASE_MTIME_NS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_tree(root: Path) -> None:
    """A server folder in miniature: nested folders, empty folders, binary
    and text files (one larger than the library's 4 MiB I/O buffer), long
    and non-ASCII names, symlinks, a hard link, a setuid bit, a read-only
    folder, and a FIFO (which backups skip)."""
    root.mkdir(parents=True, exist_ok=True)
    write(root / "server.properties", b"motd=hello\nmax-players=20\n")
    write(root / "start.sh", b"#!/bin/sh\nexec java -jar server.jar\n", 0o755, BASE_MTIME_NS + 1)
    write(root / "empty.txt", b"", 0o600, BASE_MTIME_NS + 2)
    write(root / "world/region/r.0.0.mca", os.urandom(5 << 20) + b"\0" * 300_000, 0o640)
    write(root / "world/level.dat", os.urandom(3000), 0o644, BASE_MTIME_NS - 10**9 * 3600)
    deep = root / "plugins" / ("a" * 90) / ("b" * 90) / ("c" * 60)
    write(deep / ("long-name-" + "x" * 120 + ".yml"), b"key: value\n" * 50)
    write(root / "données" / "été.txt", b"Sommer\n")
    write(Path(os.fsdecode(os.fsencode(root) + b"/raw-\xff\xfe.bin")), b"not utf-8 name")
    write(root / "bin/suid-tool", b"\x7fELF", 0o4755)
    write(root / "readonly/locked.txt", b"locked", 0o444)
    os.chmod(root / "readonly", 0o555)  # noqa: S103 - read-only folders must survive
    (root / "logs/empty-folder").mkdir(parents=True)
    os.symlink("server.properties", root / "props-link")
    os.symlink("world/region", root / "region-link")
    os.symlink("does-not-exist", root / "dangling-link")
    os.link(root / "server.properties", root / "hardlinked.properties")
    os.mkfifo(root / "console.fifo")
    for folder in ("world/region", "world", "logs/empty-folder", "plugins", "données"):
        os.utime(root / folder, ns=(BASE_MTIME_NS + 7, BASE_MTIME_NS + 7))


def snapshot(root: Path) -> dict[bytes, tuple[str, int, int, bytes]]:
    """Every entry below ``root``: kind, permission bits, mtime in ns, and
    content (files) or target (links). FIFOs and sockets are left out."""
    result: dict[bytes, tuple[str, int, int, bytes]] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                result[rel] = ("link", 0, info.st_mtime_ns, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[rel] = ("dir", mode, info.st_mtime_ns, b"")
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as file:
                    result[rel] = ("file", mode, info.st_mtime_ns, file.read())
    return result


def expected_after_restore(
    before: dict[bytes, tuple[str, int, int, bytes]],
) -> dict[bytes, tuple[str, int, int, bytes]]:
    """What a restore must give back: the same, minus setuid and setgid."""
    return {
        name: (kind, mode & ~0o6000, mtime, data)
        for name, (kind, mode, mtime, data) in before.items()
    }


def listing(root: Path) -> set[bytes]:
    """All names below ``root`` (recursively), to see that nothing appeared."""
    base = os.fsencode(root)
    return {
        os.path.relpath(os.path.join(dirpath, name), base)
        for dirpath, dirnames, filenames in os.walk(base)
        for name in dirnames + filenames
    }
