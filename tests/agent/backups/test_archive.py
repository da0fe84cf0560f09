from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from hostplane.agent.backups import (
    ArchiveRejected,
    BackupError,
    BackupNotFound,
    ChecksumMismatch,
    TooLarge,
    create_archive,
    extract_into,
    restore_archive,
)
from tests.agent.backups import (
    BASE_MTIME_NS,
    expected_after_restore,
    listing,
    make_tree,
    snapshot,
    write,
)
from tests.support.services import missing_service

LIMITS = {"max_bytes": 1 << 30, "max_files": 10_000}
HAS_TAR_ZSTD = shutil.which("tar") is not None and shutil.which("zstd") is not None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "servers" / "srv-1"
    make_tree(root)
    return root


def test_create_then_restore_gives_back_exactly_the_backed_up_files(
    tree: Path, tmp_path: Path
) -> None:
    before = snapshot(tree)
    archive = tmp_path / "backups" / "srv-1" / "b1.tar.zst"

    info = create_archive(tree, archive)

    data = archive.read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.checksum == "sha256:" + info.sha256
    assert info.size_bytes == len(data)
    assert not archive.with_name("b1.tar.zst.partial").exists()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    # After the backup: new files, a changed file, a deleted one.
    write(tree / "world/region/r.9.9.mca", b"new region")
    write(tree / "server.properties", b"motd=changed\n")
    (tree / "start.sh").unlink()
    (tree / "new-folder").mkdir()

    restored = restore_archive(archive, tree, expected_sha256=info.checksum, **LIMITS)

    after = snapshot(tree)
    assert after == expected_after_restore(before)
    assert b"world/region/r.9.9.mca" not in after
    assert b"new-folder" not in after
    assert os.lstat(tree / "props-link").st_mode & stat.S_IFMT(0o170000) == stat.S_IFLNK
    assert os.readlink(tree / "region-link") == "world/region"
    assert (tree / "hardlinked.properties").stat().st_ino == (
        tree / "server.properties"
    ).stat().st_ino
    assert stat.S_IMODE((tree / "bin/suid-tool").stat().st_mode) == 0o755
    assert not (tree / "console.fifo").exists()
    assert (tree / "logs/empty-folder").is_dir()
    # Every entry but the FIFO: the counts of both sides agree.
    assert restored.files == info.files == len(before)
    assert restored.bytes == info.source_bytes
    # No staging or old folder is left next to the server's folder.
    assert sorted(p.name for p in tree.parent.iterdir()) == ["srv-1"]


