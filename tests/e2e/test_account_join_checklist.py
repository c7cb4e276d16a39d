"""Account-join end to end, the specification's test checklist (§4.1), one test per item: several
real slixmpp clients of one account, other accounts watching, account-join on (the default)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from xml.etree import ElementTree as ET

from minimix.extensions.account_join import Phase
from minimix.protocol import ns
from minimix.protocol.jid import JID
from minimix.protocol.stanza import make
from minimix.protocol.xml import SubElement, tag
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
    admin_item,
    body,
    close,
    codes,
    create,
    error_condition,
    from_jid,
    from_room,
    is_subject,
    item,
    join,
    join_stanza,
    kind,
    send_groupchat,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.support import Client, Running, running_server

ROOM = f"lounge@{SERVICE}"
ALICE = "alice@localhost"
OCC = f"{ROOM}/alice"


def occupant_presence(occupant: str) -> object:
    return lambda el: kind(el) == "presence" and el.get("from") == occupant


async def bob_and_room(srv: Running) -> tuple[Client, Recorder]:
    """Bob (another account) creates the room and stays in it, watching."""
    b, rb = await muc_client(srv, "bob", "desk")
    await create(b, rb, ROOM, "Bob")
    return b, rb


async def alice(srv: Running, resource: str) -> tuple[Client, Recorder]:
    return await muc_client(srv, "alice", resource)


def own_presence(seq: list[ET.Element]) -> ET.Element:
    return next(el for el in seq if kind(el) == "presence" and "110" in codes(el))


async def test_1_two_clients_join_and_the_room_sees_exactly_one_join(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        tap = RoomTap(srv, ALICE)
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        s1 = await join(a1, r1, ROOM, "alice", pid="phone-join")
        s2 = await join(a2, r2, ROOM, "alice", pid="laptop-join")
        assert own_presence(s1).get("id") == "phone-join"
        assert own_presence(s2).get("id") == "laptop-join"
        assert is_subject(s1[-1]) and is_subject(s2[-1])
        assert len(tap.joins()) == 1
        assert tap.joins()[0].get("from") == ALICE  # the account, not a client
        await rb.settle()
        seen = rb.pending(occupant_presence(OCC))  # type: ignore[arg-type]
        assert len(seen) == 1 and seen[0].get("type") is None
        room = srv.server.muc.rooms["lounge"]
        assert list(room.occupants["alice"].sessions) == [JID.parse(ALICE)]
        # A client of the account that did not join sees none of the room's traffic.
        a3, r3 = await alice(srv, "tablet")
        send_groupchat(b, ROOM, "for the joined ones")
        await r1.take(lambda el: body(el) == "for the joined ones")
        await r2.take(lambda el: body(el) == "for the joined ones")
        await no_stanza(r3, from_room(ROOM))
        await close(a1, a2, a3, b)


async def test_2_late_client_sequence_is_occupants_self_history_subject(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        await join(a1, r1, ROOM, "alice")
        for i in range(5):
            send_groupchat(b, ROOM, f"line {i}")
            await r1.take(lambda el, i=i: body(el) == f"line {i}")
        a2, r2 = await alice(srv, "laptop")
        seq = await join(a2, r2, ROOM, "alice", pid="late", history={"maxstanzas": "3"})
        assert [kind(el) for el in seq] == ["presence", "presence", *["message"] * 3, "message"]
        assert seq[0].get("from") == f"{ROOM}/Bob" and "110" not in codes(seq[0])
        me = seq[1]
        assert me.get("from") == OCC and "110" in codes(me) and me.get("id") == "late"
        assert "201" not in codes(me)
        history = seq[2:5]
        assert [body(el) for el in history] == ["line 2", "line 3", "line 4"]
        for el in history:
            assert el.find(f"{{{ns.DELAY}}}delay") is not None
            ids = stanza_ids(el)
            assert ROOM in ids and ALICE in ids  # the room's and the account's stanza-ids
        assert is_subject(seq[5])
        assert all(el.get("to") == f"{ALICE}/laptop" for el in seq)
        await close(a1, a2, b)


async def test_3_client_joining_while_the_account_join_is_pending(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await bob_and_room(srv)
        tap = RoomTap(srv, ALICE)
        tap.hold = True
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        aj = srv.server.account_join
        key = (JID.parse(ALICE), JID.parse(ROOM))
        a1.send_raw(join_stanza(ROOM, "alice", pid="first"))
        await wait_until(lambda: len(tap.joins()) == 1)
        a2.send_raw(join_stanza(ROOM, "alice", pid="second"))
        await wait_until(lambda: len(aj.registry.get(*key).pending) == 2)
        assert aj.registry.get(*key).phase is Phase.JOINING
        assert len(tap.joins()) == 1  # no second join while one is in flight
        await tap.release()
        for rec, pid in ((r1, "first"), (r2, "second")):
            seq = await rec.take_until(is_subject, only=from_room(ROOM))
            assert [kind(el) for el in seq] == ["presence", "presence", "message"]
            assert seq[0].get("from") == f"{ROOM}/Bob"
            assert own_presence(seq).get("id") == pid
        assert len(tap.joins()) == 1
        await close(a1, a2, b)


async def test_4_join_conflict_reaches_both_pending_clients_with_their_ids(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await bob_and_room(srv)
        c, rc = await muc_client(srv, "carol", "pc")
        await join(c, rc, ROOM, "alice")  # carol holds the nick "alice"
        tap = RoomTap(srv, ALICE)
        tap.hold = True
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        a1.send_raw(join_stanza(ROOM, "alice", pid="j-phone"))
        await wait_until(lambda: len(tap.joins()) == 1)
        a2.send_raw(join_stanza(ROOM, "alice", pid="j-laptop"))
        key = (JID.parse(ALICE), JID.parse(ROOM))
        await wait_until(lambda: len(srv.server.account_join.registry.get(*key).pending) == 2)
        await tap.release()
        for rec, pid in ((r1, "j-phone"), (r2, "j-laptop")):
            err = await rec.take(lambda el: el.get("type") == "error")
            assert kind(err) == "presence" and err.get("id") == pid
            assert error_condition(err) == "conflict" and err.get("from") == OCC
            assert err.find(f"{{{ns.MUC}}}x") is not None
        assert srv.server.account_join.registry.get(*key) is None
        await close(a1, a2, b, c)


async def test_5_self_ping_is_answered_by_the_server(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        await join(a1, r1, ROOM, "alice")
        tap = RoomTap(srv, ALICE)
        res = await send_iq(a1, f"<ping xmlns='{ns.PING}'/>", OCC)
        assert res.get("type") == "result" and res.get("from") == OCC
        assert tap.of_kind("iq") == []  # answered here, nothing went to the room
        a3, _r3 = await alice(srv, "tablet")  # online, but never joined the room
        res = await send_iq(a3, f"<ping xmlns='{ns.PING}'/>", OCC)
        assert res.get("type") == "error" and error_condition(res) == "not-acceptable"
        assert tap.of_kind("iq") == []
        await close(a1, a3, b)


async def test_6_one_client_leaving_detaches_only_that_client(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        await rb.take(occupant_presence(OCC))  # type: ignore[arg-type]
        tap = RoomTap(srv, ALICE)
        a1.send_raw(f"<presence to='{OCC}' type='unavailable' id='bye'/>")
        left = await r1.take(self_unavailable(ROOM))
        assert left.get("id") == "bye" and "110" in codes(left)
        it = item(left)
        assert it is not None and it.get("role") == "none"
        send_groupchat(b, ROOM, "still there?")
        await r2.take(lambda el: body(el) == "still there?")
        await no_stanza(r1, lambda el: body(el) == "still there?")
        await no_stanza(rb, is_unavailable_from(OCC))
        assert tap.seen == []  # the room heard nothing
        await close(a1, a2, b)


async def test_7_nick_change_reaches_the_other_client(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        a1.send_raw(f"<presence to='{ROOM}/alicia' id='nick'/>")
        for rec in (r1, r2):
            gone = await rec.take(lambda el: from_jid(OCC)(el) and el.get("type") == "unavailable")
            assert {"110", "303"} <= codes(gone)
            it = item(gone)
            assert it is not None and it.get("nick") == "alicia"
            back = await rec.take(from_jid(f"{ROOM}/alicia"))
            assert back.get("type") is None and "110" in codes(back)
        seen = await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") == "unavailable")
        assert "303" in codes(seen) and "110" not in codes(seen)
        await close(a1, a2, b)


async def test_8_kick_reaches_every_client_and_nothing_rejoins(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        tap = RoomTap(srv, ALICE)
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        res = await send_iq(b, admin_item(nick="alice", role="none", reason="out"), ROOM, "set")
        assert res.get("type") == "result"
        for rec in (r1, r2):
            kicked = await rec.take(self_unavailable(ROOM))
            assert {"110", "307"} <= codes(kicked)
        await asyncio.sleep(0.3)
        assert len(tap.joins()) == 1  # no automatic rejoin
        key = (JID.parse(ALICE), JID.parse(ROOM))
        assert srv.server.account_join.registry.get(*key) is None
        # Asking again is a real room join.
        seq = await join(a1, r1, ROOM, "alice", pid="again")
        assert own_presence(seq).get("id") == "again"
        assert len(tap.joins()) == 2
        await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") is None)
        await close(a1, a2, b)


async def test_9_error_kick_333_rejoins_transparently(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.server.account_join.registry.settings.backoff_first = 0.05
        b, rb = await bob_and_room(srv)
        tap = RoomTap(srv, ALICE)
        a1, r1 = await alice(srv, "phone")
        await join(a1, r1, ROOM, "alice")
        await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") is None)
        # The room believes the account is a ghost (a delivery error came back): 110 + 333.
        bounce = make("presence", to=OCC, from_=ALICE, type_="error")
        err = SubElement(bounce, "{jabber:client}error", {"type": "cancel"})
        SubElement(err, tag(ns.STANZAS, "remote-server-not-found"))
        await srv.server.router.route(bounce, None)
        gone = await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") == "unavailable")
        assert "333" in codes(gone)
        await wait_until(lambda: len(tap.joins()) == 2)
        await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") is None)
        # Transparent: the client was never told and still receives the room.
        send_groupchat(b, ROOM, "welcome back")
        await r1.take(lambda el: body(el) == "welcome back")
        await no_stanza(r1, self_unavailable(ROOM))
        res = await send_iq(a1, f"<ping xmlns='{ns.PING}'/>", OCC)
        assert res.get("type") == "result"
        await close(a1, b)


async def test_10_message_while_every_client_is_offline_is_archived_once(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") is None)
        await close(a1, a2)
        send_groupchat(b, ROOM, "while you were out")
        await rb.take(lambda el: body(el) == "while you were out")
        await no_stanza(rb, lambda el: kind(el) == "presence" and from_jid(OCC)(el))
        await no_stanza(rb, lambda el: el.get("type") == "error")
        a3, r3 = await alice(srv, "phone")
        found = await mam_query(a3, r3, include_groupchat=True)
        copies = [m for m in found if body(m) == "while you were out"]
        assert len(copies) == 1
        ids = stanza_ids(copies[0])
        assert ROOM in ids and ALICE in ids
        # Without include-groupchat a user-archive query is not flooded with group chat.
        plain = await mam_query(a3, r3)
        assert not [m for m in plain if body(m) == "while you were out"]
        # Asking with=room returns them.
        by_room = await mam_query(a3, r3, with_jid=ROOM)
        assert [body(m) for m in by_room].count("while you were out") == 1
        await close(a3, b)


async def test_11_private_messages_reach_each_client_once_and_are_carbon_copied(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        for c in (a1, a2):
            res = await send_iq(c, f"<enable xmlns='{ns.CARBONS}'/>", "", "set")
            assert res.get("type") == "result"
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        b.send_raw(
            f"<message to='{OCC}' type='chat' id='pm-in'><body>psst</body>"
            f"<x xmlns='{ns.MUC_USER}'/></message>"
        )
        for rec in (r1, r2):
            got = await rec.take(lambda el: body(el) == "psst")
            assert got.get("from") == f"{ROOM}/Bob"
            await no_stanza(rec, lambda el: body(el) == "psst")
        a1.send_raw(
            f"<message to='{ROOM}/Bob' type='chat' id='pm-out'><body>hi bob</body>"
            f"<x xmlns='{ns.MUC_USER}'/></message>"
        )
        got = await rb.take(lambda el: body(el) == "hi bob")
        assert got.get("from") == OCC
        carbon = await r2.take(lambda el: el.find(f"{{{ns.CARBONS}}}sent") is not None)
        inner = carbon.find(
            f"{{{ns.CARBONS}}}sent/{{{ns.FORWARD}}}forwarded/{{jabber:client}}message"
        )
        assert inner is not None and body(inner) == "hi bob"
        assert inner.get("to") == f"{ROOM}/Bob"
        await no_stanza(r1, lambda el: el.find(f"{{{ns.CARBONS}}}sent") is not None)
        # Archived once each.
        archived = await mam_query(a1, r1, with_jid=ROOM)
        assert [body(m) for m in archived].count("psst") == 1
        assert [body(m) for m in archived].count("hi bob") == 1
        await close(a1, a2, b)


async def test_12_autojoin_bookmark_joins_and_its_retraction_leaves(tmp_path: Path) -> None:
    from tests.e2e.account_join_bookmarks import publish_bookmark, retract_bookmark

    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        tap = RoomTap(srv, ALICE)
        a1, r1 = await alice(srv, "phone")
        await publish_bookmark(srv, a1, ROOM, autojoin=True, nick="alice")
        await wait_until(lambda: len(tap.joins()) == 1)
        await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") is None)
        seq = await join(a1, r1, ROOM, "alice", pid="from-bookmark")
        assert own_presence(seq).get("id") == "from-bookmark"
        assert len(tap.joins()) == 1  # answered from the account's state
        await retract_bookmark(srv, a1, ROOM)
        out = await r1.take(self_unavailable(ROOM))
        assert "110" in codes(out)
        await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") == "unavailable")
        await close(a1, b)


async def test_13_a_disconnect_without_stream_management_is_not_a_leave(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        a2, r2 = await alice(srv, "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        await rb.take(lambda el: from_jid(OCC)(el) and el.get("type") is None)
        tap = RoomTap(srv, ALICE)
        await close(a1)
        await close(a2)
        await no_stanza(rb, lambda el: from_jid(OCC)(el))
        assert [s for s in tap.seen if s.get("type") == "unavailable"] == []
        assert "alice" in srv.server.muc.rooms["lounge"].occupants
        await close(b)


async def test_14_a_ping_from_the_room_to_the_account_is_answered(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await bob_and_room(srv)
        a1, r1 = await alice(srv, "phone")
        await join(a1, r1, ROOM, "alice")
        # Bob pings the occupant: the room passes the ping to the account's bare JID.
        res = await send_iq(b, f"<ping xmlns='{ns.PING}'/>", OCC)
        assert res.get("type") == "result" and res.get("from") == OCC
        await no_stanza(r1, lambda el: kind(el) == "iq" and from_room(ROOM)(el))  # not a client
        # And with no client attached at all, still answered.
        await close(a1)
        res = await send_iq(b, f"<ping xmlns='{ns.PING}'/>", OCC)
        assert res.get("type") == "result"
        await close(b)
