"""Group chat service, end to end: roles, affiliations and destruction (XEP-0045 §8-10)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from minimix.protocol import ns
from tests.e2e.muc_helpers import (
    SERVICE,
    Recorder,
    admin_item,
    close,
    codes,
    configure,
    create,
    error_condition,
    from_jid,
    item,
    join,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.support import running_server

ROOM = f"coven@{SERVICE}"
NO_AUTO_JOIN = {"enabled": False}


def _gone(nick: str) -> object:
    return lambda el: from_jid(f"{ROOM}/{nick}")(el) and el.get("type") == "unavailable"


async def _removed(rec: Recorder, nick: str) -> ET.Element:
    return await rec.take(_gone(nick))  # type: ignore[arg-type]


async def test_kick_and_ban_reach_everyone_with_their_codes(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        c, rc = await muc_client(srv, "carol")
        await create(a, ra, ROOM, "Alice")
        await join(b, rb, ROOM, "Bob")
        await join(c, rc, ROOM, "Carol")

        # A participant may not kick.
        denied = await send_iq(b, admin_item(nick="Carol", role="none"), ROOM, "set")
        assert error_condition(denied) == "forbidden"
        # Kick (307) with actor and reason; 110 only for the kicked.
        result = await send_iq(
            a, admin_item(nick="Carol", role="none", reason="Avaunt"), ROOM, "set"
        )
        assert result.get("type") == "result"
        mine = await _removed(rc, "Carol")
        assert codes(mine) == {"110", "307"}
        it = item(mine)
        assert it is not None and it.get("role") == "none"
        assert it.findtext(f"{{{ns.MUC_USER}}}reason") == "Avaunt"
        actor = it.find(f"{{{ns.MUC_USER}}}actor")
        assert actor is not None and actor.get("nick") == "Alice"
        for rec in (ra, rb):
            assert codes(await _removed(rec, "Carol")) == {"307"}

        # Ban (301) by bare JID.
        ban = admin_item(affiliation="outcast", jid="bob@localhost", reason="Treason")
        assert (await send_iq(a, ban, ROOM, "set")).get("type") == "result"
        mine = await _removed(rb, "Bob")
        assert codes(mine) == {"110", "301"}
        bob_item = item(mine)
        assert bob_item is not None and bob_item.get("affiliation") == "outcast"
        assert codes(await _removed(ra, "Bob")) == {"301"}
        listing = await send_iq(a, admin_item(affiliation="outcast"), ROOM, "get")
        items = listing.findall(f".//{{{ns.MUC_ADMIN}}}item")
        assert [(i.get("jid"), i.get("affiliation")) for i in items] == [
            ("bob@localhost", "outcast")
        ]
        seq = await join(b, rb, ROOM, "Bob")
        assert error_condition(seq[-1]) == "forbidden"
        # Lifting the ban lets him back in.
        lift = admin_item(affiliation="none", jid="bob@localhost")
        assert (await send_iq(a, lift, ROOM, "set")).get("type") == "result"
        seq = await join(b, rb, ROOM, "Bob")
        assert "110" in codes(seq[-2])
        # Owners may not ban themselves.
        self_ban = admin_item(affiliation="outcast", jid="alice@localhost")
        assert error_condition(await send_iq(a, self_ban, ROOM, "set")) == "conflict"
        await close(a, b, c)


async def test_voice_moderators_and_affiliations(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        await create(a, ra, ROOM, "Alice", {"muc#roomconfig_moderatedroom": "1"})
        seq = await join(b, rb, ROOM, "Bob")
        bob = item(seq[-2])
        assert bob is not None and bob.get("role") == "visitor"
        b.send_raw(f"<message to='{ROOM}' type='groupchat' id='v'><body>hi</body></message>")
        err = await rb.take(lambda el: el.get("id") == "v" and el.get("type") == "error")
        assert error_condition(err) == "forbidden"

        # Grant voice: everyone sees Bob become a participant.
        voice = admin_item(nick="Bob", role="participant")
        assert (await send_iq(a, voice, ROOM, "set")).get("type") == "result"
        for rec in (ra, rb):
            p = await rec.take(
                lambda el: (
                    from_jid(f"{ROOM}/Bob")(el)
                    and (item(el) or ET.Element("x")).get("role") == "participant"
                )
            )
            assert p.get("type") is None
        # Membership, then admin: Bob becomes a moderator and may see the member list.
        member = admin_item(affiliation="member", jid="bob@localhost", nick="Bob")
        assert (await send_iq(a, member, ROOM, "set")).get("type") == "result"
        p = await rb.take(lambda el: (item(el) or ET.Element("x")).get("affiliation") == "member")
        assert "110" in codes(p)
        admin = admin_item(affiliation="admin", jid="bob@localhost")
        assert (await send_iq(a, admin, ROOM, "set")).get("type") == "result"
        p = await ra.take(lambda el: (item(el) or ET.Element("x")).get("affiliation") == "admin")
        it = item(p)
        assert it is not None and it.get("role") == "moderator"
        listing = await send_iq(b, admin_item(affiliation="owner"), ROOM, "get")
        owners = [i.get("jid") for i in listing.iter(f"{{{ns.MUC_ADMIN}}}item")]
        assert owners == ["alice@localhost"]
        # An admin may not touch an owner.
        demote = admin_item(affiliation="member", jid="alice@localhost")
        assert error_condition(await send_iq(b, demote, ROOM, "set")) == "not-allowed"
        # The only owner cannot step down.
        step_down = admin_item(affiliation="admin", jid="alice@localhost")
        assert error_condition(await send_iq(a, step_down, ROOM, "set")) == "conflict"
        await close(a, b)


async def test_members_only_removals_321_and_322(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        c, rc = await muc_client(srv, "carol")
        await create(a, ra, ROOM, "Alice")
        member = admin_item(affiliation="member", jid="bob@localhost")
        assert (await send_iq(a, member, ROOM, "set")).get("type") == "result"
        await join(b, rb, ROOM, "Bob")
        await join(c, rc, ROOM, "Carol")

        # The room becomes members-only: Carol (no affiliation) is removed with 322.
        result = await configure(a, ROOM, {"muc#roomconfig_membersonly": "1"})
        assert result.get("type") == "result"
        assert codes(await _removed(rc, "Carol")) == {"110", "322"}
        assert codes(await _removed(rb, "Carol")) == {"322"}
        notice = await rb.take(lambda el: el.get("from") == ROOM and "104" in codes(el))
        assert notice.get("type") == "groupchat"
        # Bob's membership is revoked: removed with 321.
        revoke = admin_item(affiliation="none", jid="bob@localhost")
        assert (await send_iq(a, revoke, ROOM, "set")).get("type") == "result"
        assert codes(await _removed(rb, "Bob")) == {"110", "321"}
        assert codes(await _removed(ra, "Bob")) == {"321"}
        await close(a, b, c)


async def test_destroy_with_reason_and_alternate_venue(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        await create(a, ra, ROOM, "Alice", {"muc#roomconfig_persistentroom": "1"})
        await join(b, rb, ROOM, "Bob")
        destroy = (
            f"<query xmlns='{ns.MUC_OWNER}'><destroy jid='heath@{SERVICE}'>"
            "<reason>Macbeth doth come.</reason></destroy></query>"
        )
        assert error_condition(await send_iq(b, destroy, ROOM, "set")) == "forbidden"
        assert (await send_iq(a, destroy, ROOM, "set")).get("type") == "result"
        for rec, nick in ((ra, "Alice"), (rb, "Bob")):
            gone = await _removed(rec, nick)
            d = gone.find(f"{{{ns.MUC_USER}}}x/{{{ns.MUC_USER}}}destroy")
            assert d is not None and d.get("jid") == f"heath@{SERVICE}"
            assert d.findtext(f"{{{ns.MUC_USER}}}reason") == "Macbeth doth come."
        # One unavailable per occupant, no broadcast of the others' departures.
        await rb.settle()
        assert not rb.pending(_gone("Alice"))  # type: ignore[arg-type]
        info = await send_iq(b, f"<query xmlns='{ns.DISCO_INFO}'/>", ROOM)
        assert error_condition(info) == "item-not-found"
        assert "coven" not in {r.room for r in srv.server.muc.store.rooms()}
        await close(a, b)
