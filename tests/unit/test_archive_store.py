"""The archive store: filters, XEP-0059 paging both ways, ids, group chat, retention."""

from __future__ import annotations

import pytest

from minimix.storage.archive import (
    ArchivePrefs,
    ArchiveQuery,
    ArchiveStore,
    UnknownArchiveId,
    new_archive_id,
)
from minimix.storage.database import Database

A = "alice@example.org"


@pytest.fixture
def store() -> ArchiveStore:
    return ArchiveStore(Database(":memory:"))


def fill(store: ArchiveStore, n: int, with_jid: str = "bob@example.org") -> list[str]:
    return [
        store.append(A, with_jid, f"<message><body>{i}</body></message>", "chat", stamp=1000 + i)
        for i in range(n)
    ]


def ids(store: ArchiveStore, q: ArchiveQuery) -> list[str]:
    return [m.id for m in store.query(A, q).items]


def test_append_assigns_unique_unpredictable_ids(store: ArchiveStore) -> None:
    got = fill(store, 20)
    assert len(set(got)) == 20
    assert all(len(i) >= 12 for i in got)
    assert got != sorted(got) or len(set(got)) == 20


def test_append_with_known_id_is_idempotent(store: ArchiveStore) -> None:
    sid = new_archive_id()
    assert store.append(A, "bob@example.org", "<message/>", "chat", stanza_id=sid) == sid
    assert store.append(A, "bob@example.org", "<message/>", "chat", stanza_id=sid) == sid
    assert store.query(A, ArchiveQuery()).count == 1


def test_forward_paging_covers_everything_once(store: ArchiveStore) -> None:
    all_ids = fill(store, 12)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = store.query(A, ArchiveQuery(max=5, after=after))
        seen += [m.id for m in page.items]
        assert page.count == 12
        if page.complete:
            break
        after = page.items[-1].id
    assert seen == all_ids


def test_backward_paging_from_the_last_page(store: ArchiveStore) -> None:
    all_ids = fill(store, 12)
    page = store.query(A, ArchiveQuery(max=5, before=""))
    assert [m.id for m in page.items] == all_ids[7:]
    assert not page.complete
    assert page.first_index == 7
    page2 = store.query(A, ArchiveQuery(max=5, before=page.items[0].id))
    assert [m.id for m in page2.items] == all_ids[2:7]
    page3 = store.query(A, ArchiveQuery(max=5, before=page2.items[0].id))
    assert [m.id for m in page3.items] == all_ids[:2]
    assert page3.complete
    assert page3.first_index == 0


def test_filters(store: ArchiveStore) -> None:
    bob = fill(store, 3)
    carol = fill(store, 2, "carol@example.org")
    assert ids(store, ArchiveQuery(with_jid="carol@example.org")) == carol
    assert ids(store, ArchiveQuery(start=1001, end=1002)) == [bob[1], bob[2], carol[1]]
    assert ids(store, ArchiveQuery(after_id=bob[0], before_id=bob[2])) == [bob[1]]
    assert ids(store, ArchiveQuery(ids=[carol[1], bob[0]])) == [bob[0], carol[1]]


def test_full_jid_filter(store: ArchiveStore) -> None:
    store.append(A, "bob@example.org", "<message/>", "chat", with_full="bob@example.org/a")
    b = store.append(A, "bob@example.org", "<message/>", "chat", with_full="bob@example.org/b")
    assert ids(store, ArchiveQuery(with_jid="bob@example.org/b")) == [b]
    assert len(ids(store, ArchiveQuery(with_jid="bob@example.org"))) == 2


def test_unknown_ids_raise(store: ArchiveStore) -> None:
    fill(store, 2)
    for q in (
        ArchiveQuery(after="nope"),
        ArchiveQuery(before="nope"),
        ArchiveQuery(after_id="nope"),
        ArchiveQuery(before_id="nope"),
        ArchiveQuery(ids=["nope"]),
    ):
        with pytest.raises(UnknownArchiveId):
            store.query(A, q)


def test_groupchat_excluded_on_request_and_room_tracking(store: ArchiveStore) -> None:
    room = "room@conference.example.org"
    chat = fill(store, 1)
    g1 = store.append(A, room, "<message type='groupchat'/>", "groupchat", room_stanza_id="r1")
    g2 = store.append(A, room, "<message type='groupchat'/>", "groupchat", room_stanza_id="r2")
    assert ids(store, ArchiveQuery(include_groupchat=False)) == chat
    assert ids(store, ArchiveQuery()) == [*chat, g1, g2]
    assert store.has_room_stanza(A, "r1")
    assert not store.has_room_stanza(A, "r3")
    last = store.last_room_stanza(A, room)
    assert last is not None and last[0] == "r2"
    assert store.last_room_stanza(A, "other@conference.example.org") is None


def test_max_zero_counts_only(store: ArchiveStore) -> None:
    fill(store, 3)
    page = store.query(A, ArchiveQuery(max=0))
    assert page.items == [] and page.count == 3 and not page.complete


def test_archives_are_separate_and_deletable(store: ArchiveStore) -> None:
    fill(store, 2)
    store.append("bob@example.org", A, "<message/>", "chat")
    assert store.query("bob@example.org", ArchiveQuery()).count == 1
    store.delete_archive(A)
    assert store.query(A, ArchiveQuery()).count == 0
    assert store.query("bob@example.org", ArchiveQuery()).count == 1


def test_expire_removes_the_oldest(store: ArchiveStore) -> None:
    all_ids = fill(store, 5)
    assert store.expire(A, 1002) == 2
    assert ids(store, ArchiveQuery()) == all_ids[2:]
    assert store.expire(None, 2000) == 3


def test_prefs_roundtrip(store: ArchiveStore) -> None:
    assert store.prefs(A) == ArchivePrefs()
    store.set_prefs(A, ArchivePrefs("roster", ["x@y"], ["z@y"]))
    assert store.prefs(A) == ArchivePrefs("roster", ["x@y"], ["z@y"])
