"""Backups of a server's files on its node: archives (PAX tar + zstd), their
store, restore, and the streams that move a server to another node."""

from hostplane.agent.backups.archive import (
    DEFAULT_CHUNK_SIZE,
    ArchiveInfo,
    ArchiveReceiver,
    ArchiveStream,
    Progress,
    ReceivedArchive,
    RestoreInfo,
    create_archive,
    extract_into,
    file_sha256,
    format_checksum,
    restore_archive,
)
from hostplane.agent.backups.store import (
    ArchiveRejected,
    BackupError,
    BackupNotFound,
    BackupStore,
    ChecksumMismatch,
    InvalidBackupId,
    TooLarge,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ArchiveInfo",
    "ArchiveReceiver",
    "ArchiveRejected",
    "ArchiveStream",
    "BackupError",
    "BackupNotFound",
    "BackupStore",
    "ChecksumMismatch",
    "InvalidBackupId",
    "Progress",
    "ReceivedArchive",
    "RestoreInfo",
    "TooLarge",
    "create_archive",
    "extract_into",
    "file_sha256",
    "format_checksum",
    "restore_archive",
]
