"""File operations on one server's folder.

Every function takes the :class:`ServerRoot` first and user paths after it.
They block; the agent calls them through ``asyncio.to_thread``. Each one
resolves its paths with :meth:`ServerRoot.resolve` and then works through
directory descriptors reached with ``O_NOFOLLOW``, so that neither an existing
symbolic link nor one planted during the operation leads outside the root.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from hostplane.agent.files.confine import DIR_FLAGS, ServerRoot, check_name, open_relative
from hostplane.agent.files.errors import (
    AlreadyExists,
    InvalidMode,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    TooLarge,
    os_errors,
)

if TYPE_CHECKING:
    from hostplane.agent.disk import Quota

_CHUNK = 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DOUBLE_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst")
# What a new folder is charged to a server's allocation: one block.
_FOLDER_COST = 4096


def _entry(name: str, info: os.stat_result) -> dict[str, Any]:
    modified = datetime.fromtimestamp(info.st_mtime, tz=UTC)
    return {
        "name": name,
        "size": info.st_size,
        "isDirectory": stat.S_ISDIR(info.st_mode),
        "isSymlink": stat.S_ISLNK(info.st_mode),
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "modified": modified.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def _sort_key(entry: dict[str, Any]) -> tuple[bool, str, str]:
    name: str = entry["name"]
    return (not entry["isDirectory"], name.casefold(), name)


def list_dir(root: ServerRoot, path: str) -> list[dict[str, Any]]:
    """The entries of a folder, folders first, then by name.

    Entries are described by ``lstat``: a link is listed as a link and its
    target is not looked at, wherever it points.
    """
    user = root.normalize(path)
    host = root.resolve(path, must_exist=True)
    entries: list[dict[str, Any]] = []
    with os_errors(user), root.open_dir(host) as fd, os.scandir(fd) as scan:
        for item in scan:
            with contextlib.suppress(FileNotFoundError):
                entries.append(_entry(item.name, item.stat(follow_symlinks=False)))
    entries.sort(key=_sort_key)
    return entries


def stat_path(root: ServerRoot, path: str) -> dict[str, Any]:
    """One entry in the shape of :func:`list_dir`'s (a link is not followed)."""
    user = root.normalize(path)
    host = root.resolve(path, must_exist=True, follow_symlinks=False)
    with os_errors(user):
        if root.is_root(host):
            return _entry("/", os.stat(host))
        with root.open_parent(host) as (fd, name):
            return _entry(name, os.stat(name, dir_fd=fd, follow_symlinks=False))


def open_read(root: ServerRoot, path: str) -> tuple[BinaryIO, int]:
    """A file opened for reading, and its size. Folders and special files are refused."""
    user = root.normalize(path)
    host = root.resolve(path, must_exist=True)
    if root.is_root(host):
        raise IsADirectory(f"{user} is a folder")
    with os_errors(user), root.open_parent(host) as (parent, name):
        # O_NONBLOCK so that opening a FIFO planted by the game cannot hang.
        fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectory(f"{user} is a folder")
            if not stat.S_ISREG(info.st_mode):
                raise InvalidPath(f"{user} is not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb"), info.st_size
        except BaseException:
            os.close(fd)
            raise


class AtomicWriter:
    """What :func:`atomic_write` yields: a sink that counts and limits what it gets.

    With a ``quota``, the bytes beyond the size of the file being replaced
    (``replacing``) are charged to the server's allocation before they are
    written: editing a file near the limit stays possible, growing it does not.
    """

    def __init__(
        self,
        fd: int,
        user_path: str,
        max_bytes: int | None,
        quota: Quota | None = None,
        replacing: int = 0,
    ) -> None:
        self._fd = fd
        self._user_path = user_path
        self._max_bytes = max_bytes
        self._quota = quota
        self._replacing = replacing
        self.bytes_written = 0

    @property
    def descriptor(self) -> int:
        """The temporary file's descriptor (for ``fstat``; write through :meth:`write`)."""
        return self._fd

    def write(self, data: bytes) -> int:
        size = len(data)
        if self._max_bytes is not None and self.bytes_written + size > self._max_bytes:
            raise TooLarge(f"{self._user_path}: the file would exceed {self._max_bytes} bytes")
        if self._quota is not None:
            beyond = self.bytes_written + size - self._replacing
            self._quota.charge(min(size, beyond))
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.bytes_written += size
        return size

    def tell(self) -> int:
        # Streaming writers (zipfile) only need the position; there is no seek.
        return self.bytes_written

    def flush(self) -> None:
        """Data goes straight to the descriptor; nothing is buffered here."""


