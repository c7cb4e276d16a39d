"""Authorization boundaries, one test each: an authenticated account cannot read or change
another account's data, nor speak as anyone else. Each checks the error the offender gets, that
the victim's data is unchanged, and that well-behaved clients are unaffected."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.security.hostile import (
    CLIENT,
    SASL_NS,
    Peer,
    assert_unaffected,
    condition_of,
    hang_up,
    neighbours,
    sasl_condition,
)
from tests.security.rooms import (
    MUC_ADMIN_NS,
    MUC_OWNER_NS,
    account_join_missing,
    archive_missing,
    join_room,
    muc_missing,
    pep_missing,
    private_missing,
)
from tests.support import Running, running_server

ROSTER = "jabber:iq:roster"
BLOCKING = "urn:xmpp:blocking"
VCARD = "vcard-temp"
MAM = "urn:xmpp:mam:2"
PRIVATE = "jabber:iq:private"
PUBSUB = "http://jabber.org/protocol/pubsub"


async def offender(srv: Running, name: str = "mallory") -> Peer:
    srv.add_user(name)
    return await Peer().login(srv, name)


async def refused(peer: Peer, xml: str) -> str:
    """Send an iq; it must come back as an error; return its condition."""
    reply = await peer.iq(xml)
    assert reply.get("type") == "error", ET.tostring(reply, encoding="unicode")
    return condition_of(reply)


async def bob(srv: Running) -> Peer:
    """A raw client for the victim account (bob, created by ``neighbours``)."""
    return await Peer().login(srv, "bob", resource="raw")


async def test_cannot_read_or_write_another_accounts_roster(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        victim = await bob(srv)
        ok = await victim.iq(
            f"<iq type='set'><query xmlns='{ROSTER}'>"
            "<item jid='alice@localhost' name='Secret Al'/></query></iq>"
        )
        assert ok.get("type") == "result"
        m = await offender(srv)
        attempts = [
            f"<iq type='get' to='bob@localhost'><query xmlns='{ROSTER}'/></iq>",
            f"<iq type='set' to='bob@localhost'><query xmlns='{ROSTER}'>"
            "<item jid='mallory@localhost' name='trusted'/></query></iq>",
            f"<iq type='set' to='bob@localhost'><query xmlns='{ROSTER}'>"
            "<item jid='alice@localhost' subscription='remove'/></query></iq>",
        ]
        for xml in attempts:
            assert await refused(m, xml) == "forbidden"
        assert b"Secret Al" not in m.received
        items = srv.server.roster_store.items("bob")
        assert [(i.contact, i.name) for i in items] == [("alice@localhost", "Secret Al")]
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_cannot_read_or_write_another_accounts_block_list(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        victim = await bob(srv)
        blocked = await victim.iq(
            f"<iq type='set'><block xmlns='{BLOCKING}'><item jid='spammer@example.org'/></block>"
            "</iq>"
        )
        assert blocked.get("type") == "result"
        m = await offender(srv)
        assert (
            await refused(
                m, f"<iq type='get' to='bob@localhost'><blocklist xmlns='{BLOCKING}'/></iq>"
            )
            == "forbidden"
        )
        assert (
            await refused(
                m,
                f"<iq type='set' to='bob@localhost'><block xmlns='{BLOCKING}'>"
                "<item jid='alice@localhost'/></block></iq>",
            )
            == "forbidden"
        )
        assert (
            await refused(
                m, f"<iq type='set' to='bob@localhost'><unblock xmlns='{BLOCKING}'/></iq>"
            )
            == "forbidden"
        )
        assert b"spammer" not in m.received
        mine = await victim.iq(f"<iq type='get'><blocklist xmlns='{BLOCKING}'/></iq>")
        assert [i.get("jid") for i in mine.iter(f"{{{BLOCKING}}}item")] == ["spammer@example.org"]
        await assert_unaffected(a, b)  # bob still hears alice: she was not blocked for him
        await hang_up(a, b)


async def test_cannot_write_another_accounts_vcard(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        victim = await bob(srv)
        assert (
            await victim.iq(f"<iq type='set'><vCard xmlns='{VCARD}'><FN>Bob</FN></vCard></iq>")
        ).get("type") == "result"
        m = await offender(srv)
        assert (
            await refused(
                m,
                f"<iq type='set' to='bob@localhost'><vCard xmlns='{VCARD}'><FN>Bob is a fool</FN>"
                "</vCard></iq>",
            )
            == "forbidden"
        )
        # Reading a vCard is public (XEP-0054); it is still Bob's own.
        card = await m.iq(f"<iq type='get' to='bob@localhost'><vCard xmlns='{VCARD}'/></iq>")
        assert card.findtext(f"{{{VCARD}}}vCard/{{{VCARD}}}FN") == "Bob"
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.parametrize(
    "claimed",
    ["bob@localhost/good", "bob@localhost", "localhost", "mallory@localhost/other-device"],
)
async def test_cannot_send_as_another_jid(tmp_path: Path, claimed: str) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        m = await offender(srv)
        m.send(
            f"<message from='{claimed}' to='alice@localhost/good' type='chat'>"
            "<body>I am someone else</body></message>"
        )
        assert await m.stream_error() == "invalid-from"
        assert await m.closed()
        assert a.messages.empty()
        # Its own full or bare JID is accepted and stamped as the full JID.
        honest = await Peer().login(srv, "mallory", resource="honest")
        honest.send(
            "<message from='mallory@localhost' to='alice@localhost/good' type='chat'>"
            "<body>just me</body></message>"
        )
        msg = await a.next_message()
        assert msg["body"] == "just me"
        assert str(msg["from"]) == "mallory@localhost/honest"
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_cannot_send_stanzas_before_authenticating(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        anonymous = await Peer().secure(srv.port, srv.ca)
        anonymous.send("<message to='alice@localhost/good'><body>anonymous</body></message>")
        assert await anonymous.stream_error() == "not-authorized"
        # Authenticated but not bound is not enough either.
        srv.add_user("mallory")
        unbound = await Peer().secure(srv.port, srv.ca)
        assert (await unbound.auth_plain("mallory", "secret")).tag == f"{{{SASL_NS}}}success"
        await unbound.start()
        unbound.send("<message to='alice@localhost/good'><body>unbound</body></message>")
        assert await unbound.stream_error() == "not-authorized"
        assert a.messages.empty()
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_unknown_and_wrong_password_look_the_same(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        answers = []
        for user in ("bob", "nobody-here"):
            p = await Peer().secure(srv.port, srv.ca)
            failure = await p.auth_plain(user, "wrong password")
            assert sasl_condition(failure) == "not-authorized"
            answers.append(ET.tostring(failure))
            p.close()
        assert answers[0] == answers[1]
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.skipif(archive_missing(), reason="the message archive is not wired yet")
async def test_cannot_read_another_accounts_archive(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        a.send_message(mto=b.boundjid.full, mbody="archived secret", mtype="chat")
        assert (await b.next_message())["body"] == "archived secret"
        m = await offender(srv)
        for xml in (
            f"<iq type='set' to='bob@localhost'><query xmlns='{MAM}' queryid='x'/></iq>",
            f"<iq type='get' to='bob@localhost'><query xmlns='{MAM}'/></iq>",
            f"<iq type='get' to='bob@localhost'><metadata xmlns='{MAM}'/></iq>",
            f"<iq type='get' to='bob@localhost'><prefs xmlns='{MAM}'/></iq>",
            f"<iq type='set' to='bob@localhost'><prefs xmlns='{MAM}' default='never'/></iq>",
        ):
            assert await refused(m, xml) == "forbidden"
        assert b"archived secret" not in m.received
        # Bob's own archive still holds it, and his preferences did not change.
        victim = await bob(srv)
        victim.send(f"<iq type='set' id='own'><query xmlns='{MAM}' queryid='mine'/></iq>")
        bodies = []
        while True:
            el = await victim.recv()
            if el.tag == f"{{{CLIENT}}}iq" and el.get("id") == "own":
                assert el.get("type") == "result"
                break
            bodies += [t.text for t in el.iter(f"{{{CLIENT}}}body")]
        assert "archived secret" in bodies
        prefs = await victim.iq(f"<iq type='get'><prefs xmlns='{MAM}'/></iq>")
        assert prefs.find(f"{{{MAM}}}prefs").get("default") != "never"  # type: ignore[union-attr]
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.skipif(private_missing(), reason="private XML storage is not wired yet")
async def test_cannot_read_or_write_another_accounts_private_storage(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        victim = await bob(srv)
        stored = await victim.iq(
            f"<iq type='set'><query xmlns='{PRIVATE}'>"
            "<secret xmlns='urn:example:private'>s3cr3t</secret></query></iq>"
        )
        assert stored.get("type") == "result"
        m = await offender(srv)
        assert (
            await refused(
                m,
                f"<iq type='get' to='bob@localhost'><query xmlns='{PRIVATE}'>"
                "<secret xmlns='urn:example:private'/></query></iq>",
            )
            == "forbidden"
        )
        assert (
            await refused(
                m,
                f"<iq type='set' to='bob@localhost'><query xmlns='{PRIVATE}'>"
                "<secret xmlns='urn:example:private'>overwritten</secret></query></iq>",
            )
            == "forbidden"
        )
        assert b"s3cr3t" not in m.received
        mine = await victim.iq(
            f"<iq type='get'><query xmlns='{PRIVATE}'><secret xmlns='urn:example:private'/>"
            "</query></iq>"
        )
        assert mine.findtext(".//{urn:example:private}secret") == "s3cr3t"
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.skipif(pep_missing(), reason="PEP is not wired yet")
async def test_cannot_read_whitelisted_pep_node(tmp_path: Path) -> None:
    node = "urn:example:secret"
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        victim = await bob(srv)
        published = await victim.iq(
            f"<iq type='set'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='current'>"
            f"<secret xmlns='{node}'>s3cr3t</secret></item></publish><publish-options>"
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            "<field var='pubsub#access_model'><value>whitelist</value></field></x>"
            "</publish-options></pubsub></iq>"
        )
        assert published.get("type") == "result", ET.tostring(published)
        m = await offender(srv)
        condition = await refused(
            m,
            f"<iq type='get' to='bob@localhost'><pubsub xmlns='{PUBSUB}'><items node='{node}'/>"
            "</pubsub></iq>",
        )
        assert condition in ("not-allowed", "forbidden", "not-authorized", "item-not-found")
        condition = await refused(
            m,
            f"<iq type='set' to='bob@localhost'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
            f"<item id='current'><secret xmlns='{node}'>replaced</secret></item></publish>"
            "</pubsub></iq>",
        )
        assert condition in ("forbidden", "not-allowed")
        assert b"s3cr3t" not in m.received
        mine = await victim.iq(
            f"<iq type='get'><pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub></iq>"
        )
        assert mine.findtext(f".//{{{node}}}secret") == "s3cr3t"
        await assert_unaffected(a, b)
        await hang_up(a, b)


# ---------------------------------------------------------------------- rooms


def room_overrides(path: str) -> dict[str, Any]:
    return {"account_join": {"enabled": False}} if path == "direct" else {}


async def owned_room(srv: Running, room: str, config: str = "") -> Peer:
    """The owner's client in a new room, configured with ``config`` form fields."""
    srv.add_user("owner")
    owner = await Peer().login(srv, "owner")
    await create_room(owner, room, "owner", config)
    return owner


