"""The archive store: filters, XEP-0059 paging both ways, ids, group chat, retention.

Every test runs three ways: each message a row of its own archive, each one a shared row the
archive references, and the two alternating (one order across both)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from minimix.storage.archive import (
    _REFS_BATCH,
    ACCOUNT_MARK,
    ArchivePrefs,
    ArchiveQuery,
    ArchiveRow,
    ArchiveStore,
    SharedRow,
    UnknownArchiveId,
    new_archive_id,
)
from minimix.storage.database import Database

A = "alice@example.org"
B = "bob@example.org"
ROOM = "room@conference.example.org"


class SharingStore(ArchiveStore):
    """Appends every ``every``-th message as a shared row (a full-JID ``with`` never is; an
    id given again goes where it went the first time: shared rows have new ids)."""

    def __init__(self, db: Database, every: int) -> None:
        super().__init__(db)
        self.every = every
        self.n = 0
        self.own: dict[str, bool] = {}

    def append(
        self,
        archive: str,
        with_jid: str,
        stanza: str,
        kind: str,
        *,
        stamp: float | None = None,
        stanza_id: str | None = None,
        room_stanza_id: str | None = None,
        with_full: str | None = None,
    ) -> str:
        self.n += 1
        sid = stanza_id or new_archive_id()
        own = self.own.setdefault(sid, bool(with_full or self.n % self.every))
        if own:
            return super().append(
                archive,
                with_jid,
                stanza,
                kind,
                stamp=stamp,
                stanza_id=sid,
                room_stanza_id=room_stanza_id,
                with_full=with_full,
            )
        when = time.time() if stamp is None else stamp
        self.append_many([SharedRow(sid, with_jid, when, kind, stanza, room_stanza_id, [archive])])
        return sid


@pytest.fixture(params=["own", "shared", "alternating"])
def store(request: pytest.FixtureRequest) -> ArchiveStore:
    db = Database(":memory:")
    if request.param == "own":
        return ArchiveStore(db)
    return SharingStore(db, 1 if request.param == "shared" else 2)


@pytest.fixture
def plain() -> ArchiveStore:
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


def shared(sid: str, body: str, *archives: str, rsid: str | None = None) -> SharedRow:
    text = f'<message to="{ACCOUNT_MARK}" type="groupchat"><body>{body}</body>'
    text += f'<stanza-id by="{ACCOUNT_MARK}" id="{sid}"/></message>'
    return SharedRow(sid, ROOM, 1000.0, "groupchat", text, rsid, list(archives))


def test_a_shared_row_reads_back_as_each_archive_holds_it(plain: ArchiveStore) -> None:
    sid = new_archive_id()
    plain.append_many([shared(sid, "hi", A, B, rsid="r1")])
    for who in (A, B):
        page = plain.query(who, ArchiveQuery())
        assert page.count == 1 and [m.id for m in page.items] == [sid]
        assert page.items[0].stanza == (
            f'<message to="{who}" type="groupchat"><body>hi</body>'
            f'<stanza-id by="{who}" id="{sid}"/></message>'
        )
        assert plain.has_room_stanza(who, "r1")
        assert plain.last_room_stanza(who, ROOM) == ("r1", 1000.0)
        got = plain.get(who, sid)
        assert got is not None and got.with_jid == ROOM and got.room_stanza_id == "r1"
    assert plain.query("carol@example.org", ArchiveQuery()).count == 0
    assert not plain.has_room_stanza("carol@example.org", "r1")
    assert plain.get("carol@example.org", sid) is None
    with pytest.raises(UnknownArchiveId):
        plain.query("carol@example.org", ArchiveQuery(after=sid))


def test_own_and_shared_rows_keep_the_order_they_were_stored_in(plain: ArchiveStore) -> None:
    ids = [new_archive_id() for _ in range(4)]
    plain.append_many(
        [
            ArchiveRow(A, ids[0], B, "", 1.0, "chat", "<message/>"),
            shared(ids[1], "one", A, B),
            ArchiveRow(A, ids[2], B, "", 2.0, "chat", "<message/>"),
            shared(ids[3], "two", A),
        ]
    )
    assert [m.id for m in plain.query(A, ArchiveQuery()).items] == ids
    assert [m.id for m in plain.query(A, ArchiveQuery(before="", max=3)).items] == ids[1:]
    assert [m.id for m in plain.query(B, ArchiveQuery()).items] == [ids[1]]
    bounds = plain.bounds(A)
    assert bounds is not None and (bounds[0].id, bounds[1].id) == (ids[0], ids[3])


def rows_in_tables(store: ArchiveStore) -> tuple[int, int]:
    archive = store.db.fetchone("SELECT COUNT(*) FROM archive")
    refs = store.db.fetchone("SELECT COUNT(*) FROM archive_refs")
    assert archive is not None and refs is not None
    return int(archive[0]), int(refs[0])


def test_a_shared_row_goes_with_the_last_archive_holding_it(plain: ArchiveStore) -> None:
    sid = new_archive_id()
    plain.append_many([shared(sid, "hi", A, B)])
    plain.delete_archive(A)
    assert plain.query(A, ArchiveQuery()).count == 0
    assert plain.query(B, ArchiveQuery()).count == 1
    plain.delete_archive(B)
    assert rows_in_tables(plain) == (0, 0)


def test_expiry_counts_each_archives_copy_of_a_shared_row(plain: ArchiveStore) -> None:
    plain.append_many([shared(new_archive_id(), "old", A, B), shared(new_archive_id(), "x", A)])
    plain.append(A, B, "<message/>", "chat", stamp=5000.0)
    assert plain.expire(B, 2000.0) == 1
    assert rows_in_tables(plain) == (3, 2)
    assert plain.expire(None, 2000.0) == 2
    assert rows_in_tables(plain) == (1, 0)
    assert plain.query(A, ArchiveQuery()).count == 1


def test_references_are_written_in_batches_and_before_any_read(plain: ArchiveStore) -> None:
    plain.append_many([shared(new_archive_id(), "hi", A, B)])
    assert rows_in_tables(plain) == (1, 0)  # listed in the row, not written yet
    assert plain.query(B, ArchiveQuery()).count == 1
    assert rows_in_tables(plain) == (1, 2)
    listed = plain.db.fetchone("SELECT COUNT(*) FROM archive_pending")
    assert listed == (0,)
    plain.append_many([shared(new_archive_id(), str(i), A) for i in range(_REFS_BATCH)])
    assert rows_in_tables(plain) == (_REFS_BATCH + 1, _REFS_BATCH + 2)  # a batch: written


def test_references_listed_at_a_crash_are_written_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite3"
    first = ArchiveStore(Database(path))
    sid = new_archive_id()
    first.append_many([shared(sid, "hi", A, B)])
    first.db.close()  # as after a crash: nothing but the rows was written
    again = ArchiveStore(Database(path))
    assert rows_in_tables(again) == (1, 2)
    assert [m.id for m in again.query(A, ArchiveQuery()).items] == [sid]


def test_lists_left_in_rows_by_an_older_version_are_moved_and_written(tmp_path: Path) -> None:
    """Migration 0023: the archives a shared row listed in its own column (before) are moved
    to archive_pending, and their references are written at start."""
    path = tmp_path / "archive.sqlite3"
    db = Database(path)
    db.execute("DROP TRIGGER archive_shared_batch_insert")
    db.execute("DROP VIEW archive_shared_batch")
    db.execute("DROP TABLE archive_pending")
    db.execute("DELETE FROM schema_migrations WHERE version = 23")
    db.execute("CREATE INDEX archive_unreferenced ON archive (seq) WHERE archives IS NOT NULL")
    sid = new_archive_id()
    db.execute(
        "INSERT INTO archive (archive, id, with_jid, with_full, stamp, kind, stanza, archives) "
        "VALUES ('', ?, 'room@muc.example.org', '', ?, 'groupchat', '<message/>', ?)",
        (sid, time.time(), f'["{A}", "{B}"]'),
    )
    db.close()
    store = ArchiveStore(Database(path))
    assert rows_in_tables(store) == (1, 2)
    assert store.db.fetchone("SELECT COUNT(*) FROM archive WHERE archives IS NOT NULL") == (0,)
    for archive in (A, B):
        assert [m.id for m in store.query(archive, ArchiveQuery()).items] == [sid]