@contextlib.contextmanager
def atomic_write(
    root: ServerRoot,
    path: str,
    *,
    max_bytes: int | None,
    make_parents: bool = True,
    quota: Quota | None = None,
) -> Iterator[AtomicWriter]:
    """Write a file by renaming a finished temporary file over it.

    The temporary file lives in the target's folder (same filesystem) and is
    removed if the block raises, ``max_bytes`` is exceeded
    (:class:`TooLarge`) or the server's ``quota`` would be
    (:class:`DiskLimitExceeded`); what was charged to the quota is then
    given back. Readers never see a half-written file. After the block,
    ``writer.bytes_written`` holds the file's size.
    """
    user = root.normalize(path)
    host = root.resolve(path)
    if root.is_root(host):
        raise InvalidPath("The server's root folder cannot be overwritten")
    with os_errors(user), root.open_parent(host, create=make_parents) as (parent, name):
        mode = 0o644
        replacing = 0
        with contextlib.suppress(FileNotFoundError):
            current = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(current.st_mode):
                raise IsADirectory(f"{user} is a folder")
            if stat.S_ISREG(current.st_mode):
                mode = stat.S_IMODE(current.st_mode) & 0o777
                # Another hard link keeps the old content: replacing frees nothing.
                replacing = current.st_size if current.st_nlink == 1 else 0
        temporary = f".{name[:200]}.{secrets.token_hex(6)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600, dir_fd=parent)
        writer = AtomicWriter(fd, user, max_bytes, quota, replacing)
        try:
            yield writer
            os.fchmod(fd, mode)
            os.fsync(fd)
            # rename replaces a link planted at the name; it never writes through it.
            os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            if quota is not None:
                quota.refund()
            raise
        else:
            if quota is not None:
                # What the new content did not charge, the old one freed.
                quota.credit(replacing - writer.bytes_written)
        finally:
            os.close(fd)


def make_dir(root: ServerRoot, path: str) -> None:
    """Create a folder and its parents; an existing folder is fine, a file is not."""
    user = root.normalize(path)
    host = root.resolve(path)
    if os.path.lexists(host) and not os.path.isdir(host):
        raise AlreadyExists(f"{user} already exists and is not a folder")
    try:
        with os_errors(user):
            root.make_dirs(host)
    except NotADirectory as exc:
        raise AlreadyExists(f"{user} already exists and is not a folder") from exc


def delete_paths(root: ServerRoot, paths: list[str]) -> int:
    """Delete files, links and whole folders; returns how many paths were deleted.

    Every path is validated before anything is deleted. A link is removed
    itself, never what it points to, and folders are removed with
    descriptor-based ``rmtree``, which does not follow links either.
    """
    targets: dict[str, tuple[str, ...]] = {}
    for path in paths:
        user = root.normalize(path)
        host = root.resolve(path, must_exist=True, follow_symlinks=False)
        if root.is_root(host):
            raise InvalidPath("The server's root folder cannot be deleted")
        targets[user] = root.relative(host)
    # A path inside another one being deleted goes with it.
    chosen_parts = set(targets.values())
    chosen = [
        (user, parts)
        for user, parts in targets.items()
        if not any(parts[:i] in chosen_parts for i in range(1, len(parts)))
    ]
    deleted = 0
    for user, parts in chosen:
        with os_errors(user), root.open_parent(root.path.joinpath(*parts)) as (parent, name):
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
            deleted += 1
    return deleted


def _inside(parts: tuple[str, ...], ancestor: tuple[str, ...]) -> bool:
    return len(parts) > len(ancestor) and parts[: len(ancestor)] == ancestor


