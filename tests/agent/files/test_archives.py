"""Archives: round trips, and a hostile corpus that must leave nothing behind."""

from __future__ import annotations

import bz2
import gzip
import io
import os
import random
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostplane.agent.files import (
    AlreadyExists,
    ArchiveRejected,
    InvalidPath,
    ServerRoot,
    UnsupportedArchive,
    compress,
    decompress,
    list_dir,
)
from tests.agent.files import HOST_EVIL, HOST_OUTSIDE, SECRET, make_root, outside, tree

MB = 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Iterator[ServerRoot]:
    server = make_root(tmp_path)
    before = outside(tmp_path)
    yield server
    assert outside(tmp_path) == before
    assert not os.path.lexists(HOST_OUTSIDE)
    assert not os.path.lexists(HOST_EVIL)


def _extract(root: ServerRoot, name: str, target: str = "/out", **limits: int) -> dict[str, object]:
    return decompress(
        root,
        name,
        target,
        max_bytes=limits.get("max_bytes", 10 * MB),
        max_files=limits.get("max_files", 1000),
    )


def _tar(root: ServerRoot, name: str, build: Callable[[tarfile.TarFile], None]) -> None:
    with tarfile.open(root.path / name, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        build(archive)


def _add(archive: tarfile.TarFile, name: str, data: bytes = b"data", **fields: object) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    for key, value in fields.items():
        setattr(member, key, value)
    archive.addfile(member, io.BytesIO(data) if member.isreg() else None)


def _zip(root: ServerRoot, name: str, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(root.path / name, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, data in entries.items():
            archive.writestr(zipfile.ZipInfo(entry), data)


def _populate(root: ServerRoot) -> None:
    rng = random.Random(7)
    world = root.path / "world"
    (world / "region").mkdir(parents=True)
    (world / "empty").mkdir()
    (world / "region" / "r.0.0.mca").write_bytes(rng.randbytes(40_000))
    (world / "level.dat").write_bytes(rng.randbytes(1000))
    (world / "level.dat").chmod(0o600)
    (root.path / "server.properties").write_bytes(b"motd=hi\n")


def _only_the_archive_is_left(root: ServerRoot, name: str) -> None:
    assert os.listdir(root.path) == [name]


@pytest.mark.parametrize(
    "name", ["backup.tar.gz", "backup.tgz", "backup.tar.xz", "backup.txz", "backup.zip"]
)
def test_round_trip(root: ServerRoot, name: str) -> None:
    _populate(root)
    if not name.endswith(".zip"):
        (root.path / "world" / "latest").symlink_to("level.dat")
    original = tree(root.path / "world")
    assert compress(root, ["/world", "/server.properties"], name) == f"/{name}"
    result = _extract(root, f"/{name}", "/restored")
    assert tree(root.path / "restored" / "world") == original
    assert (root.path / "restored" / "server.properties").read_bytes() == b"motd=hi\n"
    assert result["targetPath"] == "/restored"
    assert result["bytes"] == 41_008
    assert (root.path / "restored" / "world" / "level.dat").stat().st_mode & 0o777 == 0o600
    assert not any(entry.startswith(".") for entry in os.listdir(root.path))


def test_compress_checks_names_and_never_packs_itself(root: ServerRoot) -> None:
    _populate(root)
    for bad in ("a/b.zip", "a\x00.zip", "..", ""):
        with pytest.raises(InvalidPath):
            compress(root, ["/world"], bad)
    assert compress(root, ["/"], "everything") == "/everything.tar.gz"
    with gzip.open(root.path / "everything.tar.gz") as raw, tarfile.open(fileobj=raw) as archive:
        names = archive.getnames()
    assert "world/level.dat" in names
    assert not any(name.startswith(("everything", ".")) for name in names)
    with pytest.raises(AlreadyExists):
        compress(root, ["/world"], "everything.tar.gz")
    assert compress(root, ["/world"], "w.zip", "/world/region") == "/world/region/w.zip"
    with zipfile.ZipFile(root.path / "world" / "region" / "w.zip") as archive:
        names = archive.namelist()
    assert "world/region/r.0.0.mca" in names
    assert not any("w.zip" in name or ".part" in name for name in names)


def test_compress_does_not_follow_links_out(root: ServerRoot, tmp_path: Path) -> None:
    (root.path / "world").mkdir()
    (root.path / "world" / "out").symlink_to(tmp_path / "sibling")
    compress(root, ["/world"], "w.zip")
    compress(root, ["/world"], "w.tar.gz")
    with zipfile.ZipFile(root.path / "w.zip") as archive:
        assert archive.namelist() == ["world/"]
    with tarfile.open(root.path / "w.tar.gz") as archive:
        link = archive.getmember("world/out")
    assert link.issym() and link.linkname == str(tmp_path / "sibling")
    assert SECRET not in (root.path / "w.tar.gz").read_bytes()


def test_the_format_comes_from_the_content_not_the_name(root: ServerRoot) -> None:
    _populate(root)
    compress(root, ["/world"], "a.zip")
    compress(root, ["/world"], "b.tar.xz")
    os.rename(root.path / "a.zip", root.path / "a.tar.gz")
    os.rename(root.path / "b.tar.xz", root.path / "b.zip")
    with tarfile.open(root.path / "c.txt", "w") as plain:
        plain.add(root.path / "world", "world")
    (root.path / "d.bin").write_bytes(bz2.compress((root.path / "c.txt").read_bytes()))
    for name in ("a.tar.gz", "b.zip", "c.txt", "d.bin"):
        _extract(root, f"/{name}", f"/{name}-out")
        assert tree(root.path / f"{name}-out" / "world") == tree(root.path / "world")


def test_zstandard_tar(root: ServerRoot) -> None:
    zstandard = pytest.importorskip("zstandard")
    with tarfile.open(root.path / "raw.tar", "w") as plain:
        _add(plain, "hello.txt", b"hello")
    data = zstandard.ZstdCompressor().compress((root.path / "raw.tar").read_bytes())
    (root.path / "a.tar.zst").write_bytes(data)
    _extract(root, "/a.tar.zst")
    assert (root.path / "out" / "hello.txt").read_bytes() == b"hello"


def test_what_is_not_an_archive_is_unsupported(root: ServerRoot) -> None:
    (root.path / "notes.zip").write_bytes(b"just some text, not an archive\n")
    (root.path / "single.gz").write_bytes(gzip.compress(b"a gzipped text file\n" * 40))
    for name in ("notes.zip", "single.gz"):
        with pytest.raises(UnsupportedArchive):
            _extract(root, f"/{name}")
    assert sorted(os.listdir(root.path)) == ["notes.zip", "single.gz"]


def test_a_zip_with_an_unknown_compression_method_is_unsupported(root: ServerRoot) -> None:
    with zipfile.ZipFile(root.path / "odd.zip", "w") as archive:
        archive.writestr("data.txt", b"stored, then relabelled")
    raw = bytearray((root.path / "odd.zip").read_bytes())
    # Method 99 (AE-x encryption) in the local header and the central directory.
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = raw.index(signature) + offset
        raw[at : at + 2] = struct.pack("<H", 99)
    (root.path / "odd.zip").write_bytes(bytes(raw))
    with pytest.raises(UnsupportedArchive, match="compression method"):
        _extract(root, "/odd.zip")
    _only_the_archive_is_left(root, "odd.zip")


def _device(archive: tarfile.TarFile) -> None:
    _add(archive, "ok.txt")
    _add(archive, "null", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=3)


def _link_then_write(target: str) -> Callable[[tarfile.TarFile], None]:
    def build(archive: tarfile.TarFile) -> None:
        _add(archive, "link", b"", type=tarfile.SYMTYPE, linkname=target)
        _add(archive, "link/evil", b"evil")

    return build


HOSTILE_TARS: dict[str, Callable[[tarfile.TarFile], None]] = {
    "dotdot": lambda archive: (_add(archive, "ok.txt"), _add(archive, "../evil")),
    "nested dotdot": lambda archive: _add(archive, "a/b/../../../evil"),
    "absolute": lambda archive: _add(archive, HOST_EVIL),
    # A plain header cuts a name at NUL; an extended header keeps it.
    "nul": lambda archive: _add(archive, "placeholder", pax_headers={"path": "ok\x00/x"}),
    "link out then write": _link_then_write(HOST_OUTSIDE),
    "relative link out": lambda archive: _add(
        archive, "up", b"", type=tarfile.SYMTYPE, linkname="../../sibling"
    ),
    "link to parent": lambda archive: _add(
        archive, "a/up", b"", type=tarfile.SYMTYPE, linkname="../.."
    ),
    "link chain out": lambda archive: (
        _add(archive, "here", b"", type=tarfile.SYMTYPE, linkname="."),
        _add(archive, "away", b"", type=tarfile.SYMTYPE, linkname="here/.."),
    ),
    "write through an inside link": lambda archive: (
        _add(archive, "dir", b"", type=tarfile.DIRTYPE),
        _add(archive, "alias", b"", type=tarfile.SYMTYPE, linkname="dir"),
        _add(archive, "alias/file", b"x"),
    ),
    "hardlink to passwd": lambda archive: _add(
        archive, "passwd", b"", type=tarfile.LNKTYPE, linkname="/etc/passwd"
    ),
    "hardlink up": lambda archive: _add(
        archive, "secret", b"", type=tarfile.LNKTYPE, linkname="../sibling/secret.txt"
    ),
    "hardlink to nothing": lambda archive: _add(
        archive, "copy", b"", type=tarfile.LNKTYPE, linkname="missing.txt"
    ),
    "device": _device,
    "fifo": lambda archive: _add(archive, "pipe", b"", type=tarfile.FIFOTYPE),
    "deep": lambda archive: _add(archive, "a/" * 200 + "x"),
    "file over folder": lambda archive: (
        _add(archive, "d", b"", type=tarfile.DIRTYPE),
        _add(archive, "d/inner"),
        _add(archive, "d"),
    ),
}


@pytest.mark.parametrize("case", HOSTILE_TARS)
@pytest.mark.parametrize("target", ["/", "/out"])
def test_hostile_tars_are_refused_and_leave_nothing(
    root: ServerRoot, tmp_path: Path, case: str, target: str
) -> None:
    _tar(root, "evil.tar.gz", HOSTILE_TARS[case])
    with pytest.raises(ArchiveRejected):
        _extract(root, "/evil.tar.gz", target)
    _only_the_archive_is_left(root, "evil.tar.gz")
    assert (tmp_path / "sibling" / "secret.txt").read_bytes() == SECRET


@pytest.mark.parametrize("name", ["../evil", "/evil", "a/../../evil", "./../evil"])
def test_hostile_zips_are_refused(root: ServerRoot, name: str) -> None:
    _zip(root, "evil.zip", {"ok.txt": b"fine", name: b"evil"})
    with pytest.raises(ArchiveRejected):
        _extract(root, "/evil.zip")
    _only_the_archive_is_left(root, "evil.zip")


def test_zip_links_out_and_devices_are_refused(root: ServerRoot) -> None:
    for mode, data in ((0o120777, HOST_OUTSIDE.encode()), (0o120777, b"../.."), (0o020644, b"")):
        with zipfile.ZipFile(root.path / "evil.zip", "w") as archive:
            entry = zipfile.ZipInfo("entry")
            entry.create_system = 3
            entry.external_attr = mode << 16
            archive.writestr(entry, data)
        with pytest.raises(ArchiveRejected):
            _extract(root, "/evil.zip")
        _only_the_archive_is_left(root, "evil.zip")


def _zeros(size: int) -> io.BytesIO:
    return io.BytesIO(bytes(size))


def test_a_tar_bomb_stops_at_the_byte_limit(root: ServerRoot) -> None:
    with tarfile.open(root.path / "bomb.tar.gz", "w:gz", compresslevel=1) as archive:
        member = tarfile.TarInfo("zeros")
        member.size = 50 * MB
        archive.addfile(member, _zeros(50 * MB))
    assert (root.path / "bomb.tar.gz").stat().st_size < MB
    with pytest.raises(ArchiveRejected, match="more than 1048576 bytes"):
        _extract(root, "/bomb.tar.gz", max_bytes=MB)
    _only_the_archive_is_left(root, "bomb.tar.gz")


def test_a_zip_bomb_with_lying_sizes_is_refused(root: ServerRoot) -> None:
    with zipfile.ZipFile(root.path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros", bytes(20 * MB))
    data = bytearray((root.path / "bomb.zip").read_bytes())
    # Claim 100 bytes in both the local and the central header.
    struct.pack_into("<I", data, 22, 100)
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 100)
    (root.path / "bomb.zip").write_bytes(bytes(data))
    with pytest.raises(ArchiveRejected):
        _extract(root, "/bomb.zip", max_bytes=MB)
    _only_the_archive_is_left(root, "bomb.zip")

    _zip(root, "honest.zip", {"zeros": bytes(20 * MB)})
    with pytest.raises(ArchiveRejected, match="more than 1048576 bytes"):
        _extract(root, "/honest.zip", max_bytes=MB)
    assert sorted(os.listdir(root.path)) == ["bomb.zip", "honest.zip"]


def test_a_huge_tar_header_cannot_exhaust_memory(root: ServerRoot) -> None:
    with tarfile.open(root.path / "header.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as archive:
        member = tarfile.TarInfo("x")
        member.pax_headers = {"comment": "z" * (8 * MB)}
        archive.addfile(member, io.BytesIO(b""))
    with pytest.raises(ArchiveRejected, match="beyond the allowed size"):
        _extract(root, "/header.tar.gz", max_bytes=MB, max_files=10)
    _only_the_archive_is_left(root, "header.tar.gz")


@pytest.mark.parametrize("kind", ["tar", "zip", "folders"])
def test_a_file_count_bomb_stops_at_the_file_limit(root: ServerRoot, kind: str) -> None:
    if kind == "zip":
        _zip(root, "many", {f"f{i}": b"" for i in range(200)})
    else:
        names = [f"f{i}" for i in range(200)] if kind == "tar" else ["/".join(["d"] * 100) + "/f"]
        _tar(root, "many", lambda archive: [_add(archive, name, b"") for name in names])
    with pytest.raises(ArchiveRejected, match="more than 50 entries"):
        _extract(root, "/many", max_files=50)
    _only_the_archive_is_left(root, "many")


def test_extraction_overwrites_files_but_never_writes_through_links(
    root: ServerRoot, tmp_path: Path
) -> None:
    out = root.path / "out"
    out.mkdir()
    (out / "config.yml").write_bytes(b"old")
    (out / "keep.txt").write_bytes(b"keep")
    (out / "secret.txt").symlink_to(tmp_path / "sibling" / "secret.txt")
    (out / "plugins").symlink_to(tmp_path / "sibling")

    def build(archive: tarfile.TarFile) -> None:
        _add(archive, "config.yml", b"new")
        _add(archive, "secret.txt", b"overwritten")
        _add(archive, "plugins/evil.jar", b"jar")
        _add(archive, "link", b"", type=tarfile.SYMTYPE, linkname="config.yml")

    _tar(root, "update.tar.gz", build)
    result = _extract(root, "/update.tar.gz")
    assert result == {"files": 5, "bytes": 17, "targetPath": "/out"}
    assert tree(out) == {
        "config.yml": b"new",
        "keep.txt": b"keep",
        "secret.txt": b"overwritten",
        "plugins": None,
        "plugins/evil.jar": b"jar",
        "link": "link:config.yml",
    }
    assert (tmp_path / "sibling" / "secret.txt").read_bytes() == SECRET
    assert [entry["name"] for entry in list_dir(root, "/")] == ["out", "update.tar.gz"]


def test_a_refused_archive_changes_nothing_already_there(root: ServerRoot) -> None:
    out = root.path / "out"
    out.mkdir()
    (out / "config.yml").write_bytes(b"old")
    _tar(
        root,
        "evil.tgz",
        lambda archive: (_add(archive, "config.yml", b"new"), _add(archive, "../x")),
    )
    with pytest.raises(ArchiveRejected):
        _extract(root, "/evil.tgz")
    assert tree(out) == {"config.yml": b"old"}