async def create_room(owner: Peer, room: str, nick: str, config: str = "") -> None:
    joined = await join_room(owner, room, nick)
    assert joined.get("type") != "error", ET.tostring(joined)
    done = await owner.iq(
        f"<iq type='set' to='{room}'><query xmlns='{MUC_OWNER_NS}'>"
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
        "<value>http://jabber.org/protocol/muc#roomconfig</value></field>"
        f"{config}</x></query></iq>"
    )
    assert done.get("type") == "result", ET.tostring(done)


async def set_affiliation(owner: Peer, room: str, jid: str, affiliation: str) -> None:
    done = await owner.iq(
        f"<iq type='set' to='{room}'><query xmlns='{MUC_ADMIN_NS}'>"
        f"<item affiliation='{affiliation}' jid='{jid}'/></query></iq>"
    )
    assert done.get("type") == "result", ET.tostring(done)


async def cannot_talk(m: Peer, owner: Peer, room: str) -> None:
    """A groupchat message from outside the room is refused and reaches no occupant."""
    m.send(f"<message to='{room}' type='groupchat' id='sneak'><body>sneaked in</body></message>")
    err = await m.recv_until(lambda el: el.get("id") == "sneak")
    assert err.get("type") == "error"
    owner.send(f"<message to='{room}' type='groupchat'><body>owner speaks</body></message>")
    await owner.recv_until(lambda el: el.findtext(f"{{{CLIENT}}}body") == "owner speaks")
    assert b"sneaked in" not in owner.received


