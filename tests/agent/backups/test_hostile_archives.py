"""Archives made to escape the server's folder or exhaust the node: each is
refused, the server's files stay as they were, and nothing appears outside."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from hostplane.agent.backups import (
    ArchiveRejected,
    BackupError,
    TooLarge,
    extract_into,
    restore_archive,
)
from tests.agent.backups import listing, snapshot, write

Member = tuple[tarfile.TarInfo, bytes | None]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data if kind == tarfile.REGTYPE else None


def build(path: Path, members: list[Member]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


@pytest.fixture
def server(tmp_path: Path) -> Path:
    root = tmp_path / "servers" / "srv-1"
    write(root / "world/level.dat", b"precious")
    write(root / "server.properties", b"motd=hi\n")
    (tmp_path / "outside").mkdir()
    return root


def outside_target(tmp_path: Path) -> str:
    return str(tmp_path / "outside")


CASES: dict[str, Callable[[Path], list[Member]]] = {
    "dot-dot": lambda tmp: [entry("ok.txt", data=b"a"), entry("../evil", data=b"x")],
    "dot-dot-nested": lambda tmp: [entry("a/../../evil", data=b"x")],
    "absolute-name": lambda tmp: [entry(str(tmp / "outside" / "evil"), data=b"x")],
    "symlink-absolute-then-file-through-it": lambda tmp: [
        entry("out", tarfile.SYMTYPE, linkname=str(tmp / "outside")),
        entry("out/evil", data=b"x"),
    ],
    "symlink-up-then-file-through-it": lambda tmp: [
        entry("up", tarfile.SYMTYPE, linkname="../../outside"),
        entry("up/evil", data=b"x"),
    ],
    "symlink-inside-then-file-through-it": lambda tmp: [
        entry("world", tarfile.DIRTYPE),
        entry("w", tarfile.SYMTYPE, linkname="world"),
        entry("w/evil", data=b"x"),
    ],
    "symlinks-chained-out": lambda tmp: [
        entry("sub", tarfile.DIRTYPE),
        entry("l", tarfile.SYMTYPE, linkname="s/t/.."),
        entry("s", tarfile.SYMTYPE, linkname="sub"),
        entry("sub/t", tarfile.SYMTYPE, linkname=".."),
    ],
    "hardlink-to-etc-passwd": lambda tmp: [
        entry("passwd", tarfile.LNKTYPE, linkname="/etc/passwd"),
    ],
    "hardlink-up": lambda tmp: [
        entry("link", tarfile.LNKTYPE, linkname="../srv-1/world/level.dat"),
    ],
    "hardlink-to-unknown-file": lambda tmp: [
        entry("link", tarfile.LNKTYPE, linkname="world/level.dat"),
    ],
    "char-device": lambda tmp: [entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "block-device": lambda tmp: [entry("disk", tarfile.BLKTYPE, devmajor=8, devminor=0)],
    "fifo": lambda tmp: [entry("pipe", tarfile.FIFOTYPE)],
    "same-name-twice": lambda tmp: [
        entry("config.yml", data=b"a"),
        entry("config.yml", tarfile.SYMTYPE, linkname="/etc/passwd"),
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_refused_and_changes_nothing(
    case: str, server: Path, tmp_path: Path
) -> None:
    archive = build(tmp_path / "hostile.tar.zst", CASES[case](tmp_path))
    before = snapshot(server)
    around = listing(tmp_path)

    with pytest.raises(ArchiveRejected) as caught:
        restore_archive(archive, server, max_bytes=1 << 20, max_files=100)

    assert caught.value.code == "ARCHIVE_REJECTED"
    assert str(tmp_path) not in str(caught.value)
    assert snapshot(server) == before
    assert listing(tmp_path) == around
    assert not (tmp_path / "outside" / "evil").exists()


def test_size_bomb_stops_at_max_bytes(server: Path, tmp_path: Path) -> None:
    # Compresses to a few hundred bytes, and each file alone is under the limit.
    members = [entry(f"bomb-{n}.bin", data=bytes(400_000)) for n in range(5)]
    archive = build(tmp_path / "bomb.tar.zst", members)
    assert archive.stat().st_size < 10_000
    before = snapshot(server)
    around = listing(tmp_path)

    with pytest.raises(TooLarge) as caught:
        restore_archive(archive, server, max_bytes=1_000_000, max_files=100)

    assert caught.value.code == "TOO_LARGE"
    assert snapshot(server) == before
    assert listing(tmp_path) == around


def test_file_count_bomb_stops_at_max_files(server: Path, tmp_path: Path) -> None:
    members = [entry(f"d{n // 50}/f{n}") for n in range(150)]
    archive = build(tmp_path / "many.tar.zst", members)
    before = snapshot(server)
    around = listing(tmp_path)

    with pytest.raises(TooLarge):
        # 150 files fit; the folders d0..d2, created implicitly, count as well.
        restore_archive(archive, server, max_bytes=1 << 20, max_files=150)

    assert snapshot(server) == before
    assert listing(tmp_path) == around


def test_limits_are_inclusive(tmp_path: Path) -> None:
    archive = build(
        tmp_path / "exact.tar.zst",
        [entry("a", data=b"12345"), entry("b", data=b"67890")],
    )
    info = extract_into(archive, tmp_path / "out", max_bytes=10, max_files=2)
    assert (info.files, info.bytes) == (2, 10)


def test_truncated_archive_is_rejected(server: Path, tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = 100_000
        tar.addfile(info, io.BytesIO(bytes(100_000)))
    cut = raw.getvalue()[:50_000]
    archive = tmp_path / "cut.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(cut))
    before = snapshot(server)

    with pytest.raises(ArchiveRejected):
        restore_archive(archive, server, max_bytes=1 << 20, max_files=100)
    assert snapshot(server) == before


def test_not_zstd_is_rejected(server: Path, tmp_path: Path) -> None:
    archive = tmp_path / "plain.tar.zst"
    archive.write_bytes(b"this is not a zstd frame" * 100)
    with pytest.raises(ArchiveRejected):
        restore_archive(archive, server, max_bytes=1 << 20, max_files=100)
    assert (server / "world/level.dat").read_bytes() == b"precious"


def test_setuid_and_setgid_bits_are_dropped(tmp_path: Path) -> None:
    archive = build(
        tmp_path / "suid.tar.zst",
        [entry("tool", data=b"x", mode=0o6755), entry("dir", tarfile.DIRTYPE, mode=0o2775)],
    )
    target = tmp_path / "out"
    extract_into(archive, target, max_bytes=100, max_files=10)
    assert (target / "tool").stat().st_mode & 0o7777 == 0o755
    assert (target / "dir").stat().st_mode & 0o7777 == 0o775


def test_backup_error_is_the_base_of_every_refusal() -> None:
    for error in (ArchiveRejected, TooLarge):
        assert issubclass(error, BackupError)
