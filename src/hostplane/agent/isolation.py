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

import asyncio
import json
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from hostplane.agent.config import AgentSettings
from hostplane.agent.supervisor import write_json_atomic

logger = logging.getLogger(__name__)

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


class FolderNotGiven(Exception):
    """The server's folder could not be given to its uid (shown to users)."""


async def give_folder(root: Path, identity: Identity) -> None:
    """:func:`own_tree` off the event loop; errors say nothing of host paths."""
    try:
        await asyncio.to_thread(own_tree, root, identity)
    except OSError as exc:
        logger.warning("giving %s to uid %d failed: %s", root, identity.uid, exc)
        raise FolderNotGiven("the server's folder could not be given to its user") from exc


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


@dataclass(frozen=True)
class Policy:
    """How this node's servers are isolated, decided once from the settings."""

    summary: str
    """One line for operators: ``servers run: ...``."""
    sandbox: bool
    """Bubblewrap wraps each server."""
    warning: str | None = None
    """Said at start-up when servers run with less than the sandbox."""
    refusal: str | None = None
    """Why no server may start here (shown to users: no host paths)."""


_OPT_OUT = "set HOSTPLANE_AGENT__ALLOW_UNSANDBOXED=true to run them without one"


def _fix(settings: AgentSettings) -> str:
    if not settings.sandbox:
        return "set HOSTPLANE_AGENT__SANDBOX=true (sandbox = true)"
    return "install bubblewrap (and allow user namespaces when the agent is not root)"


def policy(settings: AgentSettings) -> Policy:
    """What isolation servers get under ``settings`` on this machine."""
    root = is_root()
    last_uid = settings.server_uid_base + settings.server_uid_count - 1
    who = (
        f"uids {settings.server_uid_base}-{last_uid} (one per server)"
        if root
        else f"the agent's uid {os.geteuid()}"
    )
    if settings.runtime == "docker":
        return Policy(
            summary=f"servers run: containers (engine at {settings.docker_host}), as {who}, "
            "no capabilities, no-new-privileges",
            sandbox=False,
        )
    if root and setpriv_path() is None:
        return Policy(
            summary="servers run: nowhere - setpriv (util-linux) is missing, so they "
            "could only run as root",
            sandbox=False,
            refusal="this node cannot drop root for servers (setpriv is missing)",
        )
    missing: str | None = None
    if not settings.sandbox:
        missing = "the sandbox setting is false"
    elif shutil.which("bwrap") is None:
        missing = "bubblewrap (bwrap) is not installed"
    elif not root and not user_namespaces_available():
        missing = "bubblewrap needs user namespaces, which this kernel does not allow"
    if missing is None:
        userns = ", own user namespace" if user_namespaces_available() else ""
        network = "host network" if settings.sandbox_network == "host" else "no network"
        return Policy(
            summary=f"servers run: bubblewrap sandbox, as {who}, no capabilities"
            f"{userns}, {network}",
            sandbox=True,
        )
    if not settings.allow_unsandboxed:
        return Policy(
            summary=f"servers run: nowhere - {missing}; {_OPT_OUT}",
            sandbox=False,
            warning=f"servers will not start: {missing}; {_fix(settings)}, or {_OPT_OUT}",
            refusal="this node runs servers only in a sandbox, which is not available",
        )
    caps = ", no capabilities" if root else ""
    return Policy(
        summary=f"servers run: WITHOUT a sandbox ({missing}), as {who}{caps}",
        sandbox=False,
        warning=f"servers run without a sandbox ({missing}): each sees the node's "
        "files and processes its uid can reach",
    )


def startup_notice(config_file: Path | None) -> list[str]:
    """What ``hostplane up`` prints about servers' isolation: the summary, and
    the warning when there is one."""
    isolation = policy(AgentSettings.load(config_file))
    lines = [isolation.summary]
    if isolation.warning is not None:
        lines.append(f"WARNING: {isolation.warning}")
    return lines
