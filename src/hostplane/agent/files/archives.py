"""Extracting archives inside one server's folder (compressing is in ``compress``).

Archives come from users and from the internet, so extraction trusts nothing
in them: names, link targets, entry types and sizes are all checked, bytes are
counted as they are actually decompressed, and everything is first written
into a staging folder next to the target, reached only through descriptors
opened with ``O_NOFOLLOW``. Only a fully accepted archive is moved into place;
a refused one leaves nothing behind.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib
import lzma
import os
import secrets
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from hostplane.agent.files.confine import (
    DIR_FLAGS,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    ServerRoot,
)
from hostplane.agent.files.errors import (
    ArchiveRejected,
    NotADirectory,
    UnsupportedArchive,
    os_errors,
)
from hostplane.agent.files.operations import open_read

if TYPE_CHECKING:
    # Only the type: the disk module imports the file manager's confinement.
    from hostplane.agent.disk import Quota

MAX_DEPTH = 128
"""Deepest folder nesting an archive may create (deep nesting is a bomb of its own)."""

_CHUNK = 1024 * 1024
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_STAGING_PREFIX = ".extracting-"
# Room for tar headers, padding and long-name records on top of file data.
_HEADER_ALLOWANCE = 8192
# What a new folder is charged to a server's allocation: one block.
_FOLDER_COST = 4096

# Errors a damaged compressed stream or archive raises while being read.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    tarfile.TarError,
    zipfile.BadZipFile,
    ValueError,
)


def _optional_zstandard() -> ModuleType | None:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


_zstandard = _optional_zstandard()


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


# -- compress ---------------------------------------------------------------


def _detect(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        if _zstandard is None:
            raise UnsupportedArchive("Zstandard archives are not supported on this node")
        return "zstd"
    if head[257:262] == b"ustar":
        return "tar"
    raise UnsupportedArchive(
        "The file is not a supported archive (zip, tar, tar.gz, tar.xz, tar.bz2)"
    )


class _BoundedReader:
    """Decompressed bytes with a ceiling, so that nothing inside ``tarfile``
    (a huge extended header, data it skips) can decompress without limit."""

    def __init__(self, stream: _Readable, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._total = 0

    def read(self, size: int = -1, /) -> bytes:
        request = _CHUNK if size < 0 else min(size, _CHUNK)
        try:
            data = self._stream.read(request)
        except _READ_ERRORS as exc:
            raise ArchiveRejected("The archive is damaged or truncated") from exc
        self._total += len(data)
        if self._total > self._limit:
            raise ArchiveRejected("The archive expands beyond the allowed size")
        return data


def _decompressed(source: BinaryIO, kind: str) -> _Readable:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(source, "rb")
    if kind == "bzip2":
        return bz2.BZ2File(source, "rb")
    if kind == "zstd" and _zstandard is not None:
        decompressor = _zstandard.ZstdDecompressor(max_window_size=1 << 27)
        return cast("_Readable", decompressor.stream_reader(source, read_across_frames=True))
    return source


def _entry_parts(name: str) -> tuple[str, ...]:
    """The validated components of an entry's name, relative to the target."""
    if "\x00" in name:
        raise ArchiveRejected("The archive has an entry name with a NUL byte")
    shown = name[:200]
    if name.startswith("/"):
        raise ArchiveRejected(f"The archive has an absolute entry {shown!r}")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveRejected(f"The archive has an entry outside its folder: {shown!r}")
    if len(parts) > MAX_DEPTH:
        raise ArchiveRejected(f"The archive nests folders deeper than {MAX_DEPTH} levels")
    if len(os.fsencode(name)) > MAX_PATH_BYTES or any(
        len(os.fsencode(part)) > MAX_NAME_BYTES for part in parts
    ):
        raise ArchiveRejected(f"The archive has an entry with too long a name: {shown!r}")
    return parts


def _check_link_target(parts: tuple[str, ...], target: str) -> None:
    shown = "/".join(parts)[:200]
    if "\x00" in target or target.startswith("/"):
        raise ArchiveRejected(f"The link {shown!r} points outside the archive's folder")
    resolved = os.path.normpath(os.path.join(*parts[:-1], target) if parts[:-1] else target)
    if resolved == ".." or resolved.startswith("../"):
        raise ArchiveRejected(f"The link {shown!r} points outside the archive's folder")


