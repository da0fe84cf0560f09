"""What the file operations do for an ordinary user."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostplane.agent.files import (
    AlreadyExists,
    FileError,
    FileNotFound,
    InvalidMode,
    InvalidPath,
    IsADirectory,
    ServerRoot,
    TooLarge,
    atomic_write,
    chmod,
    copy,
    delete_paths,
    disk_usage_bytes,
    list_dir,
    make_dir,
    open_read,
    rename,
    stat_path,
)
from tests.agent.files import make_root, outside, tree


@pytest.fixture
def root(tmp_path: Path) -> Iterator[ServerRoot]:
    server = make_root(tmp_path)
    before = outside(tmp_path)
    yield server
    assert outside(tmp_path) == before


def test_listing_puts_folders_first_and_describes_each_entry(root: ServerRoot) -> None:
    (root.path / "b.txt").write_bytes(b"12345")
    (root.path / "b.txt").chmod(0o644)
    (root.path / "A.txt").write_bytes(b"")
    (root.path / "zdir").mkdir()
    (root.path / "adir").mkdir()
    os.utime(root.path / "b.txt", (0, 1_700_000_000.1234))
    entries = list_dir(root, "/")
    assert [entry["name"] for entry in entries] == ["adir", "zdir", "A.txt", "b.txt"]
    assert entries[3] == {
        "name": "b.txt",
        "size": 5,
        "isDirectory": False,
        "isSymlink": False,
        "mode": "0644",
        "modified": "2023-11-14T22:13:20.123Z",
    }
    assert entries[0]["isDirectory"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entries[0]["modified"])
    assert stat_path(root, "b.txt") == entries[3]
    with pytest.raises(FileNotFound, match=r"^/nope does not exist$"):
        list_dir(root, "/nope")


def test_reading_refuses_folders_and_special_files(root: ServerRoot) -> None:
    (root.path / "world").mkdir()
    os.mkfifo(root.path / "pipe")
    with pytest.raises(IsADirectory):
        open_read(root, "/world")
    with pytest.raises(IsADirectory):
        open_read(root, "/")
    with pytest.raises(InvalidPath, match="not a regular file"):
        open_read(root, "/pipe")


def test_atomic_write_replaces_the_file_only_when_complete(root: ServerRoot) -> None:
    target = root.path / "config" / "server.properties"
    with atomic_write(root, "/config/server.properties", max_bytes=100) as writer:
        writer.write(b"motd=hello\n")
        assert not target.exists()
    assert writer.bytes_written == 11
    assert target.read_bytes() == b"motd=hello\n"
    target.chmod(0o600)

    with (
        pytest.raises(TooLarge),
        atomic_write(root, "/config/server.properties", max_bytes=10) as w,
    ):
        w.write(b"12345")
        w.write(b"678901")
    with (
        pytest.raises(RuntimeError),
        atomic_write(root, "config/server.properties", max_bytes=None) as w,
    ):
        w.write(b"half")
        raise RuntimeError("the upload broke off")
    assert target.read_bytes() == b"motd=hello\n"
    assert os.listdir(target.parent) == ["server.properties"]

    with atomic_write(root, "/config/server.properties", max_bytes=None) as writer:
        writer.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(IsADirectory), atomic_write(root, "/config", max_bytes=None):
        pass
    with (
        pytest.raises(FileNotFound),
        atomic_write(root, "/new/x", max_bytes=None, make_parents=False),
    ):
        pass


def test_make_dir(root: ServerRoot) -> None:
    make_dir(root, "/a/b/c")
    make_dir(root, "/a/b/c")
    assert (root.path / "a" / "b" / "c").is_dir()
    (root.path / "file").write_bytes(b"")
    with pytest.raises(AlreadyExists):
        make_dir(root, "/file")


def test_delete_validates_every_path_before_deleting_any(root: ServerRoot) -> None:
    (root.path / "keep.txt").write_bytes(b"x")
    (root.path / "world" / "region").mkdir(parents=True)
    (root.path / "world" / "region" / "r.0.0.mca").write_bytes(b"x" * 10)
    with pytest.raises(FileNotFound):
        delete_paths(root, ["/keep.txt", "/missing"])
    with pytest.raises(InvalidPath):
        delete_paths(root, ["/keep.txt", "../x"])
    assert (root.path / "keep.txt").exists()
    assert delete_paths(root, ["/world", "/world/region/r.0.0.mca", "/keep.txt"]) == 2
    assert os.listdir(root.path) == []


def test_rename(root: ServerRoot) -> None:
    (root.path / "a.txt").write_bytes(b"a")
    (root.path / "b.txt").write_bytes(b"b")
    (root.path / "dir").mkdir()
    with pytest.raises(AlreadyExists):
        rename(root, "/a.txt", "/b.txt")
    with pytest.raises(InvalidPath, match="into itself"):
        rename(root, "/dir", "/dir/inner")
    with pytest.raises(FileNotFound):
        rename(root, "/missing", "/c")
    rename(root, "/a.txt", "/dir/sub/c.txt")
    assert (root.path / "dir" / "sub" / "c.txt").read_bytes() == b"a"
    assert (root.path / "b.txt").read_bytes() == b"b"


def test_copy_names_and_trees(root: ServerRoot, tmp_path: Path) -> None:
    (root.path / "a.txt").write_bytes(b"a")
    (root.path / "world.tar.gz").write_bytes(b"w")
    assert copy(root, "/a.txt") == "/a copy.txt"
    assert copy(root, "/a.txt") == "/a copy 2.txt"
    assert copy(root, "/world.tar.gz") == "/world copy.tar.gz"
    world = root.path / "world"
    (world / "region").mkdir(parents=True)
    (world / "region" / "r.mca").write_bytes(b"region")
    (world / "level.dat").write_bytes(b"level")
    (world / "out").symlink_to(tmp_path / "sibling")
    (world / "level").symlink_to("level.dat")
    assert copy(root, "/world") == "/world copy"
    assert tree(root.path / "world copy") == tree(world)
    assert copy(root, "/world", "/backups/w1") == "/backups/w1"
    assert tree(root.path / "backups" / "w1") == tree(world)
    with pytest.raises(AlreadyExists):
        copy(root, "/a.txt", "/world")
    with pytest.raises(InvalidPath, match="into itself"):
        copy(root, "/world", "/world/inside")


def test_chmod_sets_permission_bits_only(root: ServerRoot) -> None:
    target = root.path / "start.sh"
    target.write_bytes(b"#!/bin/sh\n")
    chmod(root, "/start.sh", 0o750)
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    for mode in (0o4755, 0o2755, 0o1777, -1, 0o1000):
        with pytest.raises(InvalidMode) as caught:
            chmod(root, "/start.sh", mode)
        assert isinstance(caught.value, ValueError)
        assert caught.value.code == "INVALID_MODE"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    (root.path / "inside_link").symlink_to("start.sh")
    with pytest.raises(InvalidPath, match="symbolic link"):
        chmod(root, "/inside_link", 0o777)


def test_disk_usage_counts_files_once_and_does_not_follow_links(
    root: ServerRoot, tmp_path: Path
) -> None:
    (root.path / "world").mkdir()
    (root.path / "world" / "a").write_bytes(b"x" * 1000)
    os.link(root.path / "world" / "a", root.path / "hard")
    (root.path / "b").write_bytes(b"x" * 24)
    (root.path / "out").symlink_to(tmp_path / "sibling")
    link_size = len(str(tmp_path / "sibling"))
    assert disk_usage_bytes(root) == 1024 + link_size


def test_error_codes_and_messages_never_name_the_host_folder(root: ServerRoot) -> None:
    errors: list[FileError] = []
    for attempt in (
        lambda: open_read(root, "/missing/file"),
        lambda: rename(root, "/missing", "/x"),
        lambda: list_dir(root, "../x"),
    ):
        with pytest.raises(FileError) as caught:
            attempt()
        errors.append(caught.value)
    assert [error.code for error in errors] == ["NOT_FOUND", "NOT_FOUND", "INVALID_PATH"]
    assert all(str(root.path) not in str(error) for error in errors)
    assert str(errors[0]) == "/missing/file does not exist"
