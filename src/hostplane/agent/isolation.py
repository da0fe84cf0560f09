"""Who a server runs as: its own unprivileged host uid, and the folder it owns.

When the agent runs as root, every server gets a dedicated uid (and a gid of
the same number) from a configurable range, allocated on its first start or
install and kept in ``<data_dir>/server-uids.json``. A uid per server rather
than one shared service uid: a server that gets out of its mount namespace
still finds every other server's folder (mode 0700, another owner) and
processes (another uid: no signals, no ptrace, no ``/proc/<pid>`` secrets)
out of reach, and the node's file systems show which server owns a file.

The agent itself (file manager, SFTP, backups, transfers) writes into a
server's folder as root. Before each start and install :func:`own_tree`
gives every entry not yet owned by the server's uid to it, so the server can
change what the panel put there. The pass never follows a link (``fwalk``
with descriptors, ``lchown``), and skips files with more than one hard link:
a hard link the server made to a file it can read elsewhere would otherwise
have that file handed to it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from hostplane.agent.supervisor import write_json_atomic

UIDS_FILE = "server-uids.json"


@dataclass(frozen=True)
class Identity:
    """The host uid and gid a server's processes run as."""

    uid: int
    gid: int


class UidsExhausted(Exception):
    """Every uid of the configured range belongs to a server."""


class ServerUids:
    """The uid of each server, from ``range(base, base + count)``.

    Allocation is synchronous (no await between reading and writing the
    file), so concurrent starts in the agent's event loop cannot share a uid.
    """

    def __init__(self, data_dir: Path, *, base: int, count: int) -> None:
        self.path = Path(data_dir) / UIDS_FILE
        self.base = base
        self.count = count

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}

    def get(self, server_id: str) -> Identity | None:
        uid = self._read().get(server_id)
        return None if uid is None else Identity(uid, uid)

    def identity(self, server_id: str) -> Identity:
        """The server's uid, allocating the lowest free one of the range."""
        known = self._read()
        uid = known.get(server_id)
        if uid is None:
            used = set(known.values())
            uid = next((u for u in range(self.base, self.base + self.count) if u not in used), None)
            if uid is None:
                raise UidsExhausted(f"all {self.count} server uids from {self.base} are in use")
            known[server_id] = uid
            write_json_atomic(self.path, dict(sorted(known.items())))
        return Identity(uid, uid)

    def release(self, server_id: str) -> None:
        """Give the server's uid back (its folder and processes are gone)."""
        known = self._read()
        if known.pop(server_id, None) is not None:
            write_json_atomic(self.path, dict(sorted(known.items())))


def own_tree(root: Path, identity: Identity) -> int:
    """Give ``root`` and everything below it to ``identity``; returns how many
    entries changed owner. ``root`` itself becomes mode 0700."""
    changed = 0
    root_stat = os.lstat(root)
    if stat.S_ISLNK(root_stat.st_mode) or not stat.S_ISDIR(root_stat.st_mode):
        raise NotADirectoryError(root)
    if (root_stat.st_uid, root_stat.st_gid) != (identity.uid, identity.gid):
        os.chown(root, identity.uid, identity.gid, follow_symlinks=False)
        changed += 1
    if stat.S_IMODE(root_stat.st_mode) != 0o700:
        os.chmod(root, 0o700)
    for _, dirs, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in (*dirs, *files):
            try:
                entry = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (entry.st_uid, entry.st_gid) == (identity.uid, identity.gid):
                continue
            if not stat.S_ISDIR(entry.st_mode) and entry.st_nlink > 1:
                continue
            os.chown(name, identity.uid, identity.gid, dir_fd=dir_fd, follow_symlinks=False)
            changed += 1
    return changed


def is_root() -> bool:
    return os.geteuid() == 0


def user_namespaces_available() -> bool:
    """Whether an unprivileged process may create a user namespace here."""
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) <= 0:
            return False
    except (OSError, ValueError):
        return False
    # Debian/Ubuntu kernels have an extra switch (absent elsewhere).
    try:
        return Path("/proc/sys/kernel/unprivileged_userns_clone").read_text().strip() != "0"
    except OSError:
        return True


def setpriv_path() -> str | None:
    return shutil.which("setpriv")
