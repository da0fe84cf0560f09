"""Restoring: extraction into a staging folder with every entry checked, and a
swap by renames only when the whole archive was clean.

Restoring expects the server to be stopped: the server's folder is renamed
aside and replaced, so a process still working inside it would keep writing
into the old copy, which is then deleted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import queue
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

import zstandard

from hostplane.agent.backups import _tar
from hostplane.agent.backups.common import (
    _DECOMPRESSED_CHUNK,
    _QUEUE_CHUNKS,
    _RESTORED_MODE_MASK,
    Progress,
    RestoreInfo,
    _display,
    _expected_hex,
    _Throttle,
    file_sha256,
)
from hostplane.agent.backups.create import (
    _write_all,
)
from hostplane.agent.backups.store import (
    ArchiveRejected,
    BackupError,
    BackupNotFound,
    ChecksumMismatch,
    TooLarge,
)
from hostplane.agent.backups.stream import (
    _Cancelled,
)
from hostplane.agent.files.errors import DiskLimitExceeded


class _Decompressor:
    """Inflates an archive on a background thread, so decompressing the next
    megabytes overlaps with writing the current ones to disk. Hashes the
    compressed bytes as it reads them."""

    def __init__(self, archive: Path) -> None:
        self._archive = archive
        # None marks the end of the stream.
        self._chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self.digest = hashlib.sha256()
        self.read_bytes = 0
        self._thread = threading.Thread(target=self._run, name="archive-inflate", daemon=True)
        self._thread.start()

    def read(self, size: int) -> bytes:
        # The source zstandard pulls compressed bytes from (on the thread).
        data = self._raw.read(size)
        self.digest.update(data)
        self.read_bytes += len(data)
        return data

    def _run(self) -> None:
        try:
            with open(self._archive, "rb", buffering=0) as self._raw:
                # Only read() is used, which this object provides.
                reader = zstandard.ZstdDecompressor().stream_reader(
                    cast(IO[bytes], self), read_size=_DECOMPRESSED_CHUNK, read_across_frames=True
                )
                while not self._stop.is_set():
                    chunk = reader.read(_DECOMPRESSED_CHUNK)
                    if not chunk:
                        break
                    self._put(chunk)
            self._put(None)
        except _Cancelled:
            return
        except zstandard.ZstdError:
            self._put_final(ArchiveRejected("the archive is not a valid zstd stream"))
        except OSError as exc:
            self._put_final(BackupError(f"cannot read the archive: {exc.strerror}"))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who raises it
            self._put_final(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        while True:
            if self._stop.is_set():
                raise _Cancelled
            try:
                self._chunks.put(item, timeout=0.1)
            except queue.Full:
                continue
            return

    def _put_final(self, item: BaseException) -> None:
        with contextlib.suppress(_Cancelled):
            self._put(item)

    def next_chunk(self) -> bytes:
        """The next decompressed bytes; ``b""`` at the end of the stream."""
        item = self._chunks.get()
        if item is None:
            self._chunks.put(None)
            return b""
        if isinstance(item, BaseException):
            self._chunks.put(item)
            raise item
        return item

    def drain(self) -> None:
        """Reads to the end of the file, so the digest covers all of it."""
        while self.next_chunk():
            continue

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self._chunks.get_nowait()
            self._thread.join(0.05)


class _TarReader:
    """Reads the decompressed stream: whole headers, and content copied to a
    file descriptor straight from the decompressed chunks."""

    def __init__(self, source: _Decompressor) -> None:
        self._source = source
        self._chunk = b""
        self._view = memoryview(self._chunk)
        self._pos = 0

    def _refill(self) -> None:
        chunk = self._source.next_chunk()
        if not chunk:
            raise ArchiveRejected("the archive is truncated")
        self._chunk = chunk
        self._view = memoryview(chunk)
        self._pos = 0

    def read(self, size: int) -> bytes:
        end = self._pos + size
        if end <= len(self._chunk):
            data = self._chunk[self._pos : end]
            self._pos = end
            return data
        parts: list[bytes] = []
        while size:
            if self._pos == len(self._chunk):
                self._refill()
            take = min(size, len(self._chunk) - self._pos)
            parts.append(self._chunk[self._pos : self._pos + take])
            self._pos += take
            size -= take
        return b"".join(parts)

    def read_block_or_end(self) -> bytes | None:
        """The next 512-byte block, or ``None`` where the stream ends
        (which a well-formed archive never does before its end marker)."""
        if self._pos == len(self._chunk):
            chunk = self._source.next_chunk()
            if not chunk:
                return None
            self._chunk = chunk
            self._view = memoryview(chunk)
            self._pos = 0
        return self.read(_tar.BLOCK)

    def copy_to(self, fd: int, size: int, progress: Callable[[], None]) -> None:
        while size:
            if self._pos == len(self._chunk):
                self._refill()
                progress()
            take = min(size, len(self._chunk) - self._pos)
            _write_all(fd, self._view[self._pos : self._pos + take])
            self._pos += take
            size -= take

    def skip(self, size: int) -> None:
        while size:
            if self._pos == len(self._chunk):
                self._refill()
            take = min(size, len(self._chunk) - self._pos)
            self._pos += take
            size -= take


def _clean_name(raw: bytes) -> bytes:
    if b"\0" in raw:
        raise ArchiveRejected("the archive has a name containing a NUL byte")
    if raw.startswith(b"/"):
        # The name itself stays out of the message: it may be a host path.
        raise ArchiveRejected("the archive has an absolute name")
    parts = [part for part in raw.split(b"/") if part not in (b"", b".")]
    if b".." in parts:
        raise ArchiveRejected("the archive has a name leaving its folder")
    return b"/".join(parts)


def _inside(path: bytes, root: bytes) -> bool:
    return path == root or path.startswith(root + b"/")


class _Extractor:
    """Writes entries under ``root``, a folder this extraction created or
    found empty. Entries are only ever created below folders this archive
    created, never through a link, and never over an existing entry."""

    def __init__(
        self, root: Path, *, max_bytes: int, max_files: int, disk_limit: int | None = None
    ) -> None:
        self._root = os.fsencode(root)
        self._max_bytes = max_bytes
        self._disk_limit = disk_limit
        self._max_files = max_files
        self._kinds: dict[bytes, int] = {}
        self._folders: dict[bytes, tuple[int, int]] = {}
        self._symlinks: list[bytes] = []
        self._known_parent = b""
        self.files = 0
        self.bytes = 0

    def _path(self, name: bytes) -> bytes:
        return self._root + b"/" + name

    def _count(self) -> None:
        self.files += 1
        if self.files > self._max_files:
            raise TooLarge(f"the archive holds more than {self._max_files} files")

    def _prepare_parent(self, name: bytes) -> None:
        parent = posixpath.dirname(name)
        if not parent or parent == self._known_parent:
            return
        prefix = b""
        for part in parent.split(b"/"):
            prefix = prefix + b"/" + part if prefix else part
            kind = self._kinds.get(prefix)
            if kind is None:
                os.mkdir(self._path(prefix), 0o700)
                self._kinds[prefix] = _tar.DIRTYPE
                self._count()
            elif kind != _tar.DIRTYPE:
                raise ArchiveRejected(f"the archive writes through a link: {_display(name)}")
        self._known_parent = parent

    def _claim(self, name: bytes, typeflag: int) -> bool:
        """Checks ``name`` may be created; ``False`` for a folder that exists."""
        existing = self._kinds.get(name)
        if existing is not None:
            if existing == _tar.DIRTYPE and typeflag == _tar.DIRTYPE:
                return False
            raise ArchiveRejected(f"the archive holds {_display(name)} twice")
        self._prepare_parent(name)
        self._count()
        self._kinds[name] = typeflag
        return True

    def folder(self, name: bytes, mode: int, mtime_ns: int) -> None:
        if not name:
            return
        if self._claim(name, _tar.DIRTYPE):
            os.mkdir(self._path(name), 0o700)
        # Applied at the end: the folder must stay writable until its content
        # is in, and writing that content changes its mtime.
        self._folders[name] = (mode, mtime_ns)

    def file(
        self,
        name: bytes,
        mode: int,
        mtime_ns: int,
        size: int,
        reader: _TarReader,
        tick: Callable[[], None],
    ) -> None:
        if self.bytes + size > self._max_bytes:
            raise TooLarge(f"the archive holds more than {self._max_bytes} bytes")
        # Checked on the size each entry declares, before a byte of it is
        # written: the archive's total is not known before it is read.
        if self._disk_limit is not None and self.bytes + size > self._disk_limit:
            raise DiskLimitExceeded(
                f"the archive holds more than the server's disk allocation"
                f" ({self._disk_limit // 2**20} MB)"
            )
        self._claim(name, _tar.REGTYPE)
        fd = os.open(
            self._path(name),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            reader.copy_to(fd, size, tick)
            self.bytes += size
            os.fchmod(fd, mode & _RESTORED_MODE_MASK)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def symlink(self, name: bytes, target: bytes, mtime_ns: int) -> None:
        if not name:
            raise ArchiveRejected("the archive replaces its own folder with a link")
        if not target or b"\0" in target or target.startswith(b"/"):
            raise ArchiveRejected(f"the archive has a link leaving its folder: {_display(name)}")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if resolved == b".." or resolved.startswith(b"../"):
            raise ArchiveRejected(f"the archive has a link leaving its folder: {_display(name)}")
        self._claim(name, _tar.SYMTYPE)
        os.symlink(target, self._path(name))
        os.utime(self._path(name), ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        self._symlinks.append(name)

    def hardlink(self, name: bytes, target: bytes) -> None:
        if not name:
            raise ArchiveRejected("the archive replaces its own folder with a link")
        # Only to a file this archive wrote: anything else could be a file of
        # the host that the link would expose or let the server overwrite.
        source = _clean_name(target)
        if self._kinds.get(source) != _tar.REGTYPE:
            raise ArchiveRejected(
                f"the archive has a hard link leaving its folder: {_display(name)}"
            )
        self._claim(name, _tar.REGTYPE)
        os.link(self._path(source), self._path(name), follow_symlinks=False)

    def finish(self) -> None:
        # Each link was checked alone when it was written; together, links
        # through links could still point out, so check where they resolve.
        real_root = os.path.realpath(self._root)
        for name in self._symlinks:
            if not _inside(os.path.realpath(self._path(name)), real_root):
                raise ArchiveRejected(
                    f"the archive has a link leaving its folder: {_display(name)}"
                )
        for name in sorted(self._folders, key=lambda folder: folder.count(b"/"), reverse=True):
            mode, mtime_ns = self._folders[name]
            path = self._path(name)
            os.chmod(path, mode & _RESTORED_MODE_MASK)
            os.utime(path, ns=(mtime_ns, mtime_ns))


def _extract(
    archive: Path,
    target: Path,
    *,
    expected_sha256: str | None,
    max_bytes: int,
    max_files: int,
    progress: Progress | None,
    disk_limit: int | None = None,
) -> RestoreInfo:
    expected = _expected_hex(expected_sha256) if expected_sha256 is not None else None
    try:
        archive_size = archive.stat().st_size
    except FileNotFoundError:
        raise BackupNotFound("the backup archive does not exist") from None
    throttle = _Throttle(progress, archive_size)
    throttle.start()
    source = _Decompressor(archive)
    try:
        try:
            extractor = _Extractor(
                target, max_bytes=max_bytes, max_files=max_files, disk_limit=disk_limit
            )
            _extract_entries(
                _TarReader(source), extractor, lambda: throttle.update(source.read_bytes)
            )
            source.drain()
        except BaseException:
            source.close()
            # Corruption can show up as any error on the way; when the file
            # does not match its checksum, that is the error to report.
            if expected is not None and file_sha256(archive) != expected:
                raise ChecksumMismatch("the backup archive does not match its checksum") from None
            raise
        if expected is not None and source.digest.hexdigest() != expected:
            raise ChecksumMismatch("the backup archive does not match its checksum")
        extractor.finish()
    finally:
        source.close()
    throttle.finish()
    return RestoreInfo(files=extractor.files, bytes=extractor.bytes)


def _extract_entries(reader: _TarReader, extractor: _Extractor, tick: Callable[[], None]) -> None:
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        block = reader.read_block_or_end()
        if block is None:
            raise ArchiveRejected("the archive is truncated")
        if _tar.is_zero_block(block):
            return
        header = _tar.parse_header(block)
        typeflag = header.typeflag
        if typeflag in (_tar.PAX_LOCAL, _tar.PAX_GLOBAL, _tar.GNU_LONGNAME, _tar.GNU_LONGLINK):
            if header.size > _tar.MAX_META_BYTES:
                raise ArchiveRejected("the archive has an oversized extended header")
            data = reader.read(header.size)
            reader.skip(_tar.padding(header.size))
            if typeflag == _tar.PAX_LOCAL:
                pax = _tar.parse_pax(data)
            elif typeflag == _tar.GNU_LONGNAME:
                long_name = data.split(b"\0", 1)[0]
            elif typeflag == _tar.GNU_LONGLINK:
                long_link = data.split(b"\0", 1)[0]
            # Global headers set defaults this archive format does not use.
            continue
        raw_name = pax.get(b"path", long_name if long_name is not None else header.name)
        linkname = pax.get(b"linkpath", long_link if long_link is not None else header.linkname)
        size = _tar.parse_pax_size(pax[b"size"]) if b"size" in pax else header.size
        mtime_ns = _tar.parse_pax_mtime(pax[b"mtime"]) if b"mtime" in pax else header.mtime_ns
        pax, long_name, long_link = {}, None, None
        name = _clean_name(raw_name)
        try:
            if typeflag in (_tar.REGTYPE, _tar.AREGTYPE, _tar.CONTTYPE):
                if not name:
                    raise ArchiveRejected("the archive replaces its own folder with a file")
                extractor.file(name, header.mode, mtime_ns, size, reader, tick)
                reader.skip(_tar.padding(size))
                continue
            if typeflag == _tar.DIRTYPE:
                extractor.folder(name, header.mode, mtime_ns)
            elif typeflag == _tar.SYMTYPE:
                extractor.symlink(name, linkname, mtime_ns)
            elif typeflag == _tar.LNKTYPE:
                extractor.hardlink(name, linkname)
            elif typeflag in (_tar.CHRTYPE, _tar.BLKTYPE, _tar.FIFOTYPE):
                raise ArchiveRejected(f"the archive holds a device or FIFO: {_display(name)}")
            else:
                raise ArchiveRejected(f"the archive holds an unsupported entry: {_display(name)}")
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BackupError("not enough disk space to restore the archive") from None
            raise BackupError(f"cannot write {_display(name)}: {exc.strerror}") from None
        # Entries without content may still declare a size (hard links in
        # some writers); it is skipped, never written.
        reader.skip(size + _tar.padding(size))


def _remove_tree(path: Path) -> None:
    def retry_writable(function: Callable[..., object], failed: str, _exc: object) -> None:
        # Folders restored read-only (mode 0555) refuse deleting their
        # content until made writable again.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            function(failed)

    shutil.rmtree(path, onerror=retry_writable)


def _empty_folder(folder: Path) -> None:
    for child in list(os.scandir(folder)):
        if child.is_dir(follow_symlinks=False):
            _remove_tree(Path(child.path))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(child.path)


def extract_into(
    archive: Path,
    target_dir: Path,
    *,
    expected_sha256: str | None = None,
    max_bytes: int,
    max_files: int,
    progress: Progress | None = None,
    disk_limit: int | None = None,
) -> RestoreInfo:
    """Extracts ``archive`` into ``target_dir``, which must be empty or
    missing; on any failure the folder is left empty.

    Refuses (:class:`ArchiveRejected`) absolute names, ``..``, links leaving
    the folder, hard links to anything but a file of the archive, devices
    and FIFOs; stops with :class:`TooLarge` past ``max_bytes`` of content or
    ``max_files`` entries. With ``expected_sha256`` (hex or ``sha256:hex``)
    the archive file is hashed while it is read and a mismatch raises
    :class:`ChecksumMismatch`. ``progress(done, total)`` counts archive bytes
    read.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    with os.scandir(target_dir) as entries:
        if next(entries, None) is not None:
            raise BackupError("the folder to extract into is not empty")
    try:
        return _extract(
            archive,
            target_dir,
            expected_sha256=expected_sha256,
            max_bytes=max_bytes,
            max_files=max_files,
            progress=progress,
            disk_limit=disk_limit,
        )
    except BaseException:
        _empty_folder(target_dir)
        raise


