"""Backup archives of a server's folder: a PAX tar stream compressed with zstd.

Creating (:mod:`.create`) reads the folder once and hashes while writing;
restoring (:mod:`.restore`) extracts into a staging folder and swaps it in
only when every entry was written; :mod:`.stream` moves archives between
nodes without temporary files.
"""

from hostplane.agent.backups.common import (
    DEFAULT_CHUNK_SIZE,
    ArchiveInfo,
    Progress,
    ReceivedArchive,
    RestoreInfo,
    file_sha256,
    format_checksum,
)
from hostplane.agent.backups.create import create_archive
from hostplane.agent.backups.restore import extract_into, restore_archive
from hostplane.agent.backups.stream import ArchiveReceiver, ArchiveStream

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ArchiveInfo",
    "ArchiveReceiver",
    "ArchiveStream",
    "Progress",
    "ReceivedArchive",
    "RestoreInfo",
    "create_archive",
    "extract_into",
    "file_sha256",
    "format_checksum",
    "restore_archive",
]