def rename(root: ServerRoot, source: str, destination: str) -> None:
    """Move or rename; never replaces an existing destination (:class:`AlreadyExists`)."""
    source_user = root.normalize(source)
    destination_user = root.normalize(destination)
    source_host = root.resolve(source, must_exist=True, follow_symlinks=False)
    destination_host = root.resolve(destination, follow_symlinks=False)
    if root.is_root(source_host) or root.is_root(destination_host):
        raise InvalidPath("The server's root folder cannot be renamed or replaced")
    if os.path.lexists(destination_host):
        raise AlreadyExists(f"{destination_user} already exists")
    if _inside(root.relative(destination_host), root.relative(source_host)):
        raise InvalidPath(f"{source_user} cannot be moved into itself")
    with (
        os_errors(source_user),
        root.open_parent(source_host) as (source_dir, source_name),
        root.open_parent(destination_host, create=True) as (destination_dir, destination_name),
    ):
        if _lexists_at(destination_dir, destination_name):
            raise AlreadyExists(f"{destination_user} already exists")
        os.rename(source_name, destination_name, src_dir_fd=source_dir, dst_dir_fd=destination_dir)


def _lexists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _copy_name(name: str, number: int, is_dir: bool) -> str:
    label = " copy" if number == 1 else f" copy {number}"
    if is_dir:
        return name + label
    lowered = name.lower()
    suffix = next((s for s in _DOUBLE_SUFFIXES if lowered.endswith(s) and len(name) > len(s)), None)
    if suffix is None:
        stem, suffix = os.path.splitext(name)
    else:
        stem = name[: -len(suffix)]
        suffix = name[-len(suffix) :]
    return stem + label + suffix