def test_restore_keeps_the_folder_path_and_its_mode(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.zst"
    create_archive(tree, archive)
    os.chmod(tree, 0o750)  # noqa: S103 - a mode the restore must keep
    restore_archive(archive, tree, **LIMITS)
    assert stat.S_IMODE(tree.stat().st_mode) == 0o750


def test_archive_is_deterministic_in_order_and_content(tree: Path, tmp_path: Path) -> None:
    first = create_archive(tree, tmp_path / "one.tar.zst", threads=1)
    second = create_archive(tree, tmp_path / "two.tar.zst", threads=2)
    one = zstandard.ZstdDecompressor().decompress(
        (tmp_path / "one.tar.zst").read_bytes(), max_output_size=1 << 26
    )
    two = zstandard.ZstdDecompressor().decompress(
        (tmp_path / "two.tar.zst").read_bytes(), max_output_size=1 << 26
    )
    assert one == two
    assert first.files == second.files


def test_python_tarfile_reads_names_links_and_subsecond_mtimes(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.zst"
    create_archive(tree, archive)
    raw = zstandard.ZstdDecompressor().stream_reader(archive.read_bytes()).read()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8") as tar:
        members = {member.name: member for member in tar.getmembers()}
    long_name = next(name for name in members if "long-name-" in name)
    assert len(long_name) > 255
    assert members["données/été.txt"].isfile()
    assert members["props-link"].issym() and members["props-link"].linkname == "server.properties"
    # The first name in archive order holds the content, later ones link to it.
    assert members["hardlinked.properties"].isfile()
    assert members["server.properties"].islnk()
    assert members["server.properties"].linkname == "hardlinked.properties"
    assert members["world/region"].isdir()
    assert members["server.properties"].mtime == BASE_MTIME_NS / 1e9
    names = list(members)
    assert names.index("world") < names.index("world/level.dat")


def test_gnu_tar_extracts_our_archives_and_we_restore_its(tree: Path, tmp_path: Path) -> None:
    if not HAS_TAR_ZSTD:
        # Skips locally; fails under CI, where the test command installs them.
        missing_service("GNU tar and zstd", "tar or zstd is not on PATH")
    before = snapshot(tree)
    ours = tmp_path / "ours.tar.zst"
    create_archive(tree, ours)
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", str(ours), "-C", str(by_tar)], check=True)
    # GNU tar keeps setuid bits when asked; compare all but modes of that file.
    tar_view = snapshot(by_tar)
    assert set(tar_view) == set(before)
    assert tar_view[b"world/region/r.0.0.mca"] == before[b"world/region/r.0.0.mca"]
    assert tar_view[b"plugins"][2] == before[b"plugins"][2]

    # GNU tar stores FIFOs, which a restore refuses.
    (tree / "console.fifo").unlink()
    theirs = tmp_path / "theirs.tar.zst"
    subprocess.run(["tar", "-I", "zstd -1", "-cf", str(theirs), "-C", str(tree), "."], check=True)
    target = tmp_path / "restored"
    restore_archive(theirs, target, **LIMITS)
    restored = snapshot(target)
    # GNU tar's default format stores whole seconds.
    assert {name: entry[:2] + entry[3:] for name, entry in restored.items()} == {
        name: entry[:2] + entry[3:] for name, entry in expected_after_restore(before).items()
    }


def test_corrupted_archive_with_checksum_is_refused_and_files_stay(
    tree: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.zst"
    info = create_archive(tree, archive)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    write(tree / "after-backup.txt", b"still here")
    before = snapshot(tree)
    around = listing(tmp_path)

    with pytest.raises(ChecksumMismatch) as caught:
        restore_archive(archive, tree, expected_sha256=info.sha256, **LIMITS)

    assert caught.value.code == "CHECKSUM_MISMATCH"
    assert snapshot(tree) == before
    assert listing(tmp_path) == around
    assert str(tmp_path) not in str(caught.value)


def test_corrupted_archive_without_checksum_is_rejected_and_files_stay(
    tree: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.zst"
    create_archive(tree, archive)
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0xFF
    archive.write_bytes(bytes(data))
    before = snapshot(tree)

    with pytest.raises(ArchiveRejected):
        restore_archive(archive, tree, **LIMITS)

    assert snapshot(tree) == before
    assert sorted(p.name for p in tree.parent.iterdir()) == ["srv-1"]


def test_malformed_expected_checksum_is_a_mismatch(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.zst"
    create_archive(tree, archive)
    with pytest.raises(ChecksumMismatch):
        restore_archive(archive, tree, expected_sha256="md5:abc", **LIMITS)


def test_missing_archive_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(BackupNotFound) as caught:
        restore_archive(tmp_path / "nope.tar.zst", tmp_path / "srv", **LIMITS)
    assert caught.value.code == "BACKUP_NOT_FOUND"
    assert str(tmp_path) not in str(caught.value)
    assert not (tmp_path / "srv").exists()


def test_create_from_missing_folder_leaves_no_file(tmp_path: Path) -> None:
    destination = tmp_path / "out" / "b.tar.zst"
    with pytest.raises(BackupError) as caught:
        create_archive(tmp_path / "missing", destination)
    assert str(tmp_path) not in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_into_needs_an_empty_folder_and_leaves_it_empty_on_failure(
    tree: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.zst"
    create_archive(tree, archive)
    occupied = tmp_path / "occupied"
    write(occupied / "x", b"x")
    with pytest.raises(BackupError):
        extract_into(archive, occupied, **LIMITS)
    assert (occupied / "x").read_bytes() == b"x"

    empty = tmp_path / "incoming"
    with pytest.raises(TooLarge):
        extract_into(archive, empty, max_bytes=1 << 30, max_files=5)
    assert empty.is_dir() and list(empty.iterdir()) == []

    info = extract_into(archive, empty, **LIMITS)
    assert snapshot(empty) == expected_after_restore(snapshot(tree))
    assert info.files == len(snapshot(tree))


def test_progress_is_throttled_and_ends_at_total(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.zst"
    created: list[tuple[int, int]] = []
    info = create_archive(tree, archive, progress=lambda done, total: created.append((done, total)))
    assert created[0] == (0, info.source_bytes)
    assert created[-1] == (info.source_bytes, info.source_bytes)
    assert [done for done, _ in created] == sorted(done for done, _ in created)
    assert len(created) <= 4

    restored: list[tuple[int, int]] = []
    restore_archive(
        archive, tree, progress=lambda done, total: restored.append((done, total)), **LIMITS
    )
    assert restored[0] == (0, info.size_bytes)
    assert restored[-1] == (info.size_bytes, info.size_bytes)
    assert len(restored) <= 4
