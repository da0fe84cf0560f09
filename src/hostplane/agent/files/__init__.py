"""The agent's file manager: one server's folder, confined, as a library.

Everything blocks except :func:`pull`; the agent calls the rest through
``asyncio.to_thread``. Paths are the user's (``/world/level.dat``, where ``/``
is the server's folder) and every error is a :class:`FileError` whose
``code`` and message can go to the user as they are.
"""

from hostplane.agent.files.archive_create import compress
from hostplane.agent.files.archives import decompress
from hostplane.agent.files.confine import ServerRoot
from hostplane.agent.files.errors import (
    AlreadyExists,
    ArchiveRejected,
    DiskLimitExceeded,
    DownloadFailed,
    FileError,
    FileNotFound,
    InvalidMode,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    TooLarge,
    UnsupportedArchive,
    UrlRejected,
)
from hostplane.agent.files.operations import (
    AtomicWriter,
    atomic_write,
    chmod,
    copy,
    delete_paths,
    disk_usage_bytes,
    list_dir,
    make_dir,
    open_read,
    rename,
    stat_path,
)
from hostplane.agent.files.pull import is_public_address, pull

__all__ = [
    "AlreadyExists",
    "ArchiveRejected",
    "AtomicWriter",
    "DiskLimitExceeded",
    "DownloadFailed",
    "FileError",
    "FileNotFound",
    "InvalidMode",
    "InvalidPath",
    "IsADirectory",
    "NotADirectory",
    "ServerRoot",
    "TooLarge",
    "UnsupportedArchive",
    "UrlRejected",
    "atomic_write",
    "chmod",
    "compress",
    "copy",
    "decompress",
    "delete_paths",
    "disk_usage_bytes",
    "is_public_address",
    "list_dir",
    "make_dir",
    "open_read",
    "pull",
    "rename",
    "stat_path",
]
