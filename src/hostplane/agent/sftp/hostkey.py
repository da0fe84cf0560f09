"""The SFTP server's host key: made once, then the same across restarts.

Clients pin a server's host key on first use; a new key on every start
would train users to accept any key, so it is kept in the agent's data
folder, readable by the agent only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

import asyncssh

KEY_ALGORITHM = "ssh-ed25519"


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The key at ``path`` (mode 0600), generated first if there is none. Blocks."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        _write_new_key(path)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    return asyncssh.read_private_key(path)


def _write_new_key(path: Path) -> None:
    data = asyncssh.generate_private_key(KEY_ALGORITHM).export_private_key()
    staged = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # A link, not a rename: if another start wrote a key meanwhile, it wins
        # and this one is dropped, so both use the same key.
        with contextlib.suppress(FileExistsError):
            os.link(staged, path)
    finally:
        staged.unlink(missing_ok=True)
