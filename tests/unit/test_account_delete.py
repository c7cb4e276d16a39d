"""Deleting an account removes everything stored for it, whichever feature stored it."""

from __future__ import annotations

from pathlib import Path

from minimix.storage.archive import ArchiveQuery, ArchiveStore
from minimix.storage.database import Database
from minimix.storage.stores import AccountStore


def test_delete_cascades_to_archive_and_keeps_other_accounts(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite3")
    accounts = AccountStore(db)
    archive = ArchiveStore(db)
    accounts.create("alice", "pw")
    accounts.create("bob", "pw")
    archive.append("alice@localhost", "bob@localhost", "<message/>", "chat")
    archive.append("bob@localhost", "alice@localhost", "<message/>", "chat")
    assert accounts.delete("alice", "alice@localhost")
    assert not accounts.exists("alice")
    assert archive.query("alice@localhost", _all()).count == 0
    assert archive.query("bob@localhost", _all()).count == 1
    accounts.create("alice", "pw2")
    assert archive.query("alice@localhost", _all()).count == 0


def _all() -> ArchiveQuery:
    return ArchiveQuery(max=100)
