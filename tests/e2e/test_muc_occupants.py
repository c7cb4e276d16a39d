"""Group chat service, end to end: what occupants do (XEP-0045 §7, XEP-0410, XEP-0249)."""

from __future__ import annotations

from pathlib import Path

from minimix.protocol import ns
from minimix.protocol.jid import JID
from tests.e2e.muc_helpers import (
    SERVICE,
    body,
    close,
    codes,
    configure,
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
from tests.support import running_server

ROOM = f"coven@{SERVICE}"
NO_AUTO_JOIN = {"enabled": False}


async def test_nick_change_availability_and_exit(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        await create(a, ra, ROOM, "Alice")
        await join(b, rb, ROOM, "Bob")
        await ra.take(from_jid(f"{ROOM}/Bob"))

        # Nick change (§7.6): 303 from the old nick, then the new nick; 110 for the changer.
        b.send_raw(f"<presence to='{ROOM}/Robert' id='nick1'/>")
        gone = await rb.take(lambda el: from_jid(f"{ROOM}/Bob")(el))
        assert gone.get("type") == "unavailable" and codes(gone) == {"110", "303"}
        gone_item = item(gone)
        assert gone_item is not None and gone_item.get("nick") == "Robert"
        back = await rb.take(from_jid(f"{ROOM}/Robert"))
        assert codes(back) == {"110"} and back.get("id") == "nick1"
        seen = await ra.take(from_jid(f"{ROOM}/Bob"))
        assert codes(seen) == {"303"}
        await ra.take(lambda el: from_jid(f"{ROOM}/Robert")(el) and el.get("type") is None)
        # Nick taken: conflict, to the changer only.
        b.send_raw(f"<presence to='{ROOM}/Alice' id='nick2'/>")
        err = await rb.take(lambda el: el.get("id") == "nick2")
        assert err.get("type") == "error" and error_condition(err) == "conflict"

        # Availability change (§7.7).
        b.send_raw(f"<presence to='{ROOM}/Robert'><show>away</show><status>brb</status></presence>")
        away = await ra.take(lambda el: el.findtext("{jabber:client}show") == "away")
        assert (
            away.get("from") == f"{ROOM}/Robert" and away.findtext("{jabber:client}status") == "brb"
        )
        it = item(away)
        assert it is not None and it.get("role") == "participant"

        # Exit (§7.14): 110 and role none to the leaver, the same without 110 to others.
        b.send_raw(
            f"<presence to='{ROOM}/Robert' type='unavailable'><status>bye</status></presence>"
        )
        mine = await rb.take(lambda el: el.get("type") == "unavailable" and "110" in codes(el))
        mine_item = item(mine)
        assert mine_item is not None and mine_item.get("role") == "none"
        theirs = await ra.take(
            lambda el: from_jid(f"{ROOM}/Robert")(el) and el.get("type") == "unavailable"
        )
        assert "110" not in codes(theirs) and theirs.findtext("{jabber:client}status") == "bye"
        # A presence without <x/> from someone not in the room: "you are not in the room".
        b.send_raw(f"<presence to='{ROOM}/Robert'/>")
        told = await rb.take(lambda el: {"110", "307", "333"} <= codes(el))
        assert told.get("type") == "unavailable"
        # Messages from non-occupants are refused.
        b.send_raw(f"<message to='{ROOM}' type='groupchat' id='no'><body>hi</body></message>")
        err = await rb.take(lambda el: el.get("id") == "no" and el.get("type") == "error")
        assert error_condition(err) == "not-acceptable"
        await close(a, b)


async def test_multi_session_nick(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b1, rb1 = await muc_client(srv, "bob", "phone")
        b2, rb2 = await muc_client(srv, "bob", "laptop")
        await create(a, ra, ROOM, "Alice")
        await join(b1, rb1, ROOM, "Bob")
        seq = await join(b2, rb2, ROOM, "Bob")
        assert "110" in codes(seq[-2])
        await ra.settle()
        joins = [
            el
            for el in ra.pending(from_jid(f"{ROOM}/Bob"))
            if el.get("type") is None and kind(el) == "presence"
        ]
        assert len(joins) >= 1  # one occupant; its presence may be refreshed
        ra.items.clear()
        ra._taken.clear()

        send_groupchat(a, ROOM, "to both")
        for rec in (rb1, rb2):
            await rec.take(lambda el: body(el) == "to both")
        a.send_raw(f"<message to='{ROOM}/Bob' type='chat' id='pm1'><body>psst</body></message>")
        for rec in (rb1, rb2):
            pm = await rec.take(lambda el: body(el) == "psst")
            assert pm.get("from") == f"{ROOM}/Alice"
        send_groupchat(b2, ROOM, "from the laptop")
        got = await ra.take(lambda el: body(el) == "from the laptop")
        assert got.get("from") == f"{ROOM}/Bob"

        # One session leaves: it alone is told; Bob is still in the room.
        b1.send_raw(f"<presence to='{ROOM}/Bob' type='unavailable'/>")
        left = await rb1.take(lambda el: el.get("type") == "unavailable")
        assert "110" in codes(left)
        await ra.settle()
        assert not ra.pending(lambda el: el.get("type") == "unavailable")
        send_groupchat(a, ROOM, "still here?")
        await rb2.take(lambda el: body(el) == "still here?")
        await close(a, b1, b2)


async def test_private_messages_and_direct_invitations(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        await create(a, ra, ROOM, "Alice")
        await join(b, rb, ROOM, "Bob")

        b.send_raw(
            f"<message to='{ROOM}/Alice' type='chat' id='pm'><body>psst</body>"
            f"<x xmlns='{ns.MUC_USER}'/></message>"
        )
        pm = await ra.take(lambda el: body(el) == "psst")
        assert pm.get("from") == f"{ROOM}/Bob" and pm.get("type") == "chat"
        assert pm.find(f"{{{ns.MUC_USER}}}x") is not None
        # XEP-0249 direct invitations sent through the room pass through untouched.
        b.send_raw(
            f"<message to='{ROOM}/Alice' id='dinv'>"
            f"<x xmlns='{ns.CONFERENCE}' jid='other@{SERVICE}' reason='join us'/></message>"
        )
        dinv = await ra.take(lambda el: el.get("id") == "dinv")
        conf = dinv.find(f"{{{ns.CONFERENCE}}}x")
        assert conf is not None and conf.get("jid") == f"other@{SERVICE}"
        # Errors: unknown nick, groupchat type, then PMs switched off.
        b.send_raw(f"<message to='{ROOM}/Nobody' type='chat' id='e1'><body>x</body></message>")
        err = await rb.take(lambda el: el.get("id") == "e1")
        assert error_condition(err) == "item-not-found"
        b.send_raw(f"<message to='{ROOM}/Alice' type='groupchat' id='e2'><body>x</body></message>")
        err = await rb.take(lambda el: el.get("id") == "e2")
        assert error_condition(err) == "bad-request"
        result = await configure(a, ROOM, {"muc#roomconfig_allowpm": "none"})
        assert result.get("type") == "result"
        b.send_raw(f"<message to='{ROOM}/Alice' type='chat' id='e3'><body>x</body></message>")
        err = await rb.take(lambda el: el.get("id") == "e3" and el.get("type") == "error")
        assert error_condition(err) == "policy-violation"
        await close(a, b)


async def test_mediated_invitation_and_decline(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        c, rc = await muc_client(srv, "carol")
        await create(
            a,
            ra,
            ROOM,
            "Alice",
            {
                "muc#roomconfig_membersonly": "1",
                "muc#roomconfig_passwordprotectedroom": "1",
                "muc#roomconfig_roomsecret": "cauldron",
            },
        )
        a.send_raw(
            f"<message to='{ROOM}' id='inv1'><x xmlns='{ns.MUC_USER}'>"
            "<invite to='carol@localhost'><reason>Hey Carol</reason></invite></x></message>"
        )
        inv = await rc.take(lambda el: el.get("from") == ROOM and el.get("id") == "inv1")
        x = inv.find(f"{{{ns.MUC_USER}}}x")
        assert x is not None
        invite = x.find(f"{{{ns.MUC_USER}}}invite")
        assert invite is not None and invite.get("from") == "alice@localhost"
        assert invite.findtext(f"{{{ns.MUC_USER}}}reason") == "Hey Carol"
        assert x.findtext(f"{{{ns.MUC_USER}}}password") == "cauldron"
        # The owner's invitation made Carol a member of the members-only room.
        seq = await join(c, rc, ROOM, "Carol", password="cauldron")
        mine = item(seq[-2])
        assert mine is not None and mine.get("affiliation") == "member"
        c.send_raw(f"<presence to='{ROOM}/Carol' type='unavailable'/>")
        await rc.take(lambda el: el.get("type") == "unavailable")
        # Declining goes back through the room to the inviter.
        c.send_raw(
            f"<message to='{ROOM}' id='dec1'><x xmlns='{ns.MUC_USER}'>"
            "<decline to='alice@localhost/r'><reason>Too busy</reason></decline></x></message>"
        )
        dec = await ra.take(lambda el: el.get("id") == "dec1")
        decline = dec.find(f"{{{ns.MUC_USER}}}x/{{{ns.MUC_USER}}}decline")
        assert decline is not None and decline.get("from") == "carol@localhost"
        assert decline.findtext(f"{{{ns.MUC_USER}}}reason") == "Too busy"
        await close(a, c)


async def test_self_ping_and_ghost_removal(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        await create(a, ra, ROOM, "Alice")
        info = await send_iq(a, f"<query xmlns='{ns.DISCO_INFO}'/>", ROOM)
        features = {f.get("var") for f in info.iter(f"{{{ns.DISCO_INFO}}}feature")}
        assert ns.MUC_SELF_PING in features

        ping = f"<ping xmlns='{ns.PING}'/>"
        assert (await send_iq(a, ping, f"{ROOM}/Alice")).get("type") == "result"
        answer = await send_iq(b, ping, f"{ROOM}/Bob")
        assert error_condition(answer) == "not-acceptable"
        await join(b, rb, ROOM, "Bob")
        assert (await send_iq(b, ping, f"{ROOM}/Bob")).get("type") == "result"

        # A delivery error from Bob's client makes him a ghost: removed with 333.
        b.send_raw(
            f"<message to='{ROOM}/Alice' type='error' id='x1'><error type='cancel'>"
            f"<recipient-unavailable xmlns='{ns.STANZAS}'/></error></message>"
        )
        gone = await ra.take(
            lambda el: from_jid(f"{ROOM}/Bob")(el) and el.get("type") == "unavailable"
        )
        assert codes(gone) == {"333"}
        assert error_condition(await send_iq(b, ping, f"{ROOM}/Bob")) == "not-acceptable"

        # A client that vanished without a word: the server bounces the next group chat
        # message, and the room removes the ghost.
        c, rc = await muc_client(srv, "carol")
        await join(c, rc, ROOM, "Carol")
        session = srv.server.sessions.get(JID.parse("carol@localhost/r"))
        assert session is not None
        srv.server.sessions.remove(session)
        send_groupchat(a, ROOM, "anyone there?")
        gone = await ra.take(
            lambda el: from_jid(f"{ROOM}/Carol")(el) and el.get("type") == "unavailable"
        )
        assert codes(gone) == {"333"}
        await close(a, b, c)
