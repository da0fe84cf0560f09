"""Hostile paths against every operation: refused with the right error, and
nothing outside the server's folder is read, written or removed."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hostplane.agent.files import (
    FileNotFound,
    InvalidPath,
    NotADirectory,
    ServerRoot,
    atomic_write,
    chmod,
    compress,
    copy,
    decompress,
    delete_paths,
    list_dir,
    make_dir,
    open_read,
    rename,
    stat_path,
)
from tests.agent.files import HOST_OUTSIDE, SECRET, make_root, outside

HOSTILE = ["../x", "/../x", "a/../../x", "..", "/world/\x00/x", "x\x00", "a" * 256, "/a" * 2100]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[ServerRoot]:
    server = make_root(tmp_path)
    (server.path / "a.txt").write_bytes(b"a")
    (server.path / "world").mkdir()
    before = outside(tmp_path)
    yield server
    assert outside(tmp_path) == before
    assert not os.path.lexists(HOST_OUTSIDE)


def _write(root: ServerRoot, path: str) -> None:
    with atomic_write(root, path, max_bytes=None) as writer:
        writer.write(b"evil")


OPERATIONS: dict[str, Callable[[ServerRoot, str], Any]] = {
    "list": list_dir,
    "stat": stat_path,
    "read": lambda root, path: open_read(root, path)[0].close(),
    "write": _write,
    "mkdir": make_dir,
    "delete": lambda root, path: delete_paths(root, [path]),
    "rename from": lambda root, path: rename(root, path, "/b"),
    "rename to": lambda root, path: rename(root, "/a.txt", path),
    "copy from": copy,
    "copy to": lambda root, path: copy(root, "/a.txt", path),
    "chmod": lambda root, path: chmod(root, path, 0o600),
    "compress item": lambda root, path: compress(root, [path], "out.zip"),
    "compress into": lambda root, path: compress(root, ["/a.txt"], "out.zip", path),
    "decompress into": lambda root, path: decompress(
        root, "/a.txt", path, max_bytes=1000, max_files=10
    ),
}


@pytest.mark.parametrize("path", HOSTILE)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_hostile_paths_are_refused_by_every_operation(
    root: ServerRoot, operation: str, path: str
) -> None:
    with pytest.raises(InvalidPath) as caught:
        OPERATIONS[operation](root, path)
    assert str(root.path) not in str(caught.value)
    assert "\x00" not in str(caught.value)
    assert (root.path / "a.txt").read_bytes() == b"a"


def test_a_leading_slash_means_the_servers_folder(root: ServerRoot) -> None:
    host_passwd = Path("/etc/passwd").read_bytes()
    assert root.resolve("/etc/passwd") == root.path / "etc" / "passwd"
    with pytest.raises(FileNotFound, match=r"^/etc/passwd does not exist$"):
        open_read(root, "/etc/passwd")
    _write(root, "/etc/passwd")
    assert (root.path / "etc" / "passwd").read_bytes() == b"evil"
    assert Path("/etc/passwd").read_bytes() == host_passwd
    assert root.normalize("world//./x/") == "/world/x"
    assert root.resolve("/") == root.path
    assert root.display(root.path / "world" / "x") == "/world/x"


def test_backslashes_are_plain_names(root: ServerRoot) -> None:
    _write(root, "..\\..\\x")
    assert (root.path / "..\\..\\x").read_bytes() == b"evil"


@pytest.fixture
def links(root: ServerRoot, tmp_path: Path) -> ServerRoot:
    (root.path / "etc_link").symlink_to("/etc")
    (root.path / "sibling_link").symlink_to("../sibling")
    (root.path / "sibling_abs").symlink_to(tmp_path / "sibling")
    (root.path / "secret_link").symlink_to(tmp_path / "sibling" / "secret.txt")
    (root.path / "chain1").symlink_to("chain2")
    (root.path / "chain2").symlink_to("world/chain3")
    (root.path / "world" / "chain3").symlink_to("../../sibling")
    (root.path / "loop1").symlink_to("loop2")
    (root.path / "loop2").symlink_to("loop1")
    return root


ESCAPES = ["/etc_link", "/sibling_link", "/sibling_abs", "/chain1", "/loop1"]


@pytest.mark.parametrize("link", ESCAPES)
def test_links_out_of_the_folder_are_never_followed(links: ServerRoot, link: str) -> None:
    root = links
    inside = f"{link}/secret.txt"
    for operation in ("read", "write", "list", "stat", "delete", "copy from", "chmod", "mkdir"):
        with pytest.raises(InvalidPath):
            OPERATIONS[operation](root, inside)
    with pytest.raises(InvalidPath):
        list_dir(root, link)
    with pytest.raises(InvalidPath):
        rename(root, "/a.txt", f"{link}/a.txt")
    with pytest.raises(InvalidPath):
        copy(root, "/a.txt", f"{link}/a.txt")
    with pytest.raises(InvalidPath):
        compress(root, ["/a.txt"], "out.zip", link)
    # chmod and write on the link itself act on the link's target: refused too.
    with pytest.raises(InvalidPath):
        chmod(root, link, 0o777)
    with pytest.raises(InvalidPath):
        _write(root, link)
    assert (root.path / "a.txt").exists()


def test_a_link_to_an_outside_file_cannot_be_read_written_or_chmodded(
    links: ServerRoot, tmp_path: Path
) -> None:
    for operation in ("read", "write", "chmod"):
        with pytest.raises(InvalidPath):
            OPERATIONS[operation](links, "/secret_link")
    assert (tmp_path / "sibling" / "secret.txt").read_bytes() == SECRET


def test_listing_shows_links_without_following_them(links: ServerRoot) -> None:
    entries = {entry["name"]: entry for entry in list_dir(links, "/")}
    assert entries["etc_link"]["isSymlink"] is True
    assert entries["etc_link"]["isDirectory"] is False
    assert entries["etc_link"]["size"] == len("/etc")
    assert stat_path(links, "/sibling_link")["isSymlink"] is True


def test_deleting_a_link_removes_only_the_link(links: ServerRoot, tmp_path: Path) -> None:
    assert delete_paths(links, ["/sibling_abs", "/etc_link", "/chain1", "/loop1"]) == 4
    assert not os.path.lexists(links.path / "sibling_abs")
    assert (tmp_path / "sibling" / "secret.txt").read_bytes() == SECRET
    assert Path("/etc/passwd").exists()


def test_copying_a_link_copies_the_link_not_what_it_points_to(links: ServerRoot) -> None:
    assert copy(links, "/secret_link") == "/secret_link copy"
    assert (links.path / "secret_link copy").is_symlink()


def test_a_link_that_stays_inside_is_followed(links: ServerRoot) -> None:
    (links.path / "world_link").symlink_to("world")
    (links.path / "deep").symlink_to(links.path / "world_link")
    _write(links, "/deep/level.dat")
    assert (links.path / "world" / "level.dat").read_bytes() == b"evil"
    assert [entry["name"] for entry in list_dir(links, "/world_link")] == ["chain3", "level.dat"]
    reader, size = open_read(links, "/world_link/level.dat")
    with reader:
        assert (reader.read(), size) == (b"evil", 4)


def test_a_file_in_the_middle_of_a_path(root: ServerRoot) -> None:
    with pytest.raises(NotADirectory):
        open_read(root, "/a.txt/x")
    with pytest.raises(NotADirectory):
        list_dir(root, "/a.txt")


def test_a_link_planted_after_the_check_is_not_followed(
    root: ServerRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = root.path / "world"
    resolve = ServerRoot.resolve

    def resolve_then_swap(self: ServerRoot, user_path: str, **kwargs: Any) -> Path:
        # The game swaps its folder for a link right after the path was checked.
        result = resolve(self, user_path, **kwargs)
        if world.is_dir() and not world.is_symlink():
            world.rmdir()
            world.symlink_to(tmp_path / "sibling")
        return result

    monkeypatch.setattr(ServerRoot, "resolve", resolve_then_swap)
    with pytest.raises(InvalidPath):
        _write(root, "/world/planted.txt")
    assert not (tmp_path / "sibling" / "planted.txt").exists()


def test_a_final_link_planted_after_the_check_is_not_read(
    root: ServerRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = root.path / "a.txt"
    resolve = ServerRoot.resolve

    def resolve_then_swap(self: ServerRoot, user_path: str, **kwargs: Any) -> Path:
        result = resolve(self, user_path, **kwargs)
        target.unlink()
        target.symlink_to(tmp_path / "sibling" / "secret.txt")
        return result

    monkeypatch.setattr(ServerRoot, "resolve", resolve_then_swap)
    with pytest.raises(InvalidPath):
        open_read(root, "/a.txt")
    target.unlink()
    target.write_bytes(b"a")


def test_the_root_itself_cannot_be_deleted_renamed_or_overwritten(root: ServerRoot) -> None:
    for attempt in (
        lambda: delete_paths(root, ["/"]),
        lambda: delete_paths(root, ["/a.txt", "."]),
        lambda: rename(root, "/", "/moved"),
        lambda: rename(root, "/a.txt", "/"),
        lambda: _write(root, "/"),
        lambda: copy(root, "/"),
    ):
        with pytest.raises(InvalidPath):
            attempt()
    assert (root.path / "a.txt").read_bytes() == b"a"