def _copy_file_at(
    src_dir: int, src_name: str, dst_dir: int, dst_name: str, quota: Quota | None = None
) -> None:
    source = os.open(src_name, _READ_FLAGS, dir_fd=src_dir)
    try:
        info = os.fstat(source)
        if not stat.S_ISREG(info.st_mode):
            return
        os.set_blocking(source, True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        target = os.open(dst_name, flags, stat.S_IMODE(info.st_mode) & 0o777, dir_fd=dst_dir)
        try:
            while chunk := os.read(source, _CHUNK):
                if quota is not None:
                    quota.charge(len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(target, view) :]
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(target)
    finally:
        os.close(source)


def _copy_tree_at(
    src_dir: int, src_name: str, dst_dir: int, dst_name: str, quota: Quota | None = None
) -> None:
    """Copy a folder without following links: links are copied as links."""
    if quota is not None:
        quota.charge(_FOLDER_COST)
    os.mkdir(dst_name, 0o700, dir_fd=dst_dir)
    with contextlib.ExitStack() as stack:
        src_top = os.open(src_name, DIR_FLAGS, dir_fd=src_dir)
        stack.callback(os.close, src_top)
        dst_top = os.open(dst_name, DIR_FLAGS, dir_fd=dst_dir)
        stack.callback(os.close, dst_top)
        # Relative paths rather than open descriptors keep wide trees from
        # running out of descriptors; depth is not bounded by recursion.
        pending: deque[tuple[str, ...]] = deque([()])
        while pending:
            relative = pending.popleft()
            src = open_relative(src_top, relative)
            try:
                dst = open_relative(dst_top, relative)
                try:
                    os.fchmod(dst, stat.S_IMODE(os.fstat(src).st_mode) & 0o777 | 0o700)
                    with os.scandir(src) as scan:
                        items = list(scan)
                    for item in items:
                        info = item.stat(follow_symlinks=False)
                        if stat.S_ISDIR(info.st_mode):
                            if quota is not None:
                                quota.charge(_FOLDER_COST)
                            os.mkdir(item.name, 0o700, dir_fd=dst)
                            pending.append((*relative, item.name))
                        elif stat.S_ISLNK(info.st_mode):
                            os.symlink(os.readlink(item.name, dir_fd=src), item.name, dir_fd=dst)
                        elif stat.S_ISREG(info.st_mode):
                            _copy_file_at(src, item.name, dst, item.name, quota)
                        # Sockets, FIFOs and devices are not copied.
                finally:
                    os.close(dst)
            finally:
                os.close(src)


def copy(
    root: ServerRoot, source: str, destination: str | None = None, *, quota: Quota | None = None
) -> str:
    """Copy a file, link or folder; returns the copy's user path.

    Without ``destination`` the copy goes next to the source as
    ``name copy.ext``, then ``name copy 2.ext`` and so on. With a ``quota``,
    the copy stops at the server's allocation (:class:`DiskLimitExceeded`)
    and what was copied is removed.
    """
    source_user = root.normalize(source)
    source_host = root.resolve(source, must_exist=True, follow_symlinks=False)
    if root.is_root(source_host):
        raise InvalidPath("The server's root folder cannot be copied")
    info = os.lstat(source_host)
    is_dir = stat.S_ISDIR(info.st_mode)
    if destination is None:
        parent_user = source_user.rsplit("/", 1)[0] or ""
        name = os.path.basename(source_host)
        for number in range(1, 10_000):
            candidate = f"{parent_user}/{_copy_name(name, number, is_dir)}"
            check_name(candidate.rsplit("/", 1)[1])
            destination_host = root.resolve(candidate, follow_symlinks=False)
            if not os.path.lexists(destination_host):
                break
        else:
            raise AlreadyExists(f"{source_user}: too many copies already exist")
    else:
        destination_host = root.resolve(destination, follow_symlinks=False)
        if root.is_root(destination_host):
            raise InvalidPath("The server's root folder cannot be replaced")
    destination_user = root.display(destination_host)
    if os.path.lexists(destination_host):
        raise AlreadyExists(f"{destination_user} already exists")
    if _inside(root.relative(destination_host), root.relative(source_host)):
        raise InvalidPath(f"{source_user} cannot be copied into itself")
    with (
        os_errors(destination_user),
        root.open_parent(source_host) as (src_dir, src_name),
        root.open_parent(destination_host, create=True) as (dst_dir, dst_name),
    ):
        try:
            if is_dir:
                _copy_tree_at(src_dir, src_name, dst_dir, dst_name, quota)
            elif stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(src_name, dir_fd=src_dir), dst_name, dir_fd=dst_dir)
            elif stat.S_ISREG(info.st_mode):
                _copy_file_at(src_dir, src_name, dst_dir, dst_name, quota)
            else:
                raise InvalidPath(f"{source_user} is not a regular file")
        except FileExistsError:
            # Created by someone else meanwhile: not ours to remove.
            if quota is not None:
                quota.refund()
            raise AlreadyExists(f"{destination_user} already exists") from None
        except BaseException:
            _remove_at(dst_dir, dst_name)
            if quota is not None:
                quota.refund()
            raise
    return destination_user


def _remove_at(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)
        else:
            os.unlink(name, dir_fd=dir_fd)


def chmod(root: ServerRoot, path: str, mode: int) -> None:
    """Set the permission bits (0 to 0o777) of a file or folder; links are refused."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise InvalidMode("The mode must be permission bits between 0 and 0777")
    user = root.normalize(path)
    host = root.resolve(path, must_exist=True, follow_symlinks=False)
    with os_errors(user):
        if root.is_root(host):
            fd = os.open(host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            with root.open_parent(host) as (parent, name):
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            info = os.fstat(fd)
            if stat.S_ISLNK(info.st_mode):
                raise InvalidPath(f"{user} is a symbolic link; change its target instead")
            # chmod on the descriptor's /proc entry acts on the inode the
            # O_PATH descriptor holds, so a link swapped in meanwhile is not followed.
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)


def disk_usage_bytes(root: ServerRoot) -> int:
    """The apparent size of everything in the folder; hard links count once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    with os_errors("/"):
        for _path, dirs, files, dir_fd in os.fwalk(root.path, follow_symlinks=False):
            for name in (*dirs, *files):
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                if not stat.S_ISDIR(info.st_mode):
                    total += info.st_size
    return total