@pytest.mark.skipif(muc_missing(), reason="the group chat service is not wired yet")
@pytest.mark.parametrize("path", ["account-join", "direct"])
async def test_banned_account_cannot_enter_room(tmp_path: Path, path: str) -> None:
    async with running_server(tmp_path, **room_overrides(path)) as srv:
        a, b = await neighbours(srv)
        room = f"guarded@{srv.server.config.muc.domain}"
        owner = await owned_room(srv, room)
        await set_affiliation(owner, room, "mallory@localhost", "outcast")
        m = await offender(srv)
        refused = await join_room(m, room, "innocent")
        assert refused.get("type") == "error"
        assert condition_of(refused) == "forbidden"
        # A second client of the banned account fares no better.
        second = await Peer().login(srv, "mallory", resource="second")
        assert condition_of(await join_room(second, room, "other")) == "forbidden"
        await cannot_talk(m, owner, room)
        assert b"innocent" not in owner.received
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.skipif(muc_missing(), reason="the group chat service is not wired yet")
@pytest.mark.parametrize("path", ["account-join", "direct"])
async def test_non_member_cannot_enter_members_only_room(tmp_path: Path, path: str) -> None:
    members_only = "<field var='muc#roomconfig_membersonly'><value>1</value></field>"
    async with running_server(tmp_path, **room_overrides(path)) as srv:
        a, b = await neighbours(srv)
        room = f"club@{srv.server.config.muc.domain}"
        owner = await owned_room(srv, room, members_only)
        m = await offender(srv)
        refused = await join_room(m, room, "gatecrasher")
        assert refused.get("type") == "error"
        assert condition_of(refused) == "registration-required"
        await cannot_talk(m, owner, room)
        # Membership is what opens the door: a member gets in.
        await set_affiliation(owner, room, "bob@localhost", "member")
        member = await bob(srv)
        assert (await join_room(member, room, "bob")).get("type") != "error"
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.skipif(muc_missing() or account_join_missing(), reason="account-join is not wired yet")
async def test_attached_clients_never_receive_another_accounts_room_traffic(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        service = srv.server.config.muc.domain
        shared, private = f"shared@{service}", f"private@{service}"
        for name in ("carol", "dave"):
            srv.add_user(name)
        # Alice's two clients are attached to her occupancy of the shared room.
        a1 = await Peer().login(srv, "alice", resource="one")
        a2 = await Peer().login(srv, "alice", resource="two")
        await create_room(a1, shared, "alice")
        assert (await join_room(a2, shared, "alice")).get("type") != "error"
        # Bob is in the shared room and in a room Alice is not in.
        b1 = await Peer().login(srv, "bob", resource="one")
        assert (await join_room(b1, shared, "bob")).get("type") != "error"
        await create_room(b1, private, "bob")
        carol = await Peer().login(srv, "carol")
        assert (await join_room(carol, private, "carol")).get("type") != "error"
        assert (await join_room(carol, shared, "carol")).get("type") != "error"
        # An attempt to attach to Bob's occupancy under his nick is not an attachment.
        dave = await Peer().login(srv, "dave")
        taken = await join_room(dave, shared, "bob")
        assert taken.get("type") == "error" and condition_of(taken) == "conflict"

        carol.send(f"<message to='{private}' type='groupchat'><body>room2-only</body></message>")
        carol.send(f"<message to='{shared}/bob' type='chat'><body>pm-for-bob</body></message>")
        carol.send(f"<message to='{shared}' type='groupchat'><body>for-everyone</body></message>")
        for body in ("room2-only", "pm-for-bob", "for-everyone"):
            await b1.recv_until(lambda el, body=body: el.findtext(f"{{{CLIENT}}}body") == body)
        for client in (a1, a2):
            await client.recv_until(lambda el: el.findtext(f"{{{CLIENT}}}body") == "for-everyone")
        for outsider in (a1, a2, dave):
            assert b"room2-only" not in outsider.received
            assert b"pm-for-bob" not in outsider.received
        assert b"for-everyone" not in dave.received
        await assert_unaffected(a, b)
        await hang_up(a, b)
