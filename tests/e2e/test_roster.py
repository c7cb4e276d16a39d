"""Rosters (RFC 6121 §2-3): get/set/remove, pushes, versioning, and the subscription state
machine including pre-approval, driven by the raw client so every stanza is visible."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.e2e.raw_client import CLIENT, RawClient, error_condition
from tests.support import Running, running_server

R = "jabber:iq:roster"


async def online(srv: Running, user: str, resource: str = "raw") -> RawClient:
    """Logged in, roster requested (so it gets pushes), initial presence sent."""
    c = await RawClient().login(srv.port, user, ca=srv.ca, resource=resource)
    await c.iq(f"<iq type='get'><query xmlns='{R}'/></iq>")
    c.send_raw("<presence/>")
    await c.next("presence")  # our own presence, reflected
    return c


async def roster(c: RawClient) -> dict[str, ET.Element]:
    reply = await c.iq(f"<iq type='get'><query xmlns='{R}'/></iq>")
    q = reply.find(f"{{{R}}}query")
    assert q is not None
    return {i.get("jid", ""): i for i in q}


def state(items: dict[str, ET.Element], jid: str) -> tuple[str, str | None, str | None]:
    item = items.get(jid)
    if item is None:
        return ("absent", None, None)
    return (item.get("subscription", ""), item.get("ask"), item.get("approved"))


def is_push(el: ET.Element) -> bool:
    return el.get("type") == "set" and el.find(f"{{{R}}}query") is not None


async def push(c: RawClient) -> ET.Element:
    """The next roster push (with its version copied onto the item); answers it."""
    iq = await c.wait_for(is_push)
    assert iq.get("from") in (None, c.jid.split("/")[0])
    c.send_raw(f"<iq type='result' id='{iq.get('id')}'/>")
    q = iq.find(f"{{{R}}}query")
    assert q is not None
    item = q.find(f"{{{R}}}item")
    assert item is not None
    item.set("ver", q.get("ver", ""))
    return item


async def presence_of_type(c: RawClient, ptype: str | None, frm: str) -> ET.Element:
    def match(el: ET.Element) -> bool:
        return (
            el.tag == f"{{{CLIENT}}}presence"
            and el.get("type") == ptype
            and (el.get("from") or "").startswith(frm)
        )

    return await c.wait_for(match)


async def test_roster_set_get_remove_and_pushes_to_every_interested_client(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        a1 = await online(srv, "alice", "one")
        a2 = await online(srv, "alice", "two")
        reply = await a1.iq(
            f"<iq type='set'><query xmlns='{R}'><item jid='Bob@LocalHost' name='Bobby'>"
            "<group>Friends</group><group>Work</group></item></query></iq>"
        )
        assert reply.get("type") == "result"
        for c in (a1, a2):
            item = await push(c)
            assert item.get("jid") == "bob@localhost"  # prepared
            assert item.get("subscription") == "none"
            assert item.get("name") == "Bobby"
            assert sorted(g.text or "" for g in item) == ["Friends", "Work"]
        items = await roster(a2)
        assert state(items, "bob@localhost") == ("none", None, None)
        # Update: the name goes, one group stays.
        await a2.iq(
            f"<iq type='set'><query xmlns='{R}'><item jid='bob@localhost'>"
            "<group>Work</group></item></query></iq>"
        )
        item = await push(a1)
        assert item.get("name") is None and [g.text for g in item] == ["Work"]
        await push(a2)
        # Remove.
        reply = await a1.iq(
            f"<iq type='set'><query xmlns='{R}'><item jid='bob@localhost' "
            "subscription='remove'/></query></iq>"
        )
        assert reply.get("type") == "result"
        for c in (a1, a2):
            item = await push(c)
            assert item.get("subscription") == "remove"
        assert "bob@localhost" not in await roster(a1)
        # Removing what is not there.
        reply = await a1.iq(
            f"<iq type='set'><query xmlns='{R}'><item jid='nobody@localhost' "
            "subscription='remove'/></query></iq>"
        )
        assert error_condition(reply) == "item-not-found"
        a1.close()
        a2.close()


async def test_roster_set_refuses_bad_requests(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        a = await online(srv, "alice")
        bad = [
            (f"<query xmlns='{R}'/>", "bad-request"),
            (f"<query xmlns='{R}'><item jid='a@localhost'/><item jid='b@localhost'/></query>",
             "bad-request"),
            (f"<query xmlns='{R}'><item jid='a@@x'/></query>", "jid-malformed"),
            (f"<query xmlns='{R}'><item jid='a@localhost'><group>g</group><group>g</group>"
             "</item></query>", "bad-request"),
            (f"<query xmlns='{R}'><item jid='alice@localhost'/></query>", "not-allowed"),
        ]  # fmt: skip
        for payload, condition in bad:
            reply = await a.iq(f"<iq type='set'>{payload}</iq>")
            assert error_condition(reply) == condition, payload
        # Someone else's roster is not yours.
        srv.add_user("bob")
        reply = await a.iq(f"<iq type='get' to='bob@localhost'><query xmlns='{R}'/></iq>")
        assert error_condition(reply) == "forbidden"
        a.close()


async def test_roster_versioning(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        a = await online(srv, "alice")
        reply = await a.iq(f"<iq type='get'><query xmlns='{R}' ver=''/></iq>")
        q = reply.find(f"{{{R}}}query")
        assert q is not None
        v0 = q.get("ver")
        assert v0 is not None
        # Same version: an empty result (RFC 6121 §2.6.3).
        reply = await a.iq(f"<iq type='get'><query xmlns='{R}' ver='{v0}'/></iq>")
        assert reply.get("type") == "result" and len(reply) == 0
        await a.iq(f"<iq type='set'><query xmlns='{R}'><item jid='bob@localhost'/></query></iq>")
        item = await push(a)
        v1 = item.get("ver")
        assert v1 and v1 != v0
        reply = await a.iq(f"<iq type='get'><query xmlns='{R}' ver='{v0}'/></iq>")
        q = reply.find(f"{{{R}}}query")
        assert q is not None and q.get("ver") == v1
        assert [i.get("jid") for i in q] == ["bob@localhost"]
        reply = await a.iq(f"<iq type='get'><query xmlns='{R}' ver='{v1}'/></iq>")
        assert len(reply) == 0
        # Versions survive a reconnect (stored, not per session).
        a.close()
        b = await RawClient().login(srv.port, "alice", ca=srv.ca)
        reply = await b.iq(f"<iq type='get'><query xmlns='{R}' ver='{v1}'/></iq>")
        assert reply.get("type") == "result" and len(reply) == 0
        assert b.features is not None
        b.close()


async def test_subscription_request_approval_and_mutual_subscription(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await online(srv, "alice")
        b = await online(srv, "bob")
        # alice asks.
        a.send_raw("<presence to='bob@localhost' type='subscribe'/>")
        item = await push(a)
        assert (item.get("subscription"), item.get("ask")) == ("none", "subscribe")
        req = await presence_of_type(b, "subscribe", "alice@localhost")
        assert req.get("from") == "alice@localhost"  # bare JID (RFC 6121 §3.1.2)
        # bob approves: bob gets 'from', alice gets 'to' and bob's presence.
        b.send_raw("<presence to='alice@localhost' type='subscribed'/>")
        item = await push(b)
        assert (item.get("jid"), item.get("subscription")) == ("alice@localhost", "from")
        item = await push(a)
        assert (item.get("subscription"), item.get("ask")) == ("to", None)
        await presence_of_type(a, "subscribed", "bob@localhost")
        p = await presence_of_type(a, None, "bob@localhost/raw")
        assert (p.get("to") or "").startswith("alice@localhost")
        # bob asks back; alice approves: both ways.
        b.send_raw("<presence to='alice@localhost' type='subscribe'/>")
        await push(b)
        await presence_of_type(a, "subscribe", "bob@localhost")
        a.send_raw("<presence to='bob@localhost' type='subscribed'/>")
        assert (await push(a)).get("subscription") == "both"
        assert (await push(b)).get("subscription") == "both"
        await presence_of_type(b, None, "alice@localhost/raw")
        assert state(await roster(a), "bob@localhost") == ("both", None, None)
        assert state(await roster(b), "alice@localhost") == ("both", None, None)
        # Presence now flows both ways.
        a.send_raw("<presence><show>away</show></presence>")
        p = await presence_of_type(b, None, "alice@localhost/raw")
        assert p.findtext(f"{{{CLIENT}}}show") == "away"
        b.send_raw("<presence><status>working</status></presence>")
        p = await presence_of_type(a, None, "bob@localhost/raw")
        assert p.findtext(f"{{{CLIENT}}}status") == "working"
        # alice unsubscribes from bob: alice 'from', bob 'to'; bob's presence stops.
        a.send_raw("<presence to='bob@localhost' type='unsubscribe'/>")
        assert (await push(a)).get("subscription") == "from"
        assert (await push(b)).get("subscription") == "to"
        await presence_of_type(b, "unsubscribe", "alice@localhost")
        await presence_of_type(a, "unavailable", "bob@localhost/raw")
        # bob cancels alice's subscription to him... already gone; alice cancels bob's.
        a.send_raw("<presence to='bob@localhost' type='unsubscribed'/>")
        assert (await push(a)).get("subscription") == "none"
        assert (await push(b)).get("subscription") == "none"
        await presence_of_type(b, "unavailable", "alice@localhost/raw")
        a.close()
        b.close()


async def test_subscription_request_waits_for_an_offline_contact(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await online(srv, "alice")
        a.send_raw(
            "<presence to='bob@localhost' type='subscribe'><status>it is me</status></presence>"
        )
        await push(a)
        await asyncio.sleep(0.1)
        # bob logs in later: the request (with its status) is delivered at initial presence.
        b = await RawClient().login(srv.port, "bob", ca=srv.ca)
        b.send_raw("<presence/>")
        req = await presence_of_type(b, "subscribe", "alice@localhost")
        assert req.findtext(f"{{{CLIENT}}}status") == "it is me"
        # bob denies.
        b.send_raw("<presence to='alice@localhost' type='unsubscribed'/>")
        item = await push(a)
        assert (item.get("subscription"), item.get("ask")) == ("none", None)
        await presence_of_type(a, "unsubscribed", "bob@localhost")
        b.close()
        # The denied request is not delivered again.
        b = await RawClient().login(srv.port, "bob", ca=srv.ca)
        b.send_raw("<presence/>")
        await presence_of_type(b, None, "bob@localhost/raw")
        a.send_raw("<message to='bob@localhost/raw' type='chat'><body>marker</body></message>")
        while True:
            el = await b.recv()
            assert el.get("type") != "subscribe", "request delivered again"
            if el.tag == f"{{{CLIENT}}}message":
                break
        a.close()
        b.close()


async def test_pre_approval(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await online(srv, "alice")
        assert a.features is not None
        # alice approves bob before he asks (RFC 6121 §3.4).
        a.send_raw("<presence to='bob@localhost' type='subscribed'/>")
        item = await push(a)
        assert (item.get("jid"), item.get("subscription"), item.get("approved")) == (
            "bob@localhost",
            "none",
            "true",
        )
        b = await online(srv, "bob")
        b.send_raw("<presence to='alice@localhost' type='subscribe'/>")
        # bob is approved at once, without alice seeing a request.
        await presence_of_type(b, "subscribed", "alice@localhost")
        await presence_of_type(b, None, "alice@localhost/raw")
        item = await push(a)
        assert (item.get("subscription"), item.get("approved")) == ("from", None)
        assert state(await roster(b), "alice@localhost")[0] == "to"
        a.close()
        b.close()


async def test_pre_approval_is_advertised(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        c = await RawClient().login(srv.port, "alice", ca=srv.ca)
        # Stream features after SASL.
        c.close()
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        await c.starttls()
        await c.authenticate("alice", "secret", "SCRAM-SHA-256")
        feats = await c.start()
        assert feats.find("{urn:xmpp:features:rosterver}ver") is not None
        assert feats.find("{urn:xmpp:features:pre-approval}sub") is not None
        c.close()


async def test_subscribe_to_unknown_local_account_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        a = await online(srv, "alice")
        a.send_raw("<presence to='ghost@localhost' type='subscribe'/>")
        await presence_of_type(a, "unsubscribed", "ghost@localhost")
        item = await push(a)  # ask=subscribe
        assert item.get("ask") == "subscribe"
        item = await push(a)  # then cleared by the refusal
        assert (item.get("subscription"), item.get("ask")) == ("none", None)
        a.close()


async def test_removing_a_contact_cancels_both_subscriptions(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await online(srv, "alice")
        b = await online(srv, "bob")
        for x, y, yname in ((a, b, "bob"), (b, a, "alice")):
            x.send_raw(f"<presence to='{yname}@localhost' type='subscribe'/>")
            await presence_of_type(y, "subscribe", "")
            y.send_raw(f"<presence to='{x.jid.split('/')[0]}' type='subscribed'/>")
        await asyncio.sleep(0.2)
        assert state(await roster(a), "bob@localhost")[0] == "both"
        await a.iq(
            f"<iq type='set'><query xmlns='{R}'><item jid='bob@localhost' "
            "subscription='remove'/></query></iq>"
        )
        await presence_of_type(b, "unavailable", "alice@localhost/raw")
        await asyncio.sleep(0.2)
        assert "bob@localhost" not in await roster(a)
        assert state(await roster(b), "alice@localhost")[0] == "none"
        a.close()
        b.close()
