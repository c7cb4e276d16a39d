"""Account-join end to end beyond the checklist: stream resumption, the server's own liveness
checks, account deletion, room destruction, IQs to occupants, room status messages, spoofed
stanza-ids, autojoin bookmarks at start, and fan-out that serializes once."""

from __future__ import annotations

from pathlib import Path

import pytest

import minimix.extensions.account_join.extension as aj_extension
import minimix.extensions.archive.user as archive_user
from minimix.core.session import Prepared
from minimix.protocol import ns
from minimix.protocol.jid import JID
from minimix.protocol.xml import Element
from tests.e2e.account_join_bookmarks import publish_bookmark
from tests.e2e.account_join_helpers import (
    RoomTap,
    is_unavailable_from,
    mam_query,
    no_stanza,
    self_unavailable,
    stanza_ids,
    wait_until,
)
from tests.e2e.muc_helpers import (
    SERVICE,
    Recorder,
    body,
    close,
    codes,
    configure,
    create,
    join,
    kind,
    send_groupchat,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.e2e.raw_xmpp_client import RawClient
from tests.support import Client, Running, running_server

ROOM = f"life@{SERVICE}"
ALICE = "alice@localhost"
OCC = f"{ROOM}/alice"


async def room_with_bob(srv: Running) -> tuple[Client, Recorder]:
    b, rb = await muc_client(srv, "bob", "desk")
    await create(b, rb, ROOM, "Bob")
    return b, rb


def available_from(jid: str) -> object:
    return lambda el: kind(el) == "presence" and el.get("from") == jid and el.get("type") is None


async def test_stream_resumption_keeps_the_client_attached(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await room_with_bob(srv)
        srv.add_user("alice")
        phone = RawClient("127.0.0.1", srv.port, srv.ca)
        await phone.connect("alice", "secret", "phone")
        previd = await phone.enable_stream_management()
        phone.send(f"<presence to='{OCC}'><x xmlns='{ns.MUC}'/></presence>")
        await phone.take(lambda el: el.find("{jabber:client}subject") is not None)
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        handled = phone.handled
        phone.drop()  # the connection is lost; the stream hibernates
        key = (JID.parse(ALICE), JID.parse(ROOM))
        send_groupchat(b, ROOM, "said while you were in a tunnel")
        await rb.take(lambda el: body(el) == "said while you were in a tunnel")
        await no_stanza(rb, is_unavailable_from(OCC))
        occ = srv.server.account_join.registry.get(*key)
        assert occ is not None and JID.parse(f"{ALICE}/phone") in occ.joined
        back = RawClient("127.0.0.1", srv.port, srv.ca)
        await back.connect("alice", "secret", "phone", resume=(previd, handled))
        got = await back.take(
            lambda el: el.findtext("{jabber:client}body") == "said while you were in a tunnel"
        )
        assert got.get("to") == f"{ALICE}/phone"
        # Still attached after resuming: live traffic keeps coming.
        send_groupchat(b, ROOM, "and now")
        await back.take(lambda el: el.findtext("{jabber:client}body") == "and now")
        await back.close()
        await close(b)


async def test_the_server_notices_a_room_that_lost_the_account_and_rejoins(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, account_join={"self_ping_interval": "0.2s"}) as srv:
        b, rb = await room_with_bob(srv)
        tap = RoomTap(srv, ALICE)
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, ROOM, "alice")
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        # The room forgets the account without a word (as after a crash of its server).
        room = srv.server.muc.rooms["life"]
        del room.occupants["alice"]
        room._by_real.pop(JID.parse(ALICE))
        # The server's own self-ping finds out and rejoins; the client never notices.
        await wait_until(lambda: len(tap.joins()) == 2, timeout=5)
        pings = [s for s in tap.of_kind("iq") if s.find(f"{{{ns.PING}}}ping") is not None]
        assert pings and pings[0].get("from") == ALICE
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        send_groupchat(b, ROOM, "are you still with us?")
        await r1.take(lambda el: body(el) == "are you still with us?")
        await no_stanza(r1, self_unavailable(ROOM))
        await close(a1, b)


async def test_deleting_the_account_leaves_every_room(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, ROOM, "alice")
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        res = await send_iq(a1, f"<query xmlns='{ns.REGISTER}'><remove/></query>", "", "set")
        assert res.get("type") == "result"
        await rb.take(is_unavailable_from(OCC))
        assert srv.server.account_join.store.memberships(ALICE) == []
        await close(a1, b)


async def test_room_destruction_reaches_every_client_and_nothing_rejoins(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        tap = RoomTap(srv, ALICE)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        destroy = (
            f"<query xmlns='{ns.MUC_OWNER}'><destroy jid='new@{SERVICE}'>"
            "<reason>moving</reason></destroy></query>"
        )
        res = await send_iq(b, destroy, ROOM, "set")
        assert res.get("type") == "result"
        for rec in (r1, r2):
            gone = await rec.take(self_unavailable(ROOM))
            d = gone.find(f"{{{ns.MUC_USER}}}x/{{{ns.MUC_USER}}}destroy")
            assert d is not None and d.get("jid") == f"new@{SERVICE}"
        assert len(tap.joins()) == 1
        assert srv.server.account_join.registry.get(JID.parse(ALICE), JID.parse(ROOM)) is None
        await close(a1, a2, b)


async def test_an_iq_to_an_occupant_is_answered_to_the_client_that_asked(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        res = await send_iq(a2, f"<query xmlns='{ns.DISCO_INFO}'/>", f"{ROOM}/Bob")
        assert res.get("type") == "result" and res.get("from") == f"{ROOM}/Bob"
        identities = res.findall(f"{{{ns.DISCO_INFO}}}query/{{{ns.DISCO_INFO}}}identity")
        assert "account" in {i.get("category") for i in identities}  # Bob's account answered
        await no_stanza(r1, lambda el: kind(el) == "iq" and el.get("from") == f"{ROOM}/Bob")
        # IQs to the room itself pass through from the client (rights are the account's).
        res = await send_iq(a1, f"<query xmlns='{ns.DISCO_INFO}'/>", ROOM)
        assert res.get("type") == "result"
        await close(a1, a2, b)


async def test_room_status_messages_and_subject_changes_reach_every_client(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        res = await configure(b, ROOM, {"muc#roomconfig_roomname": "Renamed"})
        assert res.get("type") == "result"
        for rec in (r1, r2):
            note = await rec.take(lambda el: "104" in codes(el))
            assert kind(note) == "message" and note.get("from") == ROOM
        b.send_raw(
            f"<message to='{ROOM}' type='groupchat'><subject>Fresh topic</subject></message>"
        )
        for rec in (r1, r2):
            await rec.take(lambda el: el.findtext("{jabber:client}subject") == "Fresh topic")
        a3, r3 = await muc_client(srv, "alice", "tablet")
        seq = await join(a3, r3, ROOM, "alice")
        assert seq[-1].findtext("{jabber:client}subject") == "Fresh topic"
        await close(a1, a2, a3, b)


async def test_a_stanza_id_claiming_to_be_the_accounts_is_removed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, ROOM, "alice")
        send_groupchat(
            b,
            ROOM,
            "trust me",
            extra=f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ALICE}' id='forged'/>",
        )
        got = await r1.take(lambda el: body(el) == "trust me")
        ids = stanza_ids(got)
        assert ids.get(ALICE) not in (None, "forged")
        assert ROOM in ids
        await close(a1, b)


async def test_autojoin_bookmarks_are_joined_when_the_server_starts(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        b, rb = await room_with_bob(srv)
        a0, _ = await muc_client(srv, "alice", "setup")
        await publish_bookmark(srv, a0, ROOM, autojoin=True, nick="morning")
        await close(a0, b)
    async with running_server(tmp_path) as srv:
        await wait_until(lambda: "morning" in srv.server.muc.rooms["life"].occupants, timeout=5)
        b, rb = await muc_client(srv, "bob", "desk")
        seq = await join(b, rb, ROOM, "Bob")
        assert f"{ROOM}/morning" in {el.get("from") for el in seq}
        await close(b)


@pytest.mark.parametrize("archive", [True, False])
async def test_fan_out_serializes_each_stanza_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: bool
) -> None:
    made: list[Element] = []

    class CountingPrepared(Prepared):
        def __init__(self, el: Element) -> None:
            made.append(el)
            super().__init__(el)

    monkeypatch.setattr(aj_extension, "Prepared", CountingPrepared)
    monkeypatch.setattr(archive_user, "Prepared", CountingPrepared)
    async with running_server(tmp_path, archive={"enabled": archive}) as srv:
        b, _rb = await room_with_bob(srv)
        recs = []
        for resource in ("phone", "laptop", "tablet"):
            c, rec = await muc_client(srv, "alice", resource)
            await join(c, rec, ROOM, "alice")
            recs.append((c, rec))
        made.clear()
        before = srv.server.router.counters.get("account_join_fanout", 0)
        send_groupchat(b, ROOM, "one for all")
        for _, rec in recs:
            await rec.take(lambda el: body(el) == "one for all")
        # Serialized once for every account in the room, alice's three clients and bob's one:
        # the room's message, or with the archive on the copy stored once for every account
        # (each client's copy is spliced from it).
        assert len([el for el in made if body(el) == "one for all"]) == 1  # type: ignore[arg-type]
        # Three deliveries to alice's clients, one to bob's (bob's account is an occupant too).
        assert srv.server.router.counters["account_join_fanout"] - before == 4
        await close(*(c for c, _ in recs), b)


async def test_stats_count_rooms_and_attached_clients(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        stats = srv.server.account_join.stats()
        assert stats["account_join_rooms"] == 2  # alice's and bob's occupancies
        assert stats["account_join_clients"] == 3
        await close(a1)
        await wait_until(lambda: srv.server.account_join.stats()["account_join_clients"] == 2)
        await close(a2, b)


async def test_chat_states_in_the_room_are_delivered_but_not_archived(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _ = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, ROOM, "alice")
        b.send_raw(
            f"<message to='{ROOM}' type='groupchat' id='cs1'>"
            f"<composing xmlns='{ns.CHATSTATES}'/></message>"
        )
        await r1.take(lambda el: el.find(f"{{{ns.CHATSTATES}}}composing") is not None)
        send_groupchat(b, ROOM, "typed it")
        await r1.take(lambda el: body(el) == "typed it")
        kept = await mam_query(a1, r1, with_jid=ROOM)
        assert [body(m) for m in kept] == ["typed it"]
        await close(a1, b)


async def test_an_account_deleted_while_the_server_was_down_is_not_rejoined(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        b, _ = await room_with_bob(srv)
        await configure(b, ROOM, {"muc#roomconfig_persistentroom": "1"})
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, ROOM, "alice")
        await close(a1, b)
    async with running_server(tmp_path) as srv:
        srv.server.accounts.delete("alice")  # as `minimix user delete` does, offline
    async with running_server(tmp_path) as srv:
        await wait_until(lambda: srv.server.account_join.store.memberships(ALICE) == [])
        assert "alice" not in srv.server.muc.rooms["life"].occupants


async def test_group_chat_an_account_blocks_does_not_reach_its_clients(tmp_path: Path) -> None:
    """Blocking (XEP-0191) applies to a room's group chat fanned out to the account's clients."""
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        c, _rc = await muc_client(srv, "carol", "desk")
        await join(c, _rc, ROOM, "Carol")
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        reply = await send_iq(
            a1,
            f"<block xmlns='urn:xmpp:blocking'><item jid='{ROOM}/Bob'/></block>",
            "alice@localhost",
            "set",
        )
        assert reply.get("type") == "result"
        send_groupchat(b, ROOM, "not for alice")
        send_groupchat(c, ROOM, "for everyone")
        for rec in (r1, r2):
            await rec.take(lambda el: body(el) == "for everyone")
            await no_stanza(rec, lambda el: body(el) == "not for alice")
        await close(a1, a2, b, c)
