"""Confinement of user paths to one server's data folder.

The panel sends paths such as ``/world/level.dat``; a leading slash means the
root of the server's folder, never the host's. The game process can plant
symbolic links in its folder, so a path is checked twice:

1. :meth:`ServerRoot.resolve` resolves every existing component (``realpath``)
   and refuses the path when the result leaves the root. A link whose target
   stays inside the root may be followed.
2. The operation then reaches the resolved path by opening one component at a
   time from the root with ``O_NOFOLLOW`` (:meth:`ServerRoot.open_dir`,
   :meth:`ServerRoot.open_parent`). The resolved path holds no symbolic link,
   so meeting one there means it was planted after the check, and the
   operation is refused instead of being redirected outside.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from hostplane.agent.files.errors import (
    FileNotFound,
    InvalidPath,
    NotADirectory,
    from_os_error,
)

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def shown(user_path: str) -> str:
    """``user_path`` made safe to quote in a message (no NUL, bounded length)."""
    text = user_path.replace("\x00", "\\0")
    return text if len(text) <= 200 else text[:200] + "..."


def _encoded(text: str) -> bytes:
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        raise InvalidPath(f"{shown(text)}: the path is not valid text") from None


def check_name(name: str) -> str:
    """Return ``name`` if it is one plain file name, else raise :class:`InvalidPath`."""
    if "\x00" in name:
        raise InvalidPath("A name cannot contain a NUL byte")
    if name in ("", ".", "..") or "/" in name:
        raise InvalidPath(f"{shown(name)!r} is not a valid file name")
    if len(_encoded(name)) > MAX_NAME_BYTES:
        raise InvalidPath(f"{shown(name)}: the name is longer than {MAX_NAME_BYTES} bytes")
    return name


def open_relative(base: int, parts: tuple[str, ...]) -> int:
    """A new descriptor of the folder ``parts`` below ``base``, never following a link."""
    fd = os.dup(base)
    try:
        for name in parts:
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class ServerRoot:
    """One server's data folder, and the only way the file manager reaches it."""

    def __init__(self, path: Path, *, owner: tuple[int, int] | None = None) -> None:
        # The root's own ancestors belong to the host and are trusted; only
        # what lies below the root is under the game process's control.
        self._real = os.path.realpath(path)
        self.path = Path(self._real)
        self.owner = owner
        """The uid and gid the server runs as, when the node gives each server its own."""

    # -- user paths -------------------------------------------------------

    def parts(self, user_path: str) -> tuple[str, ...]:
        """The components of ``user_path`` below the root, validated."""
        if not isinstance(user_path, str):
            raise InvalidPath("A path must be text")
        if "\x00" in user_path:
            raise InvalidPath("A path cannot contain a NUL byte")
        if len(_encoded(user_path)) > MAX_PATH_BYTES:
            raise InvalidPath(f"The path is longer than {MAX_PATH_BYTES} bytes")
        parts: list[str] = []
        for part in user_path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise InvalidPath(f"{shown(user_path)}: '..' is not allowed in a path")
            if len(_encoded(part)) > MAX_NAME_BYTES:
                raise InvalidPath(
                    f"{shown(user_path)}: a name is longer than {MAX_NAME_BYTES} bytes"
                )
            parts.append(part)
        return tuple(parts)

    def normalize(self, user_path: str) -> str:
        """``user_path`` in its canonical form, ``/a/b``."""
        return "/" + "/".join(self.parts(user_path))

    def resolve(
        self, user_path: str, *, must_exist: bool = False, follow_symlinks: bool = True
    ) -> Path:
        """The absolute host path of ``user_path``, refused if it leaves the root.

        With ``follow_symlinks`` a symbolic link as the last component is
        resolved too (and must stay inside); without it the result names the
        link itself, for operations that act on links (list, delete, rename).
        Intermediate links are always resolved. The result contains no
        symbolic link unless one is planted later.
        """
        parts = self.parts(user_path)
        user = "/" + "/".join(parts)
        if not parts:
            host = self._real
        elif follow_symlinks:
            host = os.path.realpath(os.path.join(self._real, *parts))
        else:
            parent = os.path.realpath(os.path.join(self._real, *parts[:-1]))
            host = os.path.join(parent, parts[-1])
        if not self.contains(host):
            raise InvalidPath(
                f"{user}: a symbolic link on this path points outside the server's folder"
            )
        try:
            info: os.stat_result | None = os.lstat(host)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidPath(f"{user}: too many levels of symbolic links") from None
            if exc.errno == errno.ENOTDIR:
                raise NotADirectory(f"{user}: a part of this path is not a folder") from None
            raise from_os_error(exc, user) from None
        if info is None and must_exist:
            raise FileNotFound(f"{user} does not exist")
        if follow_symlinks and info is not None and stat.S_ISLNK(info.st_mode):
            # realpath leaves a link unresolved only when it loops.
            raise InvalidPath(f"{user}: too many levels of symbolic links")
        return Path(host)

    # -- host paths -------------------------------------------------------

    def contains(self, host_path: str | os.PathLike[str]) -> bool:
        """Whether ``host_path`` (already resolved) is the root or below it."""
        path = os.fspath(host_path)
        return os.path.isabs(path) and os.path.commonpath([self._real, path]) == self._real

    def relative(self, host_path: str | os.PathLike[str]) -> tuple[str, ...]:
        """The components of ``host_path`` below the root."""
        path = os.fspath(host_path)
        if not self.contains(path):
            raise InvalidPath("The path is outside the server's folder")
        relative = os.path.relpath(path, self._real)
        return () if relative == "." else tuple(relative.split(os.sep))

    def display(self, host_path: str | os.PathLike[str]) -> str:
        """The user's path (``/a/b``) of a host path inside the root."""
        return "/" + "/".join(self.relative(host_path))

    def is_root(self, host_path: str | os.PathLike[str]) -> bool:
        return os.fspath(host_path) == self._real

    # -- descriptors ------------------------------------------------------

    def _open_root(self) -> int:
        try:
            return os.open(self._real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFound("The server's folder does not exist") from None

    def _open_child_dir(self, fd: int, name: str, user: str, *, create: bool) -> int:
        for _attempt in range(3):
            try:
                return os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise FileNotFound(f"{user} does not exist") from None
                # Another writer may create it first; opening again settles it.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise from_os_error(exc, user) from None
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    raise InvalidPath(
                        f"{user} is a symbolic link and is not followed here"
                    ) from None
                raise NotADirectory(f"{user} is not a folder") from None
        raise FileNotFound(f"{user} does not exist")

    def _walk(self, parts: tuple[str, ...], *, create: bool) -> int:
        fd = self._open_root()
        try:
            for index, name in enumerate(parts):
                user = "/" + "/".join(parts[: index + 1])
                child = self._open_child_dir(fd, name, user, create=create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def make_dirs(self, host_path: str | os.PathLike[str]) -> None:
        """Create the folder ``host_path`` and its parents, never through a link."""
        os.close(self._walk(self.relative(host_path), create=True))

    @contextlib.contextmanager
    def open_dir(self, host_path: str | os.PathLike[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the folder ``host_path``, reached without following links.

        With ``create``, missing folders on the way are made.
        """
        fd = self._walk(self.relative(host_path), create=create)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open_parent(
        self, host_path: str | os.PathLike[str], *, create: bool = False
    ) -> Iterator[tuple[int, str]]:
        """A descriptor of the folder holding ``host_path``, and its last name."""
        parts = self.relative(host_path)
        if not parts:
            raise InvalidPath("The server's root folder cannot be used here")
        fd = self._walk(parts[:-1], create=create)
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    # -- ownership --------------------------------------------------------

    def adopt(self, user_path: str) -> int:
        """Give what the agent just wrote at ``user_path`` (and the folders on the
        way, and everything below it when it is a folder) to the server's uid, so
        the running server can change it at once; returns how many entries changed.

        Written as root, new files would stay out of the server's reach until its
        next start hands the whole folder over. Every step goes through
        descriptors and never follows a link, so a link the server plants
        cannot turn this into a chown of a host file; hard-linked files are
        left alone for the same reason.
        """
        owner = self.owner
        if owner is None:
            return 0
        parts = self.parts(user_path)
        changed = 0
        fd = self._open_root()
        try:
            for index, name in enumerate(parts):
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return changed
                changed += self._chown(fd, name, info, owner)
                if not stat.S_ISDIR(info.st_mode):
                    return changed
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                if index == len(parts) - 1:
                    break
            changed += self._adopt_below(fd, owner)
        finally:
            os.close(fd)
        return changed

    @staticmethod
    def _chown(dir_fd: int, name: str, info: os.stat_result, owner: tuple[int, int]) -> int:
        if (info.st_uid, info.st_gid) == owner:
            return 0
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            return 0
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
        return 1

    def _adopt_below(self, top: int, owner: tuple[int, int]) -> int:
        changed = 0
        for _, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in (*dirs, *files):
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                changed += self._chown(dir_fd, name, info, owner)
        return changed
