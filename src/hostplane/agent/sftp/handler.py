"""The SFTP file system of one login: its server's folder, and nothing else.

Paths are the user's (``/world/level.dat``, relative ones start at ``/``;
``..`` stops at ``/`` as in a chroot) and reach the host only through the
file manager's confinement (:class:`~hostplane.agent.files.confine.ServerRoot`):
every existing component is resolved and refused if it leaves the folder,
then the operation opens one component at a time from the folder with
``O_NOFOLLOW``. A symbolic link the game process planted is listed as a
link, may be removed or renamed, and is followed only when it stays inside;
one planted during an operation makes it fail rather than lead outside.
No link can be created over SFTP.

Permissions come from the login's grant (the panel's answer): reading
content and listing need ``file.read``; creating files and folders
``file.create`` or ``file.write``; changing, truncating, renaming and
changing attributes ``file.update`` or ``file.write``; deleting (and
overwriting through a rename) ``file.delete``. Looking at one path's
attributes needs any of them, so that a writer can see what is there.

Writes respect the server's disk allocation (the grant's ``disk_limit_mb``):
the bytes a write adds to its file are charged first, and a write past the
allocation fails with "disk quota exceeded" (``SSH_FX_QUOTA_EXCEEDED`` for
version 5 and 6 clients, ``SSH_FX_FAILURE`` with that text for older ones).
A file the refused session created is removed when it is closed, so an
upload that did not fit leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import asyncssh
from asyncssh.constants import (
    ACE4_APPEND_DATA,
    ACE4_READ_DATA,
    ACE4_WRITE_DATA,
    FXF_ACCESS_DISPOSITION,
    FXF_APPEND,
    FXF_APPEND_DATA,
    FXF_CREAT,
    FXF_CREATE_NEW,
    FXF_CREATE_TRUNCATE,
    FXF_EXCL,
    FXF_OPEN_OR_CREATE,
    FXF_READ,
    FXF_TRUNC,
    FXF_TRUNCATE_EXISTING,
    FXF_WRITE,
)
from asyncssh.sftp import (
    SFTPAttrs,
    SFTPError,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPFileIsADirectory,
    SFTPName,
    SFTPNoSuchFile,
    SFTPPermissionDenied,
)

from hostplane.agent.disk import DiskUsage, Quota
from hostplane.agent.files.confine import ServerRoot
from hostplane.agent.files.errors import (
    DiskLimitExceeded,
    FileError,
)
from hostplane.agent.sftp.authorizer import SftpGrant
from hostplane.agent.sftp.handles import (
    OpenFile,
    apply_attrs,
    handle_of,
    mode_of,
    sftp_errors,
    virtual_path,
)
from hostplane.protocol import SftpAction

READ = ("file.read",)
CREATE = ("file.create", "file.write")
UPDATE = ("file.update", "file.write")
DELETE = ("file.delete",)
LOOK = (*READ, *CREATE, *UPDATE, *DELETE)

# O_NONBLOCK so that opening a FIFO planted by the game cannot hang a thread.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DEFAULT_FILE_MODE = 0o644
_DEFAULT_DIR_MODE = 0o755

T = TypeVar("T")


class ConfinedSFTPServer(asyncssh.SFTPServer):
    """One SFTP session on one server's folder, with one login's permissions."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        root: ServerRoot,
        grant: SftpGrant,
        busy: Callable[[], str | None] = lambda: None,
        activity: Callable[[SftpAction, str, int | None], None] = lambda action, path, size: None,
        disk: DiskUsage | None = None,
    ) -> None:
        # No asyncssh chroot: its mapping follows links that lead outside.
        super().__init__(chan)
        self._root = root
        self._grant = grant
        self._busy = busy
        # Every change is reported for the server's log, once it succeeded.
        self._activity = activity
        self._disk = disk
        self._quota: Quota | None = None

    def _charge(self, size: int) -> None:
        """Charge ``size`` more bytes to the server's allocation (blocks: may measure)."""
        if self._disk is None or size <= 0:
            return
        if self._quota is None:
            self._quota = self._disk.quota(self._grant.server_id, self._grant.disk_limit_mb)
            if self._quota is None:
                self._disk = None  # unlimited
                return
        self._quota.charge(size)

    def _freed(self, size: int) -> None:
        if self._disk is not None and size > 0:
            self._disk.adjust(self._grant.server_id, -size)

    # -- helpers ----------------------------------------------------------

    def _require(self, allowed: tuple[str, ...], action: str, user: str) -> None:
        if not self._grant.allows(*allowed):
            raise SFTPPermissionDenied(f"You may not {action} {user}")
        if allowed not in (READ, LOOK):
            self._ensure_idle()

    def _ensure_idle(self) -> None:
        """No change while a restore or transfer holds the folder: a restore
        swaps it away, and a transfer's archive must match what it copied."""
        why = self._busy()
        if why is not None:
            raise SFTPFailure(f"The server's files are busy ({why}); try again later")

    async def _run(self, user: str, work: Callable[[], T]) -> T:
        def confined() -> T:
            with sftp_errors(user):
                return work()

        return await asyncio.to_thread(confined)

    def _lstat_host(self, host: os.PathLike[str]) -> os.stat_result:
        if self._root.is_root(host):
            with self._root.open_dir(host) as fd:
                return os.fstat(fd)
        with self._root.open_parent(host) as (parent, name):
            return os.stat(name, dir_fd=parent, follow_symlinks=False)

    # -- path mapping -----------------------------------------------------

    def map_path(self, path: bytes) -> bytes:
        user = virtual_path(path)
        with sftp_errors(user):
            return os.fsencode(self._root.resolve(user))

    def reverse_map_path(self, path: bytes) -> bytes:
        host = os.fsdecode(path)
        if not self._root.contains(host):
            raise SFTPNoSuchFile("File not found")
        return os.fsencode(self._root.display(host))

    def format_user(self, uid: int | None) -> str:
        # The node's account names are none of the user's business.
        return "" if uid is None else str(uid)

    def format_group(self, gid: int | None) -> str:
        return "" if gid is None else str(gid)

    async def realpath(self, path: bytes) -> bytes:
        user = virtual_path(path)
        return await self._run(
            user, lambda: os.fsencode(self._root.display(self._root.resolve(user)))
        )

    # -- opening files ----------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> OpenFile:
        write = bool(pflags & (FXF_WRITE | FXF_APPEND))
        return await self._open(
            virtual_path(path),
            read=bool(pflags & FXF_READ) or not write,
            write=write,
            create=bool(pflags & FXF_CREAT),
            exclusive=bool(pflags & FXF_EXCL),
            truncate=bool(pflags & FXF_TRUNC),
            append=bool(pflags & FXF_APPEND),
            mode=mode_of(attrs, _DEFAULT_FILE_MODE),
        )

    async def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs
    ) -> OpenFile:
        append = bool(desired_access & ACE4_APPEND_DATA or flags & FXF_APPEND_DATA)
        write = bool(desired_access & ACE4_WRITE_DATA) or append
        disposition = flags & FXF_ACCESS_DISPOSITION
        return await self._open(
            virtual_path(path),
            read=bool(desired_access & ACE4_READ_DATA) or not write,
            write=write,
            create=disposition in (FXF_CREATE_NEW, FXF_CREATE_TRUNCATE, FXF_OPEN_OR_CREATE),
            exclusive=disposition == FXF_CREATE_NEW,
            truncate=disposition in (FXF_CREATE_TRUNCATE, FXF_TRUNCATE_EXISTING),
            append=append,
            mode=mode_of(attrs, _DEFAULT_FILE_MODE),
        )

    async def _open(
        self,
        user: str,
        *,
        read: bool,
        write: bool,
        create: bool,
        exclusive: bool,
        truncate: bool,
        append: bool,
        mode: int,
    ) -> OpenFile:
        if read:
            self._require(READ, "read", user)

        def work() -> OpenFile:
            root = self._root
            host = root.resolve(user)
            if root.is_root(host):
                raise SFTPFileIsADirectory(f"{user} is a folder")
            with root.open_parent(host) as (parent, name):
                try:
                    info: os.stat_result | None = os.stat(
                        name, dir_fd=parent, follow_symlinks=False
                    )
                except FileNotFoundError:
                    info = None
                if info is None:
                    if not create:
                        raise SFTPNoSuchFile(f"{user} does not exist")
                    self._require(CREATE, "create", user)
                else:
                    if exclusive:
                        raise SFTPFileAlreadyExists(f"{user} already exists")
                    if write or truncate:
                        self._require(UPDATE, "change", user)
                    if stat.S_ISDIR(info.st_mode):
                        raise SFTPFileIsADirectory(f"{user} is a folder")
                    if not stat.S_ISREG(info.st_mode):
                        raise SFTPPermissionDenied(f"{user} is not a regular file")
                flags = _OPEN_FLAGS
                if read and write:
                    flags |= os.O_RDWR
                elif write:
                    flags |= os.O_WRONLY
                else:
                    flags |= os.O_RDONLY
                if create:
                    flags |= os.O_CREAT
                if exclusive:
                    flags |= os.O_EXCL
                if truncate:
                    flags |= os.O_TRUNC
                if append:
                    flags |= os.O_APPEND
                fd = os.open(name, flags, mode, dir_fd=parent)
            try:
                opened = os.fstat(fd)
                if not stat.S_ISREG(opened.st_mode):
                    raise SFTPPermissionDenied(f"{user} is not a regular file")
                owner = self._root.owner
                if info is None and owner is not None and opened.st_nlink == 1:
                    # New files belong to the server's uid at once: it runs on
                    # and must be able to change what was uploaded.
                    os.fchown(fd, *owner)
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
            if truncate and info is not None and info.st_nlink == 1:
                self._freed(info.st_size)
            return OpenFile(
                fd, user, readable=read, writable=write, created=info is None, append=append
            )

        return await self._run(user, work)

    # -- open files -------------------------------------------------------

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        handle = handle_of(file_obj)
        if not handle.readable:
            raise SFTPPermissionDenied(f"{handle.path} was not opened for reading")
        return await self._run(handle.path, lambda: os.pread(handle.fd, size, offset))

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        handle = handle_of(file_obj)
        if not handle.writable:
            raise SFTPPermissionDenied(f"{handle.path} was not opened for writing")
        self._ensure_idle()

        def work() -> int:
            size = os.fstat(handle.fd).st_size
            # O_APPEND writes at the end whatever the offset says.
            end = (size if handle.append else offset) + len(data)
            try:
                self._charge(end - size)
            except DiskLimitExceeded:
                handle.refused = True
                raise
            view = memoryview(data)
            position = offset
            while view:
                written = os.pwrite(handle.fd, view, position)
                view = view[written:]
                position += written
            return len(data)

        written = await self._run(handle.path, work)
        handle.written += written
        return written

    def close(self, file_obj: object) -> None:
        handle = handle_of(file_obj)
        if not handle.closed:
            handle.closed = True
            if handle.refused and handle.created:
                self._remove_refused(handle)
            os.close(handle.fd)
            if handle.written and not (handle.refused and handle.created):
                self._activity("upload", handle.path, handle.written)

    def _remove_refused(self, handle: OpenFile) -> None:
        """Remove the file a refused upload created, if it is still the same file."""
        with contextlib.suppress(OSError, FileError, SFTPError):
            own = os.fstat(handle.fd)
            host = self._root.resolve(handle.path, follow_symlinks=False)
            with self._root.open_parent(host) as (parent, name):
                there = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if (there.st_dev, there.st_ino) == (own.st_dev, own.st_ino):
                    os.unlink(name, dir_fd=parent)
                    self._freed(own.st_size)

    async def fstat(self, file_obj: object) -> os.stat_result:
        handle = handle_of(file_obj)
        return await self._run(handle.path, lambda: os.fstat(handle.fd))

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        handle = handle_of(file_obj)
        self._require(UPDATE, "change", handle.path)
        await self._run(handle.path, lambda: apply_attrs(handle.fd, handle.path, attrs))

    async def fsync(self, file_obj: object) -> None:
        handle = handle_of(file_obj)
        await self._run(handle.path, lambda: os.fsync(handle.fd))

    async def fstatvfs(self, file_obj: object) -> os.statvfs_result:
        handle = handle_of(file_obj)
        return await self._run(handle.path, lambda: os.fstatvfs(handle.fd))

    # -- paths ------------------------------------------------------------

    async def stat(self, path: bytes) -> os.stat_result:
        user = virtual_path(path)
        self._require(LOOK, "look at", user)
        return await self._run(
            user, lambda: self._lstat_host(self._root.resolve(user, must_exist=True))
        )

    async def lstat(self, path: bytes) -> os.stat_result:
        user = virtual_path(path)
        self._require(LOOK, "look at", user)
        return await self._run(
            user,
            lambda: self._lstat_host(
                self._root.resolve(user, must_exist=True, follow_symlinks=False)
            ),
        )

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        user = virtual_path(path)
        self._require(READ, "list", user)

        def work() -> list[SFTPName]:
            root = self._root
            host = root.resolve(user, must_exist=True)
            with root.open_dir(host) as fd:
                here = os.fstat(fd)
                found: list[tuple[str, os.stat_result]] = []
                with os.scandir(fd) as scan:
                    for item in scan:
                        # Listed as what they are: a link's target is not looked at.
                        with contextlib.suppress(FileNotFoundError):
                            found.append((item.name, item.stat(follow_symlinks=False)))
            up = here if root.is_root(host) else self._lstat_host(host.parent)
            names = [
                SFTPName(b".", attrs=SFTPAttrs.from_local(here)),
                SFTPName(b"..", attrs=SFTPAttrs.from_local(up)),
            ]
            names.extend(
                SFTPName(os.fsencode(name), attrs=SFTPAttrs.from_local(info))
                for name, info in found
            )
            return names

        for name in await self._run(user, work):
            yield name

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        user = virtual_path(path)
        self._require(CREATE, "create", user)

        def work() -> None:
            host = self._root.resolve(user, follow_symlinks=False)
            if self._root.is_root(host):
                raise SFTPFileAlreadyExists(f"{user} already exists")
            with self._root.open_parent(host) as (parent, name):
                os.mkdir(name, mode_of(attrs, _DEFAULT_DIR_MODE), dir_fd=parent)
                if self._root.owner is not None:
                    os.chown(name, *self._root.owner, dir_fd=parent, follow_symlinks=False)

        await self._run(user, work)
        self._activity("mkdir", user, None)

    async def remove(self, path: bytes) -> None:
        user = virtual_path(path)
        self._require(DELETE, "delete", user)

        def work() -> None:
            # The link itself when it is one, wherever it points.
            host = self._root.resolve(user, must_exist=True, follow_symlinks=False)
            if self._root.is_root(host):
                raise SFTPFileIsADirectory(f"{user} is a folder")
            with self._root.open_parent(host) as (parent, name):
                if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise SFTPFileIsADirectory(f"{user} is a folder")
                os.unlink(name, dir_fd=parent)

        await self._run(user, work)
        self._activity("delete", user, None)

    async def rmdir(self, path: bytes) -> None:
        user = virtual_path(path)
        self._require(DELETE, "delete", user)

        def work() -> None:
            host = self._root.resolve(user, must_exist=True, follow_symlinks=False)
            if self._root.is_root(host):
                raise SFTPPermissionDenied("The server's folder itself cannot be removed")
            with self._root.open_parent(host) as (parent, name):
                os.rmdir(name, dir_fd=parent)

        await self._run(user, work)
        self._activity("delete", user, None)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=False)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=True)

    async def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        source, target = virtual_path(oldpath), virtual_path(newpath)
        self._require(UPDATE, "rename", source)

        def work() -> None:
            root = self._root
            old = root.resolve(source, must_exist=True, follow_symlinks=False)
            new = root.resolve(target, follow_symlinks=False)
            if root.is_root(old) or root.is_root(new):
                raise SFTPPermissionDenied("The server's folder itself cannot be renamed")
            with (
                root.open_parent(old) as (old_dir, old_name),
                root.open_parent(new) as (
                    new_dir,
                    new_name,
                ),
            ):
                try:
                    os.stat(new_name, dir_fd=new_dir, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if not replace:
                        raise SFTPFileAlreadyExists(f"{target} already exists")
                    # Replacing deletes what was there.
                    self._require(DELETE, "replace", target)
                os.rename(old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir)

        await self._run(source, work)
        self._activity("rename", f"{source} -> {target}", None)

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._setstat(virtual_path(path), attrs, follow_symlinks=True)

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._setstat(virtual_path(path), attrs, follow_symlinks=False)

    async def _setstat(self, user: str, attrs: SFTPAttrs, *, follow_symlinks: bool) -> None:
        self._require(UPDATE, "change", user)

        def work() -> None:
            root = self._root
            host = root.resolve(user, must_exist=True, follow_symlinks=follow_symlinks)
            if root.is_root(host):
                with root.open_dir(host) as fd:
                    apply_attrs(fd, user, attrs)
                return
            # Write access only to change the size; a link here (planted, or
            # named by lsetstat) fails with ELOOP: links keep their attributes.
            access = os.O_WRONLY if attrs.size is not None else os.O_RDONLY
            with root.open_parent(host) as (parent, name):
                fd = os.open(name, _OPEN_FLAGS | access, dir_fd=parent)
            try:
                apply_attrs(fd, user, attrs)
            finally:
                os.close(fd)

        await self._run(user, work)
        self._activity("chmod", user, None)

    async def readlink(self, path: bytes) -> bytes:
        user = virtual_path(path)
        self._require(READ, "read", user)

        def work() -> bytes:
            root = self._root
            link = root.resolve(user, must_exist=True, follow_symlinks=False)
            if root.is_root(link) or not stat.S_ISLNK(self._lstat_host(link).st_mode):
                raise SFTPFailure(f"{user} is not a symbolic link")
            # Where it leads, as the user's path; a link leading outside is refused.
            return os.fsencode(root.display(root.resolve(user)))

        return await self._run(user, work)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise SFTPPermissionDenied("Links cannot be created over SFTP")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise SFTPPermissionDenied("Links cannot be created over SFTP")

    async def statvfs(self, path: bytes) -> os.statvfs_result:
        return await self._run("/", lambda: os.statvfs(self._root.path))
