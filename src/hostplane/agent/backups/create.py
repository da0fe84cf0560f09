"""Creating an archive: the folder read once, compressed on zstd's worker threads,
hashed on its way to disk (no second read for the checksum)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from hostplane.agent.backups import _tar
from hostplane.agent.backups.common import (
    _BIG_FILE,
    _IO_BUFFER,
    ArchiveInfo,
    Progress,
    _display,
    _Throttle,
)
from hostplane.agent.backups.store import (
    PARTIAL_SUFFIX,
    BackupError,
)


@dataclass(slots=True)
class _Entry:
    name: bytes
    path: bytes
    typeflag: int
    mode: int
    mtime_ns: int
    uid: int
    gid: int
    linkname: bytes = b""


def _sorted_children(directory: bytes, name: bytes) -> list[os.DirEntry[bytes]]:
    try:
        with os.scandir(directory) as iterator:
            return sorted(iterator, key=lambda entry: entry.name)
    except FileNotFoundError:
        # Deleted by the running server since its parent was listed.
        return []
    except OSError as exc:
        raise BackupError(f"cannot read folder {_display(name) or '/'}: {exc.strerror}") from None


def _scan(source_dir: Path) -> tuple[list[_Entry], int]:
    """Every entry to archive in archive order (each folder before its
    content, names sorted bytewise), and the total size of the files."""
    root = os.fsencode(source_dir)
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise BackupError("the folder to back up is not a folder")
    except FileNotFoundError:
        raise BackupError("the folder to back up does not exist") from None
    entries: list[_Entry] = []
    total = 0
    first_links: dict[tuple[int, int], bytes] = {}
    # Iterators instead of recursion: nesting depth is up to the server's files.
    stack: list[tuple[Iterator[os.DirEntry[bytes]], bytes]] = [
        (iter(_sorted_children(root, b"")), b"")
    ]
    while stack:
        children, prefix = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        name = prefix + child.name
        try:
            info = child.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        mode = info.st_mode
        entry = _Entry(name, child.path, 0, mode, info.st_mtime_ns, info.st_uid, info.st_gid)
        if stat.S_ISREG(mode):
            entry.typeflag = _tar.REGTYPE
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and key in first_links:
                entry.typeflag = _tar.LNKTYPE
                entry.linkname = first_links[key]
            else:
                if info.st_nlink > 1:
                    first_links[key] = name
                total += info.st_size
        elif stat.S_ISDIR(mode):
            entry.typeflag = _tar.DIRTYPE
            stack.append((iter(_sorted_children(child.path, name)), name + b"/"))
        elif stat.S_ISLNK(mode):
            entry.typeflag = _tar.SYMTYPE
            try:
                entry.linkname = os.readlink(child.path)
            except FileNotFoundError:
                continue
        else:
            # Sockets, FIFOs and devices are runtime objects, not data.
            continue
        entries.append(entry)
    return entries, total


class _TarBuffer:
    """Builds the tar stream in one large buffer and hands it to the
    compressor a buffer at a time; file content is read straight into it."""

    def __init__(self, compressor: Any, throttle: _Throttle) -> None:
        self._compressor = compressor
        self._buffer = bytearray(_IO_BUFFER)
        self._view = memoryview(self._buffer)
        self._used = 0
        self._throttle = throttle
        self.content_bytes = 0

    def flush(self) -> None:
        if self._used:
            self._compressor.write(self._view[: self._used])
            self._used = 0

    def put(self, data: bytes) -> None:
        if self._used + len(data) > _IO_BUFFER:
            self.flush()
        self._view[self._used : self._used + len(data)] = data
        self._used += len(data)

    def put_file(self, fd: int, size: int) -> None:
        remaining = size
        while remaining:
            if self._used == _IO_BUFFER:
                self.flush()
            want = min(remaining, _IO_BUFFER - self._used)
            count = os.readv(fd, [self._view[self._used : self._used + want]])
            if count == 0:
                # The file shrank while being read (the server is running):
                # the header promised ``size`` bytes, so pad with zeros as
                # GNU tar does, keeping the archive readable.
                self._zeros(remaining)
                break
            self._used += count
            remaining -= count
            self.content_bytes += count
            self._throttle.update(self.content_bytes)
        self._zeros(_tar.padding(size))

    def _zeros(self, count: int) -> None:
        while count:
            if self._used == _IO_BUFFER:
                self.flush()
            step = min(count, _IO_BUFFER - self._used)
            self._view[self._used : self._used + step] = bytes(step)
            self._used += step
            count -= step


def _write_tar(entries: list[_Entry], out: _TarBuffer) -> int:
    """Writes the entries; returns how many were stored (files that vanished
    since the scan are skipped)."""
    stored = 0
    stored_files: set[bytes] = set()
    for entry in entries:
        typeflag = entry.typeflag
        if typeflag == _tar.LNKTYPE and entry.linkname in stored_files:
            out.put(
                _tar.header(
                    entry.name,
                    typeflag=_tar.LNKTYPE,
                    mode=entry.mode,
                    mtime_ns=entry.mtime_ns,
                    linkname=entry.linkname,
                    uid=entry.uid,
                    gid=entry.gid,
                )
            )
        elif typeflag in (_tar.REGTYPE, _tar.LNKTYPE):
            if not _write_file(entry, out):
                continue
            stored_files.add(entry.name)
        elif typeflag == _tar.DIRTYPE:
            out.put(
                _tar.header(
                    entry.name + b"/",
                    typeflag=_tar.DIRTYPE,
                    mode=entry.mode,
                    mtime_ns=entry.mtime_ns,
                    uid=entry.uid,
                    gid=entry.gid,
                )
            )
        else:
            out.put(
                _tar.header(
                    entry.name,
                    typeflag=_tar.SYMTYPE,
                    mode=entry.mode,
                    mtime_ns=entry.mtime_ns,
                    linkname=entry.linkname,
                    uid=entry.uid,
                    gid=entry.gid,
                )
            )
        stored += 1
    out.put(_tar.END_OF_ARCHIVE)
    out.flush()
    return stored


def _write_file(entry: _Entry, out: _TarBuffer) -> bool:
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            # Replaced by a symlink since the scan; never follow it.
            return False
        raise BackupError(f"cannot read {_display(entry.name)}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        if info.st_size >= _BIG_FILE:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        out.put(
            _tar.header(
                entry.name,
                typeflag=_tar.REGTYPE,
                mode=info.st_mode,
                mtime_ns=info.st_mtime_ns,
                size=info.st_size,
                uid=info.st_uid,
                gid=info.st_gid,
            )
        )
        try:
            out.put_file(fd, info.st_size)
        except OSError as exc:
            raise BackupError(f"cannot read {_display(entry.name)}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return True


def _compressor(level: int, threads: int) -> zstandard.ZstdCompressor:
    # zstandard counts -1 as "one worker per CPU"; 0 there would mean no
    # workers at all, and this API promises all cores for 0.
    workers = -1 if threads <= 0 else threads
    return zstandard.ZstdCompressor(level=level, threads=workers, write_checksum=True)


def _archive_folder(
    source_dir: Path,
    sink: Any,
    *,
    level: int,
    threads: int,
    progress: Progress | None,
) -> tuple[int, int]:
    """Scans, tars and compresses ``source_dir`` into ``sink`` (an object
    with ``write``); returns (entries stored, content bytes)."""
    entries, total = _scan(source_dir)
    throttle = _Throttle(progress, total)
    throttle.start()
    with _compressor(level, threads).stream_writer(
        sink, write_size=_IO_BUFFER, closefd=False
    ) as compressor:
        out = _TarBuffer(compressor, throttle)
        stored = _write_tar(entries, out)
    throttle.finish()
    return stored, out.content_bytes


class _FileSink:
    """Hashes the compressed bytes on their way to the file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        _write_all(self._fd, data)
        self.size += len(data)
        return len(data)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create_archive(
    source_dir: Path,
    destination: Path,
    *,
    level: int = 1,
    threads: int = 0,
    progress: Progress | None = None,
) -> ArchiveInfo:
    """Archives ``source_dir`` into ``destination``.

    Symlinks are stored as links, hard links once, sockets, FIFOs and
    devices are skipped. The archive appears under its name only once it
    is complete and on disk. ``progress(done, total)`` counts file content
    bytes; ``threads`` is the number of compression workers (0: one per
    core). Raises :class:`BackupError` when the folder cannot be read.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + PARTIAL_SUFFIX)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        sink = _FileSink(fd)
        stored, content = _archive_folder(
            source_dir, sink, level=level, threads=threads, progress=progress
        )
        # A backup reported as made must survive a power cut.
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    os.close(fd)
    os.replace(partial, destination)
    _fsync_dir(destination.parent)
    return ArchiveInfo(
        size_bytes=sink.size, sha256=sink.digest.hexdigest(), files=stored, source_bytes=content
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
