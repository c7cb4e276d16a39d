"""The archive store: filters, XEP-0059 paging both ways, ids, group chat, retention.

Every test runs three ways: each message a row of its own archive, each one a shared row the
archive references, and the two alternating (one order across both)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from minimix.storage.archive import (
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
C = "carol@example.org"
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
    spans = store.db.fetchone("SELECT COUNT(*) FROM archive_spans")
    assert archive is not None and spans is not None
    return int(archive[0]), int(spans[0])


def spans_of(store: ArchiveStore, archive: str) -> list[tuple[int, int]]:
    rows = store.db.fetchall(
        "SELECT first_seq, last_seq FROM archive_spans WHERE archive=? ORDER BY first_seq",
        (archive,),
    )
    return [(int(r[0]), int(r[1])) for r in rows]


def seqs(store: ArchiveStore) -> list[int]:
    return [int(r[0]) for r in store.db.fetchall("SELECT seq FROM archive ORDER BY seq")]


OPEN = (1 << 63) - 1


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
    assert plain.query(B, ArchiveQuery()).count == 0
    assert plain.query(A, ArchiveQuery()).count == 3
    assert rows_in_tables(plain) == (3, 1)  # the row stays for A; B holds nothing
    assert plain.expire(None, 2000.0) == 2
    assert rows_in_tables(plain) == (1, 1)  # A's span grows on, over nothing yet
    assert plain.query(A, ArchiveQuery()).count == 1


def test_expiring_one_archive_cuts_its_spans_around_the_old_rows(plain: ArchiveStore) -> None:
    def at(stamp: float, *archives: str) -> SharedRow:
        row = shared(new_archive_id(), str(stamp), *archives)
        row.stamp = stamp
        return row

    rows = [at(1000, A, B), at(3000, A, B), at(1500, A, B), at(4000, A, B), at(1200, A, B)]
    plain.append_many(rows)
    assert plain.expire(A, 2000.0) == 3
    assert [m.id for m in plain.query(A, ArchiveQuery()).items] == [rows[1].id, rows[3].id]
    assert plain.query(B, ArchiveQuery()).count == 5  # B's copies are B's
    s = seqs(plain)
    assert spans_of(plain, A) == [(s[1], s[1]), (s[3], s[3]), (s[4] + 1, OPEN)]
    plain.append_many([at(5000, A, B)])  # A's span grows on: A holds the next row
    assert plain.query(A, ArchiveQuery()).count == 3
    assert plain.expire(B, 2000.0) == 3
    assert rows_in_tables(plain)[0] == 3  # nobody holds the three old rows any more


def test_a_room_message_for_the_same_archives_adds_its_row_alone(plain: ArchiveStore) -> None:
    first = [shared(new_archive_id(), str(i), A, B) for i in range(10)]
    plain.append_many(first)
    assert rows_in_tables(plain) == (10, 2)  # a span each, growing
    plain.append_many([shared(new_archive_id(), "a only", A)])
    assert rows_in_tables(plain) == (11, 2)  # B's span ends before it
    back = [shared(new_archive_id(), str(i), A, B) for i in range(3)]
    plain.append_many(back)
    assert rows_in_tables(plain) == (14, 3)  # B's second stretch
    everything = [r.id for r in first] + [plain.query(A, ArchiveQuery(max=20)).items[10].id]
    everything += [r.id for r in back]
    assert [m.id for m in plain.query(A, ArchiveQuery(max=20)).items] == everything
    held_by_b = [r.id for r in first + back]
    assert [m.id for m in plain.query(B, ArchiveQuery(max=20)).items] == held_by_b
    page = plain.query(B, ArchiveQuery(max=5, before=""))
    assert [m.id for m in page.items] == held_by_b[-5:] and page.first_index == 8
    assert page.count == 13 and not page.complete


def test_another_room_does_not_end_a_span(plain: ArchiveStore) -> None:
    def other(body: str, *archives: str) -> SharedRow:
        row = shared(new_archive_id(), body, *archives)
        row.with_jid = "other@conference.example.org"
        return row

    rows = [shared(new_archive_id(), "1", A), other("2", B), shared(new_archive_id(), "3", A)]
    plain.append_many(rows)
    assert len(spans_of(plain, A)) == 1
    assert [m.id for m in plain.query(A, ArchiveQuery()).items] == [rows[0].id, rows[2].id]
    assert [m.id for m in plain.query(B, ArchiveQuery()).items] == [rows[1].id]
    got = plain.query(A, ArchiveQuery(with_jid="other@conference.example.org"))
    assert got.count == 0 and got.items == []


def test_spans_are_read_again_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite3"
    first = ArchiveStore(Database(path))
    one = shared(new_archive_id(), "hi", A, B)
    first.append_many([one])
    first.db.close()
    again = ArchiveStore(Database(path))
    two = shared(new_archive_id(), "again", A)
    again.append_many([two])
    assert rows_in_tables(again) == (2, 2)
    assert [m.id for m in again.query(A, ArchiveQuery()).items] == [one.id, two.id]
    assert [m.id for m in again.query(B, ArchiveQuery()).items] == [one.id]


def test_many_spans_page_alike(plain: ArchiveStore) -> None:
    """Beyond the spans merged one by one, one sorted join reads the same pages."""
    held: list[str] = []
    for i in range(830):  # A is left out of every other row: each row A holds is a span
        row = shared(new_archive_id(), str(i), A, B) if i % 2 else shared(new_archive_id(), "b", B)
        plain.append_many([row])
        if i % 2:
            held.append(row.id)
    assert len(spans_of(plain, A)) == 415
    seen: list[str] = []
    after: str | None = None
    while True:
        page = plain.query(A, ArchiveQuery(max=50, after=after))
        assert page.count == len(held)
        seen += [m.id for m in page.items]
        if page.complete:
            break
        after = page.items[-1].id
    assert seen == held
    last = plain.query(A, ArchiveQuery(max=7, before=""))
    assert [m.id for m in last.items] == held[-7:]
    bounds = plain.bounds(A)
    assert bounds is not None and (bounds[0].id, bounds[1].id) == (held[0], held[-1])


def test_references_of_an_older_version_become_spans(tmp_path: Path) -> None:
    """Migration 0024: references (written, or still listed) become spans over runs of a
    with_jid's shared rows; a row nobody referenced goes."""
    path = tmp_path / "archive.sqlite3"
    db = Database(path)
    db.execute("DROP TABLE archive_spans")
    db.execute("DELETE FROM schema_migrations WHERE version = 24")
    db.execute(
        "CREATE TABLE archive_refs (archive TEXT NOT NULL, seq INTEGER NOT NULL, "
        "PRIMARY KEY (archive, seq)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX archive_refs_seq ON archive_refs (seq)")
    db.execute("CREATE TABLE archive_pending (seq INTEGER PRIMARY KEY, archives TEXT NOT NULL)")
    ids = [new_archive_id() for _ in range(7)]
    for i, sid in enumerate(ids):
        room = ROOM if i != 2 else "other@conference.example.org"
        db.execute(
            "INSERT INTO archive (archive, id, with_jid, with_full, stamp, kind, stanza) "
            "VALUES ('', ?, ?, '', ?, 'groupchat', '<message/>')",
            (sid, room, 1000.0 + i),
        )
    s = seqs(ArchiveStore(db))
    # A: every ROOM row (the last one still listed); B: 0, 1, 4 (3 missing); C: 3; nobody: 6.
    refs = [(A, 0), (A, 1), (A, 3), (A, 4), (B, 0), (B, 1), (B, 4), (C, 3), (B, 2)]
    for archive, i in refs:
        db.execute("INSERT INTO archive_refs VALUES (?, ?)", (archive, s[i]))
    db.execute("INSERT INTO archive_pending VALUES (?, ?)", (s[5], f'["{A}"]'))
    db.close()
    store = ArchiveStore(Database(path))
    assert seqs(store) == s[:6]
    assert spans_of(store, A) == [(s[0], OPEN)]
    assert spans_of(store, B) == [(s[0], s[1]), (s[2], OPEN), (s[4], s[4])]
    assert spans_of(store, C) == [(s[3], s[3])]
    expect = {A: [0, 1, 3, 4, 5], B: [0, 1, 2, 4], C: [3]}
    for archive, held in expect.items():
        assert [m.id for m in store.query(archive, ArchiveQuery()).items] == [ids[i] for i in held]
    for name in ("archive_refs", "archive_pending"):
        assert store.db.fetchone("SELECT COUNT(*) FROM sqlite_master WHERE name=?", (name,)) == (0,)
    store.append_many([shared(new_archive_id(), "next", A)])
    assert spans_of(store, A) == [(s[0], OPEN)]
