"""Archives as streams, for moving a server to another node without a
temporary file: :class:`ArchiveStream` produces, :class:`ArchiveReceiver` receives."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hostplane.agent.backups.common import (
    _QUEUE_CHUNKS,
    DEFAULT_CHUNK_SIZE,
    ArchiveInfo,
    Progress,
    ReceivedArchive,
    _expected_hex,
)
from hostplane.agent.backups.create import (
    _archive_folder,
    _fsync_dir,
    _write_all,
)
from hostplane.agent.backups.store import (
    PARTIAL_SUFFIX,
    BackupError,
    ChecksumMismatch,
    TooLarge,
)


class _Cancelled(Exception):
    """The consumer closed the stream; unwinds the producer thread."""


@dataclass
class _StreamShared:
    """What the producer thread shares with its :class:`ArchiveStream`. The
    thread holds only this, so an abandoned stream can be collected, and its
    finalizer can tell the thread to stop."""

    chunks: queue.Queue[bytes | ArchiveInfo | BaseException]
    stop: threading.Event

    def put(self, item: bytes | ArchiveInfo | BaseException) -> None:
        while True:
            if self.stop.is_set():
                raise _Cancelled
            try:
                self.chunks.put(item, timeout=0.1)
            except queue.Full:
                continue
            return


class _ChunkSink:
    def __init__(self, shared: _StreamShared, chunk_size: int) -> None:
        self._shared = shared
        self._chunk_size = chunk_size
        self._pending = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._pending += data
        while len(self._pending) >= self._chunk_size:
            self._shared.put(bytes(self._pending[: self._chunk_size]))
            del self._pending[: self._chunk_size]
        return len(data)

    def finish(self) -> None:
        if self._pending:
            self._shared.put(bytes(self._pending))
            self._pending.clear()


def _produce_stream(
    shared: _StreamShared,
    source_dir: Path,
    chunk_size: int,
    level: int,
    threads: int,
    progress: Progress | None,
) -> None:
    try:
        sink = _ChunkSink(shared, chunk_size)
        stored, content = _archive_folder(
            source_dir, sink, level=level, threads=threads, progress=progress
        )
        sink.finish()
        result: ArchiveInfo | BaseException = ArchiveInfo(
            size_bytes=sink.size, sha256=sink.digest.hexdigest(), files=stored, source_bytes=content
        )
    except _Cancelled:
        return
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who raises it
        result = exc
    with contextlib.suppress(_Cancelled):
        shared.put(result)


class ArchiveStream:
    """The compressed archive of a folder as an iterator of ``bytes`` chunks
    of ``chunk_size`` (the last one shorter), made on a background thread
    that waits whenever ``queue_chunks`` chunks are waiting for the consumer.

    ``sha256``, ``size_bytes`` and ``info`` are available once the iterator
    is exhausted. :meth:`close` (or leaving the ``with`` block) stops the
    thread early. ``progress`` is called on the background thread.
    """

    def __init__(
        self,
        source_dir: Path,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        level: int = 1,
        threads: int = 0,
        queue_chunks: int = _QUEUE_CHUNKS,
        progress: Progress | None = None,
    ) -> None:
        if chunk_size <= 0 or queue_chunks <= 0:
            raise ValueError("chunk_size and queue_chunks must be positive")
        self._shared = _StreamShared(queue.Queue(maxsize=queue_chunks), threading.Event())
        self._thread = threading.Thread(
            target=_produce_stream,
            args=(self._shared, source_dir, chunk_size, level, threads, progress),
            name="archive-stream",
            daemon=True,
        )
        self._started = False
        self._done = False
        self._info: ArchiveInfo | None = None

    def __iter__(self) -> ArchiveStream:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        if not self._started:
            self._started = True
            self._thread.start()
        item = self._shared.chunks.get()
        if isinstance(item, bytes):
            return item
        self._done = True
        self._thread.join()
        if isinstance(item, BaseException):
            raise item
        self._info = item
        raise StopIteration

    def close(self) -> None:
        """Stops the producer thread and waits for it to end."""
        self._done = True
        self._shared.stop.set()
        if not self._started:
            return
        while self._thread.is_alive():
            # Emptying the queue wakes a producer blocked on a full one.
            with contextlib.suppress(queue.Empty):
                while True:
                    self._shared.chunks.get_nowait()
            self._thread.join(0.05)

    def __enter__(self) -> ArchiveStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self._shared.stop.set()

    @property
    def info(self) -> ArchiveInfo:
        if self._info is None:
            raise RuntimeError("the archive stream has not been read to the end")
        return self._info

    @property
    def sha256(self) -> str:
        return self.info.sha256

    @property
    def size_bytes(self) -> int:
        return self.info.size_bytes


class ArchiveReceiver:
    """Writes an archive arriving in chunks to ``destination``, refusing more
    than ``max_bytes``. The file appears under its name only after
    :meth:`finish` has checked it; until then it is ``<name>.partial``."""

    def __init__(self, destination: Path, *, max_bytes: int) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        self._destination = destination
        self._partial = destination.with_name(destination.name + PARTIAL_SUFFIX)
        self._max_bytes = max_bytes
        self._fd: int | None = os.open(
            self._partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        self._digest = hashlib.sha256()
        self.size_bytes = 0

    def _open_fd(self) -> int:
        if self._fd is None:
            raise BackupError("the archive transfer is already finished or aborted")
        return self._fd

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        fd = self._open_fd()
        if self.size_bytes + len(chunk) > self._max_bytes:
            self.abort()
            raise TooLarge(f"the archive is larger than {self._max_bytes} bytes")
        self._digest.update(chunk)
        try:
            _write_all(fd, chunk)
        except OSError as exc:
            self.abort()
            raise BackupError(f"cannot store the archive: {exc.strerror}") from None
        self.size_bytes += len(chunk)

    def finish(self, expected_sha256: str | None = None) -> ReceivedArchive:
        """Completes the file; with ``expected_sha256`` (hex or ``sha256:hex``)
        a different digest deletes it and raises :class:`ChecksumMismatch`."""
        fd = self._open_fd()
        actual = self._digest.hexdigest()
        if expected_sha256 is not None and _expected_hex(expected_sha256) != actual:
            self.abort()
            raise ChecksumMismatch("the received archive does not match its checksum")
        try:
            os.fsync(fd)
        except OSError as exc:
            self.abort()
            raise BackupError(f"cannot store the archive: {exc.strerror}") from None
        os.close(fd)
        self._fd = None
        os.replace(self._partial, self._destination)
        _fsync_dir(self._destination.parent)
        return ReceivedArchive(size_bytes=self.size_bytes, sha256=actual)

    def abort(self) -> None:
        """Discards what was received; harmless after :meth:`finish`."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        with contextlib.suppress(FileNotFoundError):
            self._partial.unlink()

    def __enter__(self) -> ArchiveReceiver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()
