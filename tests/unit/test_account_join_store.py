"""Account-join persistence: memberships survive, attached clients are a live view."""

from __future__ import annotations

from pathlib import Path

from minimix.storage.account_join import AccountJoinStore, Membership
from minimix.storage.database import Database


def test_membership_round_trip_with_clients(tmp_path: Path) -> None:
    store = AccountJoinStore(Database(tmp_path / "db.sqlite3"))
    m = Membership(
        "alice@localhost", "room@conf", "alice", "pw", "client", False, None, None, ("a/1", "a/2")
    )
    store.save(m)
    (got,) = store.memberships()
    assert got == m
    store.progress("alice@localhost", "room@conf", "r9", 123.5)
    store.progress("alice@localhost", "room@conf", "older", 100.0)  # never goes backwards
    (got,) = store.memberships("alice@localhost")
    assert (got.last_room_stanza_id, got.last_stamp) == ("r9", 123.5)
    # Saving again without progress keeps the recorded progress; clients are replaced.
    store.save(Membership("alice@localhost", "room@conf", "al", "pw", "bookmark", True, None, None))
    (got,) = store.memberships()
    assert got.nick == "al" and got.autojoin and got.origin == "bookmark"
    assert got.last_room_stanza_id == "r9" and got.clients == ()


def test_clear_clients_and_forget(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite3")
    store = AccountJoinStore(db)
    for room in ("a@conf", "b@conf"):
        store.save(
            Membership(
                "bob@localhost",
                room,
                "bob",
                None,
                "client",
                False,
                None,
                None,
                ("bob@localhost/x",),
            )
        )
    store.clear_clients()
    assert all(m.clients == () for m in store.memberships())
    store.forget("bob@localhost", "a@conf")
    assert [m.room for m in store.memberships()] == ["b@conf"]
    store.forget_account("bob@localhost")
    assert store.memberships() == []
    assert store.memberships("nobody@localhost") == []
