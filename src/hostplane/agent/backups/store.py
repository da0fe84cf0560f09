"""Where a node keeps its backup archives, and the errors of the backup library.

Layout under the store's root::

    <server id>/<backup id>.tar.zst           a finished archive
    <server id>/<backup id>.tar.zst.partial   one being written or received

Error messages name servers, backups and paths inside an archive, never a
path on the host: they travel to the panel and from there to customers.
"""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path

from hostplane.agent.runtime import AgentRuntimeError

ARCHIVE_SUFFIX = ".tar.zst"
PARTIAL_SUFFIX = ".partial"

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BackupError(AgentRuntimeError):
    """Base class of the backup library's errors."""

    code = "BACKUP_ERROR"


class InvalidBackupId(BackupError):
    code = "INVALID_BACKUP_ID"


class BackupNotFound(BackupError):
    code = "BACKUP_NOT_FOUND"


class ChecksumMismatch(BackupError):
    code = "CHECKSUM_MISMATCH"


class ArchiveRejected(BackupError):
    """The archive is corrupt or tries to write outside its folder."""

    code = "ARCHIVE_REJECTED"


class TooLarge(BackupError):
    """An archive, or what it extracts to, exceeds the limit it was given."""

    code = "TOO_LARGE"


def validate_id(value: str, what: str = "backup id") -> str:
    # The id becomes a path component: the pattern rules out separators, "..",
    # and names starting with a dot (which the store uses for nothing, but a
    # listing should never show hidden files as backups).
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidBackupId(f"invalid {what}")
    return value


class BackupStore:
    """The backup archives of the servers on this node."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def server_dir(self, server_id: str) -> Path:
        return self.root / validate_id(server_id, "server id")

    def path_for(self, server_id: str, backup_id: str) -> Path:
        return self.server_dir(server_id) / (validate_id(backup_id) + ARCHIVE_SUFFIX)

    def exists(self, server_id: str, backup_id: str) -> bool:
        return self.path_for(server_id, backup_id).is_file()

    def size_of(self, server_id: str, backup_id: str) -> int:
        try:
            return self.path_for(server_id, backup_id).stat().st_size
        except FileNotFoundError:
            raise BackupNotFound(
                f"backup {backup_id} of server {server_id} does not exist"
            ) from None

    def delete(self, server_id: str, backup_id: str) -> bool:
        """Remove a backup and any unfinished copy of it; ``False`` if there was none."""
        path = self.path_for(server_id, backup_id)
        removed = False
        for candidate in (path, path.with_name(path.name + PARTIAL_SUFFIX)):
            try:
                candidate.unlink()
            except FileNotFoundError:
                continue
            removed = removed or candidate == path
        return removed

    def usage_bytes(self) -> int:
        """Disk space taken by all archives, unfinished ones included."""
        total = 0
        try:
            servers = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for server in servers:
            if not server.is_dir(follow_symlinks=False):
                continue
            with os.scandir(server.path) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        try:
                            total += entry.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue
        return total

    # Defined last: inside the class body the name ``list`` means this method.
    def list(self, server_id: str) -> builtins.list[tuple[str, int]]:
        """The finished backups of a server as ``(backup id, size in bytes)``, by id."""
        found: builtins.list[tuple[str, int]] = []
        try:
            entries = builtins.list(os.scandir(self.server_dir(server_id)))
        except FileNotFoundError:
            return found
        for entry in entries:
            name = entry.name
            if not name.endswith(ARCHIVE_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            backup_id = name[: -len(ARCHIVE_SUFFIX)]
            if not _ID.fullmatch(backup_id):
                continue
            try:
                found.append((backup_id, entry.stat(follow_symlinks=False).st_size))
            except FileNotFoundError:
                continue
        found.sort()
        return found
