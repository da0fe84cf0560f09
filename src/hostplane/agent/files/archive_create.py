"""Compressing files of one server's folder into an archive inside it.

Sources are walked through descriptors opened with ``O_NOFOLLOW`` below the
server's root, so a symlink planted by the server cannot make the archive
carry a file from outside its folder.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from hostplane.agent.files.confine import (
    DIR_FLAGS,
    ServerRoot,
    check_name,
    open_relative,
)
from hostplane.agent.files.errors import (
    AlreadyExists,
    InvalidPath,
    NotADirectory,
    os_errors,
)
from hostplane.agent.files.operations import atomic_write

if TYPE_CHECKING:
    # Only the type: the disk module imports the file manager's confinement.
    from hostplane.agent.disk import Quota

_CHUNK = 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can hold

_WRITE_MODES = (
    (".tar.gz", "w|gz"),
    (".tgz", "w|gz"),
    (".tar.xz", "w|xz"),
    (".txz", "w|xz"),
    (".zip", "zip"),
)


def _walk_item(
    root: ServerRoot, host: Path, arcname: str
) -> Iterator[tuple[str, os.stat_result, int, str]]:
    """``(name in archive, lstat, folder descriptor, name in folder)`` for an
    item and, for a folder, everything below it; links are never followed."""
    with root.open_parent(host) as (parent, name):
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        yield arcname, info, parent, name
        if not stat.S_ISDIR(info.st_mode):
            return
        top = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        pending: deque[tuple[str, ...]] = deque([()])
        while pending:
            relative = pending.popleft()
            fd = open_relative(top, relative)
            try:
                with os.scandir(fd) as scan:
                    items = sorted(scan, key=lambda item: item.name)
                for item in items:
                    try:
                        child = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield "/".join((arcname, *relative, item.name)), child, fd, item.name
                    if stat.S_ISDIR(child.st_mode):
                        pending.append((*relative, item.name))
            finally:
                os.close(fd)
    finally:
        os.close(top)


def _open_regular(dir_fd: int, name: str) -> BinaryIO | None:
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _tar_writer(sink: IO[bytes], mode: str) -> tarfile.TarFile:
    if mode == "w|xz":
        return tarfile.open(fileobj=sink, mode="w|xz", format=tarfile.PAX_FORMAT)
    return tarfile.open(fileobj=sink, mode="w|gz", format=tarfile.PAX_FORMAT)


def _write_tar(
    entries: Iterator[tuple[str, os.stat_result, int, str]], sink: IO[bytes], mode: str
) -> None:
    with _tar_writer(sink, mode) as tar:
        for arcname, info, dir_fd, name in entries:
            member = tarfile.TarInfo(arcname)
            member.mtime = int(info.st_mtime)
            member.mode = stat.S_IMODE(info.st_mode) & 0o777
            if stat.S_ISDIR(info.st_mode):
                member.type = tarfile.DIRTYPE
                tar.addfile(member)
            elif stat.S_ISLNK(info.st_mode):
                member.type = tarfile.SYMTYPE
                member.linkname = os.readlink(name, dir_fd=dir_fd)
                tar.addfile(member)
            elif stat.S_ISREG(info.st_mode):
                source = _open_regular(dir_fd, name)
                if source is None:
                    continue
                with source:
                    member.size = os.fstat(source.fileno()).st_size
                    tar.addfile(member, source)


def _write_zip(entries: Iterator[tuple[str, os.stat_result, int, str]], sink: IO[bytes]) -> None:
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, info, dir_fd, name in entries:
            date_time = time.gmtime(max(info.st_mtime, _ZIP_EPOCH))[:6]
            permissions = stat.S_IMODE(info.st_mode) & 0o777
            if stat.S_ISDIR(info.st_mode):
                entry = zipfile.ZipInfo(arcname + "/", date_time)
                entry.external_attr = (stat.S_IFDIR | permissions) << 16 | 0x10
                archive.writestr(entry, b"")
            elif stat.S_ISREG(info.st_mode):
                # Links are left out: zip has no portable way to store one.
                source = _open_regular(dir_fd, name)
                if source is None:
                    continue
                with source:
                    entry = zipfile.ZipInfo(arcname, date_time)
                    entry.external_attr = (stat.S_IFREG | permissions) << 16
                    entry.compress_type = zipfile.ZIP_DEFLATED
                    entry.file_size = os.fstat(source.fileno()).st_size
                    with archive.open(entry, "w") as target:
                        shutil.copyfileobj(source, target, _CHUNK)


def compress(
    root: ServerRoot,
    paths: list[str],
    archive_name: str,
    destination: str = "/",
    *,
    quota: Quota | None = None,
) -> str:
    """Pack ``paths`` into a new archive in ``destination``; returns its user path.

    The archive counts against the server's ``quota``
    (:class:`DiskLimitExceeded`, and no archive, when it does not fit).

    The format follows the name's suffix (``.zip``, ``.tar.gz``/``.tgz``,
    ``.tar.xz``/``.txz``); any other name gets ``.tar.gz`` appended. Each
    item is stored under its own name with its subtree. Tar keeps links as
    links; zip leaves them out. Links are never followed.
    """
    check_name(archive_name)
    lowered = archive_name.lower()
    mode = next((mode for suffix, mode in _WRITE_MODES if lowered.endswith(suffix)), None)
    if mode is None:
        archive_name = check_name(archive_name + ".tar.gz")
        mode = "w|gz"
    if not paths:
        raise InvalidPath("Choose at least one file or folder to compress")
    folder = root.resolve(destination, must_exist=True)
    if not folder.is_dir():
        raise NotADirectory(f"{root.normalize(destination)} is not a folder")
    archive_user = root.display(folder).rstrip("/") + "/" + archive_name
    items: dict[str, Path] = {}
    for path in paths:
        host = root.resolve(path, must_exist=True, follow_symlinks=False)
        if root.is_root(host):
            children = {name: host / name for name in sorted(os.listdir(host))}
        else:
            children = {host.name: host}
        for name, child in children.items():
            if items.setdefault(name, child) != child:
                raise InvalidPath(f"Two items named {name!r} cannot go into one archive")
    if os.path.lexists(folder / archive_name):
        raise AlreadyExists(f"{archive_user} already exists")

    with (
        os_errors(archive_user),
        atomic_write(root, archive_user, max_bytes=None, quota=quota) as writer,
    ):
        own = os.fstat(writer.descriptor)

        def entries() -> Iterator[tuple[str, os.stat_result, int, str]]:
            for name, host in items.items():
                for entry in _walk_item(root, host, name):
                    # The archive being written may lie inside a folder being packed.
                    if (entry[1].st_dev, entry[1].st_ino) != (own.st_dev, own.st_ino):
                        yield entry

        sink = cast("IO[bytes]", writer)
        if mode == "zip":
            _write_zip(entries(), sink)
        else:
            _write_tar(entries(), sink, mode)
    return archive_user


# -- decompress -------------------------------------------------------------
