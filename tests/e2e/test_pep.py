"""XEP-0163: notifications reach only the clients that asked, access models hold, options bind."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.account_data_helpers import (
    EVENT,
    MOOD,
    OWNER,
    PEP_PLUGINS,
    PUBSUB,
    app_error,
    close,
    error_condition,
    events,
    friends,
    iq_xml,
    item_ids,
    items,
    mood,
    option,
    pep_client,
    publish,
    settle,
)
from tests.support import Client, connect, running_server


async def test_notifications_reach_only_clients_that_asked(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob, carol = srv.add_user("alice"), srv.add_user("bob"), srv.add_user("carol")
        friends(srv, "alice", "bob")
        phone = await pep_client(srv, f"{alice}/phone", MOOD)
        laptop = await pep_client(srv, f"{alice}/laptop")
        desk = await pep_client(srv, f"{bob}/desk", MOOD)
        tablet = await pep_client(srv, f"{bob}/tablet", "urn:example:other")
        stranger = await pep_client(srv, f"{carol}/desk", MOOD)
        got = {c: events(c) for c in (phone, laptop, desk, tablet, stranger)}

        result = await publish(phone, MOOD, mood("happy"), item_id="current")
        published = result.find(f"{{{PUBSUB}}}publish/{{{PUBSUB}}}item")
        assert published is not None and published.get("id") == "current"
        (on_phone,) = await got[phone].wait(1)
        (on_desk,) = await got[desk].wait(1)
        for ev in (on_phone, on_desk):
            assert ev.get("from") == alice and ev.get("type") == "headline"
            item = ev.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item")
            assert item is not None and item.get("id") == "current"
            assert item.findtext(f"{{{MOOD}}}mood") == "happy"
        await settle(phone, laptop, desk, tablet, stranger)
        assert got[laptop].items == [] and got[tablet].items == []
        assert got[stranger].items == []  # not a contact: the presence access model
        # Bob can read the node, Carol cannot.
        assert item_ids(await items(desk, alice, MOOD)) == ["current"]
        refused = await items(stranger, alice, MOOD)
        assert error_condition(refused) == "not-authorized"
        assert app_error(refused) == "presence-subscription-required"
        await close(phone, laptop, desk, tablet, stranger)


async def test_last_item_reaches_a_client_when_it_comes_online(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        friends(srv, "alice", "bob")
        phone = await pep_client(srv, f"{alice}/phone")
        await publish(phone, MOOD, mood("calm"))
        await publish(phone, MOOD, mood("sleepy"))
        c = await connect(srv, f"{bob}/new", plugins=PEP_PLUGINS, presence=False)
        got = events(c)
        c.plugin["xep_0163"].add_interest(MOOD)
        await c.plugin["xep_0115"].update_caps(broadcast=False)
        c.send_presence()
        (ev,) = await got.wait(1)
        assert ev.findtext(f".//{{{MOOD}}}mood") == "sleepy"
        # Alice's own new client gets it too.
        own = await connect(srv, f"{alice}/tablet", plugins=PEP_PLUGINS, presence=False)
        own_got = events(own)
        own.plugin["xep_0163"].add_interest(MOOD)
        await own.plugin["xep_0115"].update_caps(broadcast=False)
        own.send_presence()
        (mine,) = await own_got.wait(1)
        assert mine.findtext(f".//{{{MOOD}}}mood") == "sleepy"
        await settle(c, own)
        assert len(got.items) == 1 and len(own_got.items) == 1  # once, not per presence
        c.send_presence(pstatus="still here")
        await settle(c, phone)
        assert len(got.items) == 1
        await close(phone, c, own)


async def test_access_models_and_publish_options(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob, carol = srv.add_user("alice"), srv.add_user("bob"), srv.add_user("carol")
        friends(srv, "alice", "bob")
        a = await pep_client(srv, f"{alice}/phone")
        b = await pep_client(srv, f"{bob}/desk")
        c = await pep_client(srv, f"{carol}/desk", "urn:example:open")

        await publish(
            a,
            "urn:example:open",
            "<x xmlns='urn:example:open'/>",
            "1",
            option("access_model", "open"),
        )
        assert item_ids(await items(c, alice, "urn:example:open")) == ["1"]

        await publish(
            a,
            "urn:example:secret",
            "<x xmlns='urn:example:secret'/>",
            "s",
            option("access_model", "whitelist") + option("max_items", "max"),
        )
        refused = await items(b, alice, "urn:example:secret")
        assert error_condition(refused) == "not-allowed" and app_error(refused) == "closed-node"
        assert item_ids(await items(a, alice, "urn:example:secret")) == ["s"]
        await iq_xml(
            a,
            "set",
            f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:secret'>"
            f"<affiliation jid='{bob}' affiliation='member'/></affiliations></pubsub>",
        )
        assert item_ids(await items(b, alice, "urn:example:secret")) == ["s"]
        affs = await iq_xml(
            a,
            "get",
            f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:secret'/></pubsub>",
        )
        assert {
            x.get("jid"): x.get("affiliation") for x in affs.iter(f"{{{OWNER}}}affiliation")
        } == {
            alice: "owner",
            bob: "member",
        }

        # publish-options must match an existing node's configuration
        clash = await publish(
            a,
            "urn:example:secret",
            "<x xmlns='urn:example:secret'/>",
            "t",
            option("access_model", "open"),
        )
        assert error_condition(clash) == "conflict" and app_error(clash) == "precondition-not-met"
        # ...unless the owner reconfigures it first
        form = await iq_xml(
            a, "get", f"<pubsub xmlns='{OWNER}'><configure node='urn:example:secret'/></pubsub>"
        )
        fields = {
            f.get("var"): f.findtext("{jabber:x:data}value")
            for f in form.iter("{jabber:x:data}field")
        }
        assert fields["pubsub#access_model"] == "whitelist" and fields["pubsub#max_items"] == "max"
        await iq_xml(
            a,
            "set",
            f"<pubsub xmlns='{OWNER}'><configure node='urn:example:secret'>"
            "<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>"
            f"{option('access_model', 'open')}</x></configure></pubsub>",
        )
        ok = await publish(
            a,
            "urn:example:secret",
            "<x xmlns='urn:example:secret'/>",
            "t",
            option("access_model", "open"),
        )
        assert ok.tag == f"{{{PUBSUB}}}pubsub"
        assert item_ids(await items(c, alice, "urn:example:secret")) == ["s", "t"]

        # only the owner publishes; a bad publish is refused
        foreign = await publish(b, "urn:example:open", "<x xmlns='urn:example:open'/>", to=alice)
        assert error_condition(foreign) == "forbidden"
        assert app_error(foreign) == "publisher-forbidden"
        empty = await iq_xml(
            a, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='n'><item/></publish></pubsub>"
        )
        assert error_condition(empty) == "bad-request" and app_error(empty) == "payload-required"
        await close(a, b, c)


async def test_max_items_retract_purge_delete(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        a = await pep_client(srv, f"{alice}/phone", "urn:example:log")
        got = events(a)
        for i in range(3):
            await publish(
                a,
                "urn:example:log",
                f"<e xmlns='urn:example:log'>{i}</e>",
                f"i{i}",
                option("max_items", "2"),
            )
        assert item_ids(await items(a, alice, "urn:example:log")) == ["i1", "i2"]
        assert item_ids(await items(a, alice, "urn:example:log", " max_items='1'")) == ["i2"]
        await got.wait(3)
        await iq_xml(
            a,
            "set",
            f"<pubsub xmlns='{PUBSUB}'><retract node='urn:example:log' notify='true'>"
            "<item id='i1'/></retract></pubsub>",
        )
        retract = (await got.wait(4))[3]
        assert retract.find(f".//{{{EVENT}}}retract").get("id") == "i1"  # type: ignore[union-attr]
        missing = await iq_xml(
            a,
            "set",
            f"<pubsub xmlns='{PUBSUB}'><retract node='urn:example:log'><item id='nope'/>"
            "</retract></pubsub>",
        )
        assert error_condition(missing) == "item-not-found"
        await iq_xml(a, "set", f"<pubsub xmlns='{OWNER}'><purge node='urn:example:log'/></pubsub>")
        purge = (await got.wait(5))[4]
        assert purge.find(f".//{{{EVENT}}}purge") is not None
        assert item_ids(await items(a, alice, "urn:example:log")) == []
        await iq_xml(a, "set", f"<pubsub xmlns='{OWNER}'><delete node='urn:example:log'/></pubsub>")
        deleted = (await got.wait(6))[5]
        assert deleted.find(f".//{{{EVENT}}}delete") is not None
        gone = await items(a, alice, "urn:example:log")
        assert error_condition(gone) == "item-not-found"
        await close(a)


async def test_discovery_on_the_account(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob, carol = srv.add_user("alice"), srv.add_user("bob"), srv.add_user("carol")
        friends(srv, "alice", "bob")
        a = await pep_client(srv, f"{alice}/phone")
        b = await pep_client(srv, f"{bob}/desk")
        c = await pep_client(srv, f"{carol}/desk")
        await publish(a, MOOD, mood("ok"))
        await publish(
            a,
            "urn:example:private",
            "<p xmlns='urn:example:private'/>",
            "x",
            option("access_model", "whitelist"),
        )
        info = await iq_xml(
            a, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=alice
        )
        identities = {(i.get("category"), i.get("type")) for i in info.findall("{*}identity")}
        assert ("pubsub", "pep") in identities and ("account", "registered") in identities
        features = {f.get("var") for f in info.findall("{*}feature")}
        assert {
            f"{PUBSUB}#publish",
            f"{PUBSUB}#publish-options",
            f"{PUBSUB}#access-whitelist",
        } <= features

        async def nodes(client: Client) -> set[str]:
            res = await iq_xml(
                client, "get", "<query xmlns='http://jabber.org/protocol/disco#items'/>", to=alice
            )
            return {i.get("node", "") for i in res.findall("{*}item")}

        assert await nodes(a) == {MOOD, "urn:example:private"}
        assert await nodes(b) == {MOOD}
        assert await nodes(c) == set()
        await close(a, b, c)
