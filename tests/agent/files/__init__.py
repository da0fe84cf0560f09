"""Shared helpers of the file manager's tests: a server folder with hostile
neighbours, and a picture of everything outside it to prove nothing changed."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from hostplane.agent.files import ServerRoot

SECRET = b"the sibling's secret\n"

# Fixed host paths on purpose: hostile archives name them, and they must never appear.
HOST_OUTSIDE = "/tmp/outside"  # noqa: S108
HOST_EVIL = "/tmp/evil"  # noqa: S108


def make_root(tmp_path: Path) -> ServerRoot:
    """``tmp_path/root`` as the server's folder, next to ``sibling/secret.txt``."""
    (tmp_path / "root").mkdir()
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "secret.txt").write_bytes(SECRET)
    (sibling / "secret.txt").chmod(0o640)
    return ServerRoot(tmp_path / "root")


def outside(tmp_path: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``tmp_path`` except the server's folder, with its
    mode and content (files), target (links) or nothing (folders)."""
    picture: dict[str, tuple[int, str]] = {}
    for folder, dirs, files in os.walk(tmp_path):
        if Path(folder) == tmp_path and "root" in dirs:
            dirs.remove("root")
        for name in (*dirs, *files):
            path = Path(folder, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                detail = "link:" + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                detail = "dir"
            picture[str(path.relative_to(tmp_path))] = (info.st_mode, detail)
    # The folder above holds other tests' folders: only its names are compared.
    picture["../"] = (0, "\n".join(sorted(os.listdir(tmp_path.parent))))
    return picture


def tree(folder: Path) -> dict[str, bytes | str | None]:
    """The content of ``folder``: file bytes, ``link:target``, or None for folders."""
    content: dict[str, bytes | str | None] = {}
    for current, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = Path(current, name)
            key = str(path.relative_to(folder))
            if path.is_symlink():
                content[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                content[key] = None
            else:
                content[key] = path.read_bytes()
    return content
