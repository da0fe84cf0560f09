"""What one SFTP login works with besides its file system: open-file handles,
attribute changes on them, and errors that speak of the user's paths only."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator

from asyncssh.sftp import (
    SFTPAttrs,
    SFTPDirNotEmpty,
    SFTPError,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPFileIsADirectory,
    SFTPInvalidFilename,
    SFTPNoSpaceOnFilesystem,
    SFTPNoSuchFile,
    SFTPNotADirectory,
    SFTPPermissionDenied,
    SFTPQuotaExceeded,
)

from hostplane.agent.files.errors import (
    AlreadyExists,
    DiskLimitExceeded,
    FileError,
    FileNotFound,
    InvalidPath,
    IsADirectory,
    NotADirectory,
)


def virtual_path(path: bytes) -> str:
    """The user's canonical path: absolute, with ``.`` and ``..`` folded (never above ``/``)."""
    return posixpath.normpath(posixpath.join("/", os.fsdecode(path)))


def _from_os_error(exc: OSError, user: str) -> SFTPError:
    # str(exc) may name the host folder; only the errno's text goes out.
    reason = os.strerror(exc.errno) if exc.errno else "the operation failed"
    code = exc.errno
    if code == errno.ENOENT:
        return SFTPNoSuchFile(f"{user} does not exist")
    if code == errno.EEXIST:
        return SFTPFileAlreadyExists(f"{user} already exists")
    if code == errno.ENOTEMPTY:
        return SFTPDirNotEmpty(f"{user} is not empty")
    if code == errno.ENOTDIR:
        return SFTPNotADirectory(f"{user}: a part of this path is not a folder")
    if code == errno.EISDIR:
        return SFTPFileIsADirectory(f"{user} is a folder")
    if code == errno.ELOOP:
        return SFTPPermissionDenied(f"{user} is a symbolic link and is not followed here")
    if code in (errno.EACCES, errno.EPERM):
        return SFTPPermissionDenied(f"{user}: {reason}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return SFTPNoSpaceOnFilesystem(f"{user}: {reason}")
    if code == errno.ENAMETOOLONG:
        return SFTPInvalidFilename(f"{user}: {reason}")
    return SFTPFailure(f"{user}: {reason}")


def _from_file_error(exc: FileError) -> SFTPError:
    text = str(exc)
    if isinstance(exc, DiskLimitExceeded):
        return SFTPQuotaExceeded(f"disk quota exceeded: {text}")
    if isinstance(exc, FileNotFound):
        return SFTPNoSuchFile(text)
    if isinstance(exc, AlreadyExists):
        return SFTPFileAlreadyExists(text)
    if isinstance(exc, NotADirectory):
        return SFTPNotADirectory(text)
    if isinstance(exc, IsADirectory):
        return SFTPFileIsADirectory(text)
    if isinstance(exc, InvalidPath):
        # Mostly a link that leads outside the folder: not the user's to see.
        return SFTPPermissionDenied(text)
    return SFTPFailure(text)


@contextlib.contextmanager
def sftp_errors(user: str) -> Iterator[None]:
    """Re-raise the block's failures as SFTP errors that speak of ``user`` only."""
    try:
        yield
    except SFTPError:
        raise
    except FileError as exc:
        raise _from_file_error(exc) from None
    except OSError as exc:
        raise _from_os_error(exc, user) from None


def mode_of(attrs: SFTPAttrs, default: int) -> int:
    # Permission bits only: no set-user-id, set-group-id or sticky files here.
    return default if attrs.permissions is None else attrs.permissions & 0o777


class OpenFile:
    """An SFTP handle: a descriptor opened through the confinement, and how."""

    __slots__ = (
        "append",
        "closed",
        "created",
        "fd",
        "path",
        "readable",
        "refused",
        "writable",
        "written",
    )

    def __init__(
        self,
        fd: int,
        path: str,
        *,
        readable: bool,
        writable: bool,
        created: bool = False,
        append: bool = False,
    ) -> None:
        self.fd = fd
        self.path = path
        self.readable = readable
        self.writable = writable
        self.created = created
        """This open made the file (it did not exist before)."""
        self.append = append
        self.refused = False
        """A write was refused for the disk allocation."""
        self.closed = False
        self.written = 0


def handle_of(file_obj: object) -> OpenFile:
    if not isinstance(file_obj, OpenFile):  # pragma: no cover - asyncssh passes ours back
        raise SFTPFailure("Invalid handle")
    return file_obj


def apply_attrs(fd: int, user: str, attrs: SFTPAttrs) -> None:
    """Set what ``attrs`` holds on an open descriptor.

    Ownership (uid, gid, owner, group) is left alone: files belong to the
    node's account for the server, and handing them to another is not the
    user's to do.
    """
    info = os.fstat(fd)
    if attrs.size is not None:
        if not stat.S_ISREG(info.st_mode):
            raise SFTPFailure(f"{user}: only a file has a size to change")
        os.ftruncate(fd, attrs.size)
    if attrs.permissions is not None:
        os.fchmod(fd, attrs.permissions & 0o777)
    if attrs.atime is not None or attrs.mtime is not None:
        atime = info.st_atime if attrs.atime is None else attrs.atime
        mtime = info.st_mtime if attrs.mtime is None else attrs.mtime
        os.utime(fd, (atime, mtime))
