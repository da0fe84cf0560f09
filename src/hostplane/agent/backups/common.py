"""What backup archives share: results, checksums, limits and progress."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hostplane.agent.backups.store import (
    ChecksumMismatch,
)

Progress = Callable[[int, int], None]
"""``progress(done, total)``; see each function for what the bytes count."""

DEFAULT_CHUNK_SIZE: Final = 256 << 10
# Large enough that per-call overhead (Python, syscalls, handing input to
# zstd's workers) disappears next to the copying itself.
_IO_BUFFER: Final = 4 << 20
_DECOMPRESSED_CHUNK: Final = 1 << 20
_QUEUE_CHUNKS: Final = 8
_PROGRESS_INTERVAL: Final = 0.25
_BIG_FILE: Final = 1 << 20
# setuid and setgid bits are dropped on restore: an archive must not be able
# to plant a privileged executable on the node.
_RESTORED_MODE_MASK: Final = 0o1777
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ArchiveInfo:
    size_bytes: int
    """Size of the compressed archive."""
    sha256: str
    """Hex digest of the compressed archive."""
    files: int
    """Entries stored: files, folders and links."""
    source_bytes: int
    """Bytes of file content stored."""

    @property
    def checksum(self) -> str:
        return format_checksum(self.sha256)


@dataclass(frozen=True)
class ReceivedArchive:
    size_bytes: int
    sha256: str

    @property
    def checksum(self) -> str:
        return format_checksum(self.sha256)


@dataclass(frozen=True)
class RestoreInfo:
    files: int
    """Entries written: files, folders and links."""
    bytes: int
    """Bytes of file content written."""


def format_checksum(sha256_hex: str) -> str:
    """The form checksums are shown in: ``sha256:<hex>``."""
    return f"sha256:{sha256_hex}"


def _expected_hex(expected: str) -> str:
    value = expected.strip().lower().removeprefix("sha256:")
    if not _HEX_SHA256.fullmatch(value):
        raise ChecksumMismatch("the expected checksum is not a sha256 digest")
    return value


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in large blocks."""
    digest = hashlib.sha256()
    buffer = bytearray(_IO_BUFFER)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def _display(name: bytes) -> str:
    text = name.decode("utf-8", "replace")
    return text if len(text) <= 200 else text[:197] + "..."


class _Throttle:
    """Calls ``progress`` at most every quarter second, plus at the start and the end."""

    def __init__(self, callback: Progress | None, total: int) -> None:
        self._callback = callback
        self.total = total
        self._last = 0.0

    def start(self) -> None:
        if self._callback is not None:
            self._last = time.monotonic()
            self._callback(0, self.total)

    def update(self, done: int) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            self._callback(min(done, self.total), self.total)

    def finish(self) -> None:
        if self._callback is not None:
            self._callback(self.total, self.total)