def restore_archive(
    archive: Path,
    target_dir: Path,
    *,
    expected_sha256: str | None = None,
    max_bytes: int,
    max_files: int,
    progress: Progress | None = None,
    disk_limit: int | None = None,
) -> RestoreInfo:
    """Replaces the content of ``target_dir`` with the archive's.

    The archive is extracted into a staging folder next to ``target_dir``
    (with the checks of :func:`extract_into`); only when all of it is written
    and its checksum matched is the old folder moved aside, the staging
    folder moved to ``target_dir``'s path and the old one deleted. On any
    error ``target_dir`` is untouched. Files created after the backup do not
    survive. Expects the server to be stopped. ``disk_limit`` (bytes, the
    server's allocation) stops the extraction, with
    :class:`DiskLimitExceeded`, before an entry would take the content past it.
    """
    if not archive.is_file():
        raise BackupNotFound("the backup archive does not exist")
    parent = target_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.restore-", dir=parent))
    try:
        info = _extract(
            archive,
            staging,
            expected_sha256=expected_sha256,
            max_bytes=max_bytes,
            max_files=max_files,
            progress=progress,
            disk_limit=disk_limit,
        )
        try:
            folder_mode = stat.S_IMODE(os.stat(target_dir).st_mode)
        except FileNotFoundError:
            folder_mode = 0o755
        os.chmod(staging, folder_mode)
        _swap_in(staging, target_dir)
    except BaseException:
        _remove_tree(staging)
        raise
    return info


def _swap_in(staging: Path, target_dir: Path) -> None:
    old: Path | None = None
    if target_dir.exists() or target_dir.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.old-", dir=target_dir.parent))
        # rename() cannot replace a non-empty folder; move it into the
        # (empty) placeholder instead.
        aside = old / "files"
        os.rename(target_dir, aside)
    try:
        os.rename(staging, target_dir)
    except BaseException:
        if old is not None:
            os.rename(old / "files", target_dir)
            _remove_tree(old)
        raise
    if old is not None:
        _remove_tree(old)
