from __future__ import annotations

from pathlib import Path

import pytest

from hostplane.agent.backups import (
    ArchiveRejected,
    BackupError,
    BackupNotFound,
    BackupStore,
    ChecksumMismatch,
    InvalidBackupId,
    TooLarge,
)
from hostplane.agent.runtime import AgentRuntimeError


def test_layout_is_server_then_backup(tmp_path: Path) -> None:
    store = BackupStore(tmp_path)
    assert (
        store.path_for("srv-1", "2024-01-01.daily")
        == tmp_path / "srv-1" / "2024-01-01.daily.tar.zst"
    )


@pytest.mark.parametrize(
    "bad", ["", "..", ".hidden", "../x", "a/b", "a\\b", "x" * 129, "spaces here", "é"]
)
def test_ids_are_validated(tmp_path: Path, bad: str) -> None:
    store = BackupStore(tmp_path)
    with pytest.raises(InvalidBackupId) as caught:
        store.path_for("srv-1", bad)
    assert caught.value.code == "INVALID_BACKUP_ID"
    with pytest.raises(InvalidBackupId):
        store.path_for(bad, "b1")
    assert str(tmp_path) not in str(caught.value)


def test_list_exists_delete_and_usage(tmp_path: Path) -> None:
    store = BackupStore(tmp_path)
    assert store.list("srv-1") == []
    assert store.usage_bytes() == 0
    for backup_id, size in (("b2", 20), ("b1", 10)):
        path = store.path_for("srv-1", backup_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    partial = store.path_for("srv-1", "b3").with_name("b3.tar.zst.partial")
    partial.write_bytes(b"x" * 5)
    store.path_for("srv-2", "b1").parent.mkdir()
    store.path_for("srv-2", "b1").write_bytes(b"x" * 7)

    assert store.list("srv-1") == [("b1", 10), ("b2", 20)]
    assert store.exists("srv-1", "b1")
    assert not store.exists("srv-1", "b3")
    assert store.usage_bytes() == 10 + 20 + 5 + 7

    assert store.delete("srv-1", "b1") is True
    assert store.delete("srv-1", "b1") is False
    assert store.delete("srv-1", "b3") is False
    assert not partial.exists()
    assert store.list("srv-1") == [("b2", 20)]
    with pytest.raises(BackupNotFound):
        store.size_of("srv-1", "b1")


def test_error_codes() -> None:
    expected = {
        BackupError: "BACKUP_ERROR",
        InvalidBackupId: "INVALID_BACKUP_ID",
        BackupNotFound: "BACKUP_NOT_FOUND",
        ChecksumMismatch: "CHECKSUM_MISMATCH",
        ArchiveRejected: "ARCHIVE_REJECTED",
        TooLarge: "TOO_LARGE",
    }
    for error, code in expected.items():
        assert issubclass(error, AgentRuntimeError)
        assert issubclass(error, BackupError)
        assert error.code == code