class _Extractor:
    """Writes accepted entries under the staging folder, counting as it goes."""

    def __init__(
        self, stage_fd: int, *, max_bytes: int, max_files: int, quota: Quota | None = None
    ) -> None:
        self._stage = stage_fd
        self._max_bytes = max_bytes
        self._quota = quota
        self._max_files = max_files
        self.files = 0
        self.bytes = 0
        self.links: list[tuple[str, ...]] = []
        self._regular: set[tuple[str, ...]] = set()

    def _charge(self, size: int) -> None:
        if self._quota is not None:
            self._quota.charge(size)

    def _count(self) -> None:
        self.files += 1
        if self.files > self._max_files:
            raise ArchiveRejected(f"The archive holds more than {self._max_files} entries")

    def _folder(self, parts: tuple[str, ...]) -> int:
        """A descriptor of the staged folder ``parts``, created as needed."""
        fd = os.dup(self._stage)
        try:
            for index, name in enumerate(parts):
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    self._count()
                    self._charge(_FOLDER_COST)
                    os.mkdir(name, 0o755, dir_fd=fd)
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    # A link or a file already stands where a folder is needed.
                    shown = "/".join(parts[: index + 1])[:200]
                    raise ArchiveRejected(
                        f"The archive writes through {shown!r}, which is not a folder"
                    ) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _clear(self, parent: int, name: str, parts: tuple[str, ...]) -> None:
        """Make room for a later entry of the same name (tar semantics: the last wins)."""
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shown = "/".join(parts)[:200]
            raise ArchiveRejected(f"The archive has {shown!r} both as a folder and as a file")
        os.unlink(name, dir_fd=parent)
        self._regular.discard(parts)

    def directory(self, parts: tuple[str, ...], mode: int) -> None:
        if not parts:
            return
        fd = self._folder(parts)
        try:
            # Keep the owner's access so the rest of the archive can be written.
            os.fchmod(fd, (mode & 0o777) | 0o700)
        finally:
            os.close(fd)

    def file(
        self, parts: tuple[str, ...], read: Callable[[int], bytes], mode: int, mtime: float
    ) -> None:
        if not parts:
            raise ArchiveRejected("The archive has a file entry without a name")
        self._count()
        parent = self._folder(parts[:-1])
        try:
            self._clear(parent, parts[-1], parts)
            fd = os.open(parts[-1], _CREATE_FLAGS, 0o600, dir_fd=parent)
            try:
                while chunk := read(_CHUNK):
                    self.bytes += len(chunk)
                    if self.bytes > self._max_bytes:
                        raise ArchiveRejected(
                            f"The archive expands to more than {self._max_bytes} bytes"
                        )
                    # The server's allocation: what is left of it is this
                    # extraction's budget, charged before the bytes land.
                    self._charge(len(chunk))
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fchmod(fd, (mode & 0o777) | 0o600)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
            self._regular.add(parts)
        finally:
            os.close(parent)

    def symlink(self, parts: tuple[str, ...], target: str) -> None:
        if not parts:
            raise ArchiveRejected("The archive has a link entry without a name")
        _check_link_target(parts, target)
        self._count()
        parent = self._folder(parts[:-1])
        try:
            self._clear(parent, parts[-1], parts)
            os.symlink(target, parts[-1], dir_fd=parent)
            self.links.append(parts)
        finally:
            os.close(parent)

    def hardlink(self, parts: tuple[str, ...], target: tuple[str, ...]) -> None:
        if not parts or target not in self._regular:
            shown = "/".join(parts)[:200]
            raise ArchiveRejected(
                f"The hard link {shown!r} does not point to a file earlier in the archive"
            )
        self._count()
        source = self._folder(target[:-1])
        try:
            parent = self._folder(parts[:-1])
            try:
                self._clear(parent, parts[-1], parts)
                os.link(
                    target[-1],
                    parts[-1],
                    src_dir_fd=source,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
                self._regular.add(parts)
            finally:
                os.close(parent)
        finally:
            os.close(source)

    def check_links(self, stage_host: str) -> None:
        """Resolve every staged link with the whole tree in place: a chain of
        links, each harmless on its own, may still lead out of the folder."""
        for parts in self.links:
            resolved = os.path.realpath(os.path.join(stage_host, *parts))
            if os.path.commonpath([stage_host, resolved]) != stage_host:
                shown = "/".join(parts)[:200]
                raise ArchiveRejected(f"The link {shown!r} points outside the archive's folder")


def _tar_reader(stream: _Readable) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=cast("IO[bytes]", stream), mode="r|")
    except tarfile.ReadError as exc:
        raise UnsupportedArchive("The file is compressed but is not a tar archive") from exc


