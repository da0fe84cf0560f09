"""Errors of the file manager.

Every message is shown to the user as it is, so it speaks in the user's own
paths (``/world/level.dat``) and never names the host folder the server's
files live in.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from hostplane.agent.runtime import AgentRuntimeError


class FileError(AgentRuntimeError):
    """Base class of the file manager's errors; ``code`` goes into protocol errors."""

    code = "FILE_ERROR"


class InvalidPath(FileError):
    code = "INVALID_PATH"


class InvalidMode(FileError, ValueError):
    code = "INVALID_MODE"


class FileNotFound(FileError):
    code = "NOT_FOUND"


class AlreadyExists(FileError):
    code = "ALREADY_EXISTS"


class NotADirectory(FileError):
    code = "NOT_A_DIRECTORY"


class IsADirectory(FileError):
    code = "IS_A_DIRECTORY"


class TooLarge(FileError):
    code = "TOO_LARGE"


class DiskLimitExceeded(FileError):
    """The write would take the server past its disk allocation; nothing of it is kept."""

    code = "DISK_LIMIT_EXCEEDED"


class ArchiveRejected(FileError):
    """The archive tried to escape its folder, holds device files, or expands too far."""

    code = "ARCHIVE_REJECTED"


class UnsupportedArchive(FileError):
    code = "UNSUPPORTED_ARCHIVE"


class UrlRejected(FileError):
    code = "URL_REJECTED"


class DownloadFailed(FileError):
    code = "DOWNLOAD_FAILED"


_BY_ERRNO: dict[int, type[FileError]] = {
    errno.ENOENT: FileNotFound,
    errno.EEXIST: AlreadyExists,
    errno.ENOTEMPTY: AlreadyExists,
    errno.ENOTDIR: NotADirectory,
    errno.EISDIR: IsADirectory,
    errno.ELOOP: InvalidPath,
    errno.ENAMETOOLONG: InvalidPath,
    errno.EFBIG: TooLarge,
}


def from_os_error(exc: OSError, user_path: str) -> FileError:
    """Translate an ``OSError`` into a :class:`FileError` about ``user_path``.

    ``str(exc)`` may hold a host path, so only the errno's text is kept.
    """
    error_class = _BY_ERRNO.get(exc.errno or 0, FileError)
    reason = os.strerror(exc.errno) if exc.errno else "the operation failed"
    return error_class(f"{user_path}: {reason}")


@contextlib.contextmanager
def os_errors(user_path: str) -> Iterator[None]:
    """Re-raise any ``OSError`` of the block as a :class:`FileError` about ``user_path``."""
    try:
        yield
    except FileError:
        raise
    except OSError as exc:
        raise from_os_error(exc, user_path) from exc
