"""Account-join end to end: every "Known issue" and "TODO" of the experiment this feature grew
from (``mod_minimix``), each shown working with real clients of one account and other accounts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from xml.etree import ElementTree as ET

from minimix.protocol import ns
from minimix.protocol.jid import JID
from tests.e2e.account_join_bookmarks import (
    publish_bookmark,
    publish_legacy_bookmarks,
)
from tests.e2e.account_join_helpers import (
    RoomTap,
    is_unavailable_from,
    no_stanza,
    self_unavailable,
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
    item,
    join,
    kind,
    send_groupchat,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.support import Client, Running, running_server

ROOM = f"seed@{SERVICE}"
ALICE = "alice@localhost"
OCC = f"{ROOM}/alice"


def available_from(jid: str) -> object:
    return lambda el: kind(el) == "presence" and el.get("from") == jid and el.get("type") is None


async def room_with_bob(srv: Running) -> tuple[Client, Recorder]:
    b, rb = await muc_client(srv, "bob", "desk")
    await create(b, rb, ROOM, "Bob")
    return b, rb


def own(seq: list[ET.Element]) -> ET.Element:
    return next(el for el in seq if kind(el) == "presence" and "110" in codes(el))


# --------------------------------------------------------------------------- Known issues


async def test_seed_known_issue_you_can_never_leave_is_fixed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        for c, rec in ((a1, r1), (a2, r2)):
            c.send_raw(f"<presence to='{OCC}' type='unavailable'/>")
            await rec.take(self_unavailable(ROOM))
        gone = await rb.take(is_unavailable_from(OCC))
        assert "307" not in codes(gone)
        await wait_until(lambda: "alice" not in srv.server.muc.rooms["seed"].occupants)
        assert srv.server.account_join.store.memberships(ALICE) == []
        await close(a1, a2, b)


async def test_seed_known_issue_you_never_see_anyone_leave_is_fixed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        c, rc = await muc_client(srv, "carol", "pc")
        d, rd = await muc_client(srv, "dave", "pc")
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(c, rc, ROOM, "carol")
        await join(d, rd, ROOM, "dave")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        c.send_raw(f"<presence to='{ROOM}/carol' type='unavailable'/>")
        res = await send_iq(b, admin_item(nick="dave", role="none", reason="bye"), ROOM, "set")
        assert res.get("type") == "result"
        for rec in (r1, r2):
            left = await rec.take(is_unavailable_from(f"{ROOM}/carol"))
            assert "110" not in codes(left)
            kicked = await rec.take(is_unavailable_from(f"{ROOM}/dave"))
            assert "307" in codes(kicked)
        # A client attaching now is not told about occupants that are gone.
        a3, r3 = await muc_client(srv, "alice", "tablet")
        seq = await join(a3, r3, ROOM, "alice")
        froms = {el.get("from") for el in seq if kind(el) == "presence"}
        assert froms == {f"{ROOM}/Bob", OCC}
        await close(a1, a2, a3, b, c, d)


async def test_seed_known_issue_being_kicked_is_handled(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, _rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        res = await send_iq(b, admin_item(jid=ALICE, affiliation="outcast"), ROOM, "set")
        assert res.get("type") == "result"
        for rec in (r1, r2):
            banned = await rec.take(self_unavailable(ROOM))
            assert {"110", "301"} <= codes(banned)
            it = item(banned)
            assert it is not None and it.get("affiliation") == "outcast"
        # The state is gone: no answers as if still inside.
        res = await send_iq(a1, f"<ping xmlns='{ns.PING}'/>", OCC)
        assert error_condition(res) == "not-acceptable"
        a2.send_raw(f"<message to='{ROOM}' type='groupchat' id='g1'><body>x</body></message>")
        err = await r2.take(lambda el: el.get("id") == "g1")
        assert err.get("type") == "error" and error_condition(err) == "not-acceptable"
        # Joining again asks the room, which refuses the banned account.
        seq = await join(a1, r1, ROOM, "alice", pid="retry")
        assert seq[-1].get("type") == "error" and error_condition(seq[-1]) == "forbidden"
        assert seq[-1].get("id") == "retry"
        await close(a1, a2, b)


# --------------------------------------------------------------------------- TODO


async def test_seed_todo_integrate_with_bookmarks(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await room_with_bob(srv)
        tap = RoomTap(srv, ALICE)
        a0, _r0 = await muc_client(srv, "alice", "setup")
        await publish_bookmark(srv, a0, ROOM, autojoin=True, nick="Ally")
        await close(a0)  # no client of alice is online now
        await rb.take(available_from(f"{ROOM}/Ally"))  # type: ignore[arg-type]
        a1, r1 = await muc_client(srv, "alice", "phone")
        seq = await join(a1, r1, ROOM, "alice-phone", pid="p")
        me = own(seq)
        assert me.get("from") == f"{ROOM}/Ally" and me.get("id") == "p"
        assert "210" in codes(me)  # the account's nick was kept
        assert len(tap.joins()) == 1
        # The bookmark keeps the account in the room when its last client leaves.
        a1.send_raw(f"<presence to='{ROOM}/Ally' type='unavailable'/>")
        await r1.take(self_unavailable(ROOM))
        await no_stanza(rb, is_unavailable_from(f"{ROOM}/Ally"))
        await close(a1, b)


async def test_seed_todo_tracking_outgoing_presence(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice", extra="<show>away</show><status>on the bus</status>")
        first = await rb.take(available_from(OCC))  # type: ignore[arg-type]
        assert first.findtext("{jabber:client}show") == "away"
        await join(a2, r2, ROOM, "alice", extra="<show>dnd</show><status>coding</status>")
        better = await rb.take(available_from(OCC))  # type: ignore[arg-type]
        assert better.findtext("{jabber:client}show") == "dnd"
        assert better.findtext("{jabber:client}status") == "coding"
        # A broadcast presence change counts too (most available wins: chat).
        a1.send_raw("<presence><show>chat</show><status>free</status></presence>")
        chat = await rb.take(available_from(OCC))  # type: ignore[arg-type]
        assert chat.findtext("{jabber:client}show") == "chat"
        assert chat.findtext("{jabber:client}status") == "free"
        # The laptop repeating what it said changes nothing for the room.
        a2.send_raw(f"<presence to='{OCC}'><show>dnd</show><status>coding</status></presence>")
        await no_stanza(rb, available_from(OCC))  # type: ignore[arg-type]
        # The chatty client disconnects: the room sees the next best, never an unavailable.
        await close(a1)
        after = await rb.take(available_from(OCC))  # type: ignore[arg-type]
        assert after.findtext("{jabber:client}show") == "dnd"
        await no_stanza(rb, is_unavailable_from(OCC))
        await close(a2, b)


async def test_seed_todo_leaving_rooms(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"linger": "1h"}) as srv:
        b, rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        a1.send_raw(f"<presence to='{OCC}' type='unavailable' id='l1'/>")
        left = await r1.take(self_unavailable(ROOM))
        assert left.get("id") == "l1"
        await no_stanza(rb, is_unavailable_from(OCC))
        # A disconnect of the last client is not a leave: the account lingers.
        await close(a2)
        await no_stanza(rb, is_unavailable_from(OCC))
        key = (JID.parse(ALICE), JID.parse(ROOM))
        occ = srv.server.account_join.registry.get(*key)
        assert occ is not None and occ.joined == {}
        # Back, then an explicit leave by the last client: the account leaves.
        seq = await join(a1, r1, ROOM, "alice")
        assert "110" in codes(own(seq))
        a1.send_raw(f"<presence to='{OCC}' type='unavailable'/>")
        await r1.take(self_unavailable(ROOM))
        await rb.take(is_unavailable_from(OCC))
        await close(a1, b)


async def test_seed_todo_leaving_after_the_linger_time(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"linger": "0.3s"}) as srv:
        b, rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, ROOM, "alice")
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        await close(a1)
        gone = await rb.take(is_unavailable_from(OCC), timeout=5)
        assert "307" not in codes(gone) and "333" not in codes(gone)
        await close(b)


async def test_seed_todo_nickname_management(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await room_with_bob(srv)
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        # Another client asking for another nick gets the account's, with 210.
        seq = await join(a2, r2, ROOM, "laptop-alice")
        assert own(seq).get("from") == OCC and "210" in codes(own(seq))
        # A nick change by one client is the account's: every attached client sees it.
        a2.send_raw(f"<presence to='{ROOM}/Alicia' id='n1'/>")
        for rec in (r1, r2):
            gone = await rec.take(lambda el: from_jid(OCC)(el) and el.get("type") == "unavailable")
            assert {"110", "303"} <= codes(gone)
            await rec.take(available_from(f"{ROOM}/Alicia"))  # type: ignore[arg-type]
        # A refused nick goes back only to the client that asked.
        a1.send_raw(f"<presence to='{ROOM}/Bob' id='n2'/>")
        err = await r1.take(lambda el: el.get("id") == "n2")
        assert err.get("type") == "error" and error_condition(err) == "conflict"
        await no_stanza(r2, lambda el: el.get("type") == "error")
        # Still one occupant, under the new nick, for everyone.
        send_groupchat(a1, ROOM, "new name", mid="nn")
        got = await rb.take(lambda el: body(el) == "new name")
        assert got.get("from") == f"{ROOM}/Alicia"
        await close(a1, a2, b)


async def test_seed_todo_bookmark_sync(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await room_with_bob(srv)
        tap = RoomTap(srv, ALICE)
        a1, r1 = await muc_client(srv, "alice", "phone")
        await publish_bookmark(srv, a1, ROOM, autojoin=True, nick="alice")
        await rb.take(available_from(OCC))  # type: ignore[arg-type]
        await join(a1, r1, ROOM, "alice")
        # Editing the bookmark's nick renames the account in the room.
        await publish_bookmark(srv, a1, ROOM, autojoin=True, nick="alice2")
        renamed = await r1.take(available_from(f"{ROOM}/alice2"))  # type: ignore[arg-type]
        assert "110" in codes(renamed)
        # Autojoin turned off: the account leaves and the client is told (110).
        await publish_bookmark(srv, a1, ROOM, autojoin=False, nick="alice2")
        out = await r1.take(self_unavailable(ROOM))
        assert "110" in codes(out)
        await rb.take(is_unavailable_from(f"{ROOM}/alice2"))
        # The legacy form (XEP-0048 in private storage) drives the same engine.
        joins = len(tap.joins())
        await publish_legacy_bookmarks(srv, a1, [(ROOM, True, "old-school")])
        await wait_until(lambda: len(tap.joins()) == joins + 1)
        await rb.take(available_from(f"{ROOM}/old-school"))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await close(a1, b)
