"""Group chat archived for every account in one transaction, and delivered only once stored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from minimix.protocol.xml import parse_element
from minimix.storage.archive import ArchiveRow, SharedRow
from minimix.storage.database import StorageError
from tests.e2e.account_join_helpers import mam_query, stanza_ids
from tests.e2e.muc_helpers import Recorder, body, close, create, join, send_groupchat
from tests.e2e.muc_helpers import client as muc_client
from tests.support import Client, Running, running_server

ROOM = "batch@conference.localhost"


async def owner_and_ann(srv: Running) -> tuple[Client, Recorder, Client, Recorder]:
    """The room's owner (one client) and ann (one client), both in the room."""
    owner, ro = await muc_client(srv, "owner", "desk")
    await create(owner, ro, ROOM, "owner")
    ann, ra = await muc_client(srv, "ann", "phone")
    await join(ann, ra, ROOM, "ann")
    return owner, ro, ann, ra


async def test_one_transaction_for_every_account_and_delivery_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path) as srv:
        owner, ro = await muc_client(srv, "owner", "desk")
        await create(owner, ro, ROOM, "owner")
        others: list[tuple[str, Recorder]] = []
        clients = [owner]
        for name in ("ann", "ben"):
            for resource in ("phone", "laptop"):
                c, rec = await muc_client(srv, name, resource)
                await join(c, rec, ROOM, name)
                clients.append(c)
                others.append((f"{name}/{resource}", rec))
        archive = srv.server.archive
        router = srv.server.router
        batches: list[tuple[list[str], int]] = []
        store_rows = archive.store_rows

        def recording(rows: Sequence[ArchiveRow | SharedRow]) -> None:
            # Nothing of this message has reached a client while it is being stored.
            accounts = [
                a for r in rows for a in ([r.archive] if isinstance(r, ArchiveRow) else r.archives)
            ]
            batches.append((accounts, router.counters.get("account_join_fanout", 0)))
            store_rows(rows)

        monkeypatch.setattr(archive, "store_rows", recording)
        before = router.counters.get("account_join_fanout", 0)
        send_groupchat(owner, ROOM, "kept for all")
        for _, rec in others:
            await rec.take(lambda el: body(el) == "kept for all")
        await ro.take(lambda el: body(el) == "kept for all")
        assert len(batches) == 1, batches  # one transaction for the three accounts
        accounts, seen_when_storing = batches[0]
        assert sorted(accounts) == ["ann@localhost", "ben@localhost", "owner@localhost"]
        assert seen_when_storing == before
        assert router.counters["account_join_fanout"] - before == 5
        # Each account's archive has its copy, with the id its clients were given.
        for name, rec in others[::2]:
            account = name.split("/")[0] + "@localhost"
            got = next(el for el in rec.items if body(el) == "kept for all")
            mine_id = stanza_ids(got)[account]
            found = await mam_query(rec.client, rec, with_jid=ROOM)
            assert mine_id in {stanza_ids(el).get(account) for el in found}
        # Stored once: one row, within a span of each of the three accounts.
        db = archive.store.db
        rows = db.fetchall("SELECT archive, seq FROM archive WHERE stanza LIKE '%kept for all%'")
        assert sorted(r[0] for r in rows) == ["", ROOM]  # shared, and the room's own archive
        seq = next(r[1] for r in rows if r[0] == "")
        holders = db.fetchall(
            "SELECT archive FROM archive_spans WHERE with_jid=? AND first_seq <= ? "
            "AND last_seq >= ?",
            (ROOM, seq, seq),
        )
        assert sorted(r[0] for r in holders) == sorted(accounts)
        await close(*clients)


async def test_what_could_not_be_stored_is_not_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path) as srv:
        owner, ro, ann, ra = await owner_and_ann(srv)
        archive = srv.server.archive
        store_rows = archive.store_rows

        def full_disk(rows: Sequence[ArchiveRow | SharedRow]) -> None:
            raise StorageError("database or disk is full", transient=True)

        monkeypatch.setattr(archive, "store_rows", full_disk)
        send_groupchat(owner, ROOM, "lost in storage")
        await ra.settle()
        await ro.settle()
        assert not [el for el in ra.items + ro.items if body(el) == "lost in storage"]
        monkeypatch.setattr(archive, "store_rows", store_rows)
        send_groupchat(owner, ROOM, "stored again")
        await ra.take(lambda el: body(el) == "stored again")
        await ro.take(lambda el: body(el) == "stored again")
        await close(owner, ann)


async def test_what_is_not_stored_waits_behind_what_is_being_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat state (delivered, never archived) sent right after a message reaches every client
    after that message, and waits for no transaction of its own."""
    async with running_server(tmp_path) as srv:
        owner, ro, ann, ra = await owner_and_ann(srv)
        ann2, ra2 = await muc_client(srv, "ann", "laptop")
        await join(ann2, ra2, ROOM, "ann")
        archive = srv.server.archive
        store_rows = archive.store_rows
        stored: list[int] = []

        def counting(rows: Sequence[ArchiveRow | SharedRow]) -> None:
            stored.append(len(rows))
            store_rows(rows)

        monkeypatch.setattr(archive, "store_rows", counting)
        send_groupchat(owner, ROOM, "warm up")
        for rec in (ra, ra2, ro):
            await rec.take(lambda el: body(el) == "warm up")
        stored.clear()
        # The room's reflections of a message and of a chat state, handed to account-join in
        # one loop turn (as a busy room does): the chat state waits behind the message.
        room = f"{ROOM}/owner"
        said = parse_element(
            f"<message xmlns='jabber:client' from='{room}' type='groupchat' id='c1'>"
            f"<body>said</body><stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='r-c1'/>"
            "</message>"
        )
        paused = parse_element(
            f"<message xmlns='jabber:client' from='{room}' type='groupchat' id='c2'>"
            "<paused xmlns='http://jabber.org/protocol/chatstates'/>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='r-c2'/></message>"
        )
        account_join = srv.server.account_join
        assert account_join.room_copies(said, ["ann@localhost"], None) == []
        assert account_join.room_copies(paused, ["ann@localhost"], None) == []
        assert stored == []  # nothing stored yet, nothing delivered: both wait for the turn's end
        for rec in (ra, ra2):
            got = await rec.take_until(
                lambda el: el.get("id") == "c2", only=lambda el: el.tag.endswith("message")
            )
            ids = [el.get("id") for el in got if el.get("id") in ("c1", "c2")]
            assert ids == ["c1", "c2"], ids
        assert stored and all(n >= 1 for n in stored)
        db = archive.store.db
        assert db.fetchall("SELECT 1 FROM archive WHERE stanza LIKE '%paused%'") == []
        assert db.fetchall("SELECT 1 FROM archive WHERE archive='' AND stanza LIKE '%said%'")
        await close(owner, ann, ann2)
