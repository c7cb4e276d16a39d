"""Message routing (RFC 6121 §8.5): full and bare JIDs, priorities, negative priorities,
several resources, unknown recipients, iq routed between clients, escaping."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.core_helpers import close
from tests.e2e.raw_client import CLIENT, RawClient, error_condition
from tests.support import Running, connect, running_server


async def client(srv: Running, user: str, resource: str, priority: int | None = 0) -> RawClient:
    """A raw client with the given presence priority (None: no presence at all)."""
    c = await RawClient().login(srv.port, user, ca=srv.ca, resource=resource)
    if priority is not None:
        c.send_raw(f"<presence><priority>{priority}</priority></presence>")
        await c.wait_for(lambda e: e.get("from") == c.jid and e.tag.endswith("presence"))
    return c


def body_of(el: object) -> str | None:
    return el.findtext(f"{{{CLIENT}}}body")  # type: ignore[attr-defined, no-any-return]


async def got(c: RawClient, body: str, timeout: float = 3.0) -> bool:
    try:
        await c.wait_for(lambda e: body_of(e) == body, timeout)
        return True
    except TimeoutError:
        return False


async def test_full_and_bare_jid_with_slixmpp(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/laptop")
        a.send_message(mto=f"{bob}/laptop", mbody="to the laptop", mtype="chat")
        m = await b.next_message()
        assert (m["body"], str(m["from"]), str(m["to"])) == (
            "to the laptop",
            f"{alice}/phone",
            f"{bob}/laptop",
        )
        a.send_message(mto=bob, mbody="to bob <&> 'quoted' \"double\" ☃", mtype="chat")
        m = await b.next_message()
        assert m["body"] == "to bob <&> 'quoted' \"double\" ☃"
        b.send_message(mto=m["from"], mbody="reply", mtype="chat")
        m = await a.next_message()
        assert m["body"] == "reply"
        await close(a, b)


async def test_bare_jid_goes_to_the_highest_priority(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await client(srv, "alice", "a")
        low = await client(srv, "bob", "low", 1)
        high = await client(srv, "bob", "high", 10)
        a.send_raw("<message to='bob@localhost' type='chat'><body>one</body></message>")
        assert await got(high, "one")
        assert not await got(low, "one", 0.3)
        # Equal priorities: every top resource gets it (RFC 6121 §8.5.2.1.1 allows either).
        low.send_raw("<presence><priority>10</priority></presence>")
        await high.wait_for(lambda e: e.get("from") == "bob@localhost/low")
        a.send_raw("<message to='bob@localhost'><body>two</body></message>")
        assert await got(high, "two")
        assert await got(low, "two")
        for c in (a, low, high):
            c.close()


async def test_negative_priority_gets_no_bare_jid_messages(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await client(srv, "alice", "a")
        shy = await client(srv, "bob", "shy", -1)
        a.send_raw("<message to='bob@localhost' type='chat'><body>stored</body></message>")
        assert not await got(shy, "stored", 0.3)
        # It went to the offline store instead.
        assert srv.server.offline_store.count("bob") == 1
        # A full JID still reaches a negative-priority client.
        a.send_raw("<message to='bob@localhost/shy' type='chat'><body>direct</body></message>")
        assert await got(shy, "direct")
        a.close()
        shy.close()


async def test_client_without_presence_gets_full_jid_only(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await client(srv, "alice", "a")
        quiet = await client(srv, "bob", "quiet", None)
        a.send_raw("<message to='bob@localhost' type='chat'><body>bare</body></message>")
        assert not await got(quiet, "bare", 0.3)
        a.send_raw("<message to='bob@localhost/quiet' type='chat'><body>full</body></message>")
        assert await got(quiet, "full")
        a.close()
        quiet.close()


async def test_unknown_resource_falls_back_to_the_bare_jid(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await client(srv, "alice", "a")
        b = await client(srv, "bob", "real")
        a.send_raw("<message to='bob@localhost/gone' type='chat'><body>chat</body></message>")
        assert await got(b, "chat")
        # Groupchat to a missing resource bounces; headline to it is dropped silently.
        a.send_raw(
            "<message id='g' to='bob@localhost/gone' type='groupchat'><body>gc</body></message>"
        )
        err = await a.wait_for(lambda e: e.get("id") == "g")
        assert error_condition(err) == "service-unavailable"
        a.close()
        b.close()


@pytest.mark.parametrize("to", ["nobody@localhost", "nobody@localhost/res"])
async def test_message_to_unknown_account_bounces(tmp_path: Path, to: str) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        a = await client(srv, "alice", "a")
        a.send_raw(f"<message id='x' to='{to}' type='chat'><body>hello?</body></message>")
        err = await a.wait_for(lambda e: e.get("id") == "x")
        assert err.get("type") == "error"
        assert err.get("from") == to
        assert error_condition(err) == "service-unavailable"
        a.close()


async def test_message_to_a_remote_domain_bounces(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        a = await client(srv, "alice", "a")
        a.send_raw("<message id='r' to='someone@example.org'><body>x</body></message>")
        err = await a.wait_for(lambda e: e.get("id") == "r")
        assert error_condition(err) == "remote-server-not-found"
        a.close()


async def test_iq_between_clients_and_the_reply(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await client(srv, "alice", "a")
        b = await client(srv, "bob", "b")
        a.send_raw(
            "<iq type='get' id='v1' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>"
        )
        q = await b.wait_for(lambda e: e.get("id") == "v1")
        assert q.get("from") == "alice@localhost/a"
        b.send_raw(
            "<iq type='result' id='v1' to='alice@localhost/a'><query xmlns='jabber:iq:version'>"
            "<name>raw</name></query></iq>"
        )
        r = await a.wait_for(lambda e: e.get("id") == "v1")
        assert r.get("type") == "result" and r.get("from") == "bob@localhost/b"
        # An iq to an offline full JID bounces.
        a.send_raw(
            "<iq type='get' id='v2' to='bob@localhost/nope'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        r = await a.wait_for(lambda e: e.get("id") == "v2")
        assert error_condition(r) == "service-unavailable"
        a.close()
        b.close()


async def test_message_from_is_stamped_with_the_full_jid(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await client(srv, "alice", "a")
        b = await client(srv, "bob", "b")
        # Giving one's own bare JID is allowed; the server still stamps the full JID.
        a.send_raw("<message from='alice@localhost' to='bob@localhost/b'><body>s</body></message>")
        m = await b.wait_for(lambda e: body_of(e) == "s")
        assert m.get("from") == "alice@localhost/a"
        a.close()
        b.close()


async def test_many_messages_keep_their_order(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await client(srv, "alice", "a")
        b = await client(srv, "bob", "b")
        a.send_raw(
            "".join(
                f"<message to='bob@localhost/b' type='chat'><body>{i}</body></message>"
                for i in range(200)
            )
        )
        seen = []
        while len(seen) < 200:
            m = await b.next("message")
            seen.append(int(body_of(m) or -1))
        assert seen == list(range(200))
        await asyncio.sleep(0)
        a.close()
        b.close()