def _extract_tar(stream: _Readable, extractor: _Extractor) -> None:
    with _tar_reader(stream) as tar:
        try:
            for member in tar:
                parts = _entry_parts(member.name)
                if member.isdir():
                    extractor.directory(parts, member.mode)
                elif member.isreg():
                    data = tar.extractfile(member)
                    if data is None:  # pragma: no cover - isreg() members always have data
                        raise ArchiveRejected("The archive is damaged")
                    extractor.file(parts, data.read, member.mode, member.mtime)
                elif member.issym():
                    extractor.symlink(parts, member.linkname)
                elif member.islnk():
                    extractor.hardlink(parts, _entry_parts(member.linkname))
                elif member.ischr() or member.isblk() or member.isfifo():
                    raise ArchiveRejected(
                        f"The archive holds a device or FIFO: {'/'.join(parts)[:200]!r}"
                    )
                else:
                    raise ArchiveRejected(
                        f"The archive holds an unsupported entry: {'/'.join(parts)[:200]!r}"
                    )
        except tarfile.TarError as exc:
            raise ArchiveRejected("The archive is damaged or truncated") from exc


@contextlib.contextmanager
def _zip_reader(
    archive: zipfile.ZipFile, entry: zipfile.ZipInfo
) -> Iterator[Callable[[int], bytes]]:
    try:
        handle = archive.open(entry)
    except NotImplementedError as exc:
        raise UnsupportedArchive("The zip archive uses an unsupported compression method") from exc
    except _READ_ERRORS as exc:
        raise ArchiveRejected("The archive is damaged or truncated") from exc

    def read(size: int) -> bytes:
        try:
            return handle.read(size)
        except _READ_ERRORS as exc:
            raise ArchiveRejected("The archive is damaged or truncated") from exc

    with handle:
        yield read


def _extract_zip(source: BinaryIO, extractor: _Extractor, max_files: int) -> None:
    try:
        archive = zipfile.ZipFile(source)
    except _READ_ERRORS as exc:
        raise ArchiveRejected("The zip archive is damaged") from exc
    with archive:
        entries = archive.infolist()
        # The real count is kept while extracting; this only saves the work.
        if len(entries) > max_files:
            raise ArchiveRejected(f"The archive holds more than {max_files} entries")
        for entry in entries:
            parts = _entry_parts(entry.filename)
            if entry.flag_bits & 0x1:
                raise UnsupportedArchive("Encrypted zip archives are not supported")
            unix_mode = entry.external_attr >> 16 if entry.create_system == 3 else 0
            kind = stat.S_IFMT(unix_mode)
            mtime = datetime(*entry.date_time, tzinfo=UTC).timestamp()
            if entry.is_dir() or kind == stat.S_IFDIR:
                extractor.directory(parts, stat.S_IMODE(unix_mode) or 0o755)
            elif kind == stat.S_IFLNK:
                with _zip_reader(archive, entry) as read:
                    target = read(MAX_PATH_BYTES + 1)
                if len(target) > MAX_PATH_BYTES:
                    raise ArchiveRejected("The archive has a link with too long a target")
                extractor.symlink(parts, os.fsdecode(target))
            elif kind in (0, stat.S_IFREG):
                with _zip_reader(archive, entry) as read:
                    extractor.file(parts, read, stat.S_IMODE(unix_mode) or 0o644, mtime)
            else:
                raise ArchiveRejected(
                    f"The archive holds a device or FIFO: {'/'.join(parts)[:200]!r}"
                )


def _check_conflicts(source: int, target: int, relative: tuple[str, ...]) -> None:
    with os.scandir(source) as scan:
        items = list(scan)
    for item in items:
        try:
            existing = os.stat(item.name, dir_fd=target, follow_symlinks=False)
        except FileNotFoundError:
            continue
        staged_dir = item.is_dir(follow_symlinks=False)
        if stat.S_ISDIR(existing.st_mode) and not staged_dir:
            shown = "/".join((*relative, item.name))[:200]
            raise ArchiveRejected(f"The archive would replace the folder {shown!r} with a file")
        if staged_dir and stat.S_ISDIR(existing.st_mode):
            with _pair(source, target, item.name) as (inner_source, inner_target):
                _check_conflicts(inner_source, inner_target, (*relative, item.name))


