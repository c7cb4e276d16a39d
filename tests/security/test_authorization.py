"""Authorization boundaries, one test each: an authenticated account cannot read or change
another account's data, nor speak as anyone else. Each checks the error the offender gets, that
the victim's data is unchanged, and that well-behaved clients are unaffected."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

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
from tests.security.rooms import archive_missing, pep_missing, private_missing
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