@contextlib.contextmanager
def _pair(source: int, target: int, name: str) -> Iterator[tuple[int, int]]:
    inner_source = os.open(name, DIR_FLAGS, dir_fd=source)
    try:
        inner_target = os.open(name, DIR_FLAGS, dir_fd=target)
        try:
            yield inner_source, inner_target
        finally:
            os.close(inner_target)
    finally:
        os.close(inner_source)


def _move_into(source: int, target: int) -> None:
    """Move the staged tree into the target, merging folders. An existing file
    or link is replaced by rename, which never writes through a link."""
    with os.scandir(source) as scan:
        items = list(scan)
    for item in items:
        try:
            existing = os.stat(item.name, dir_fd=target, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(item.name, item.name, src_dir_fd=source, dst_dir_fd=target)
            continue
        if item.is_dir(follow_symlinks=False):
            if stat.S_ISDIR(existing.st_mode):
                with _pair(source, target, item.name) as (inner_source, inner_target):
                    _move_into(inner_source, inner_target)
                continue
            os.unlink(item.name, dir_fd=target)
        os.replace(item.name, item.name, src_dir_fd=source, dst_dir_fd=target)


def _staging_parent(root: ServerRoot, target: Path) -> Path:
    candidate = target if root.is_root(target) else target.parent
    while not root.is_root(candidate) and not candidate.is_dir():
        candidate = candidate.parent
    return candidate


def decompress(
    root: ServerRoot,
    archive_path: str,
    target_path: str,
    *,
    max_bytes: int,
    max_files: int,
    quota: Quota | None = None,
) -> dict[str, Any]:
    """Extract an archive into ``target_path`` (created if missing).

    The format is recognised by its first bytes, not its name. Returns
    ``{"files": entries created, "bytes": bytes of file data, "targetPath": ...}``.
    Raises :class:`ArchiveRejected` for entries leaving the folder, device
    files, or more than ``max_bytes`` / ``max_files``,
    :class:`DiskLimitExceeded` past what the server's ``quota`` leaves, and
    :class:`UnsupportedArchive` for anything not an archive. On any error
    nothing of the archive is left in the server's folder.
    """
    archive_user = root.normalize(archive_path)
    target_user = root.normalize(target_path)
    target = root.resolve(target_path)
    if os.path.lexists(target) and not target.is_dir():
        raise NotADirectory(f"{target_user} is not a folder")
    source, _size = open_read(root, archive_path)
    with source, os_errors(target_user):
        try:
            head = source.read(512)
            source.seek(0)
        except OSError as exc:
            raise ArchiveRejected(f"{archive_user} could not be read") from exc
        kind = _detect(head)
        stage_parent = _staging_parent(root, target)
        stage_name = _STAGING_PREFIX + secrets.token_hex(6)
        with root.open_dir(stage_parent) as parent_fd:
            os.mkdir(stage_name, 0o700, dir_fd=parent_fd)
            try:
                stage_fd = os.open(stage_name, DIR_FLAGS, dir_fd=parent_fd)
                try:
                    extractor = _Extractor(
                        stage_fd, max_bytes=max_bytes, max_files=max_files, quota=quota
                    )
                    if kind == "zip":
                        _extract_zip(source, extractor, max_files)
                    else:
                        limit = max_bytes + (max_files + 2) * _HEADER_ALLOWANCE
                        _extract_tar(_BoundedReader(_decompressed(source, kind), limit), extractor)
                    extractor.check_links(os.path.join(stage_parent, stage_name))
                    with root.open_dir(target, create=True) as target_fd:
                        _check_conflicts(stage_fd, target_fd, ())
                        _move_into(stage_fd, target_fd)
                except BaseException:
                    if quota is not None:
                        quota.refund()
                    raise
                finally:
                    os.close(stage_fd)
            finally:
                shutil.rmtree(stage_name, dir_fd=parent_fd, ignore_errors=True)
    return {"files": extractor.files, "bytes": extractor.bytes, "targetPath": target_user}
