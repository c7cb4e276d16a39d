"""Offline messages (XEP-0160): stored when no client is available, delivered at the next
login with a XEP-0203 delay, in order, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.core_helpers import close
from tests.e2e.raw_client import CLIENT, RawClient, error_condition
from tests.support import connect, running_server


async def test_offline_messages_are_delivered_at_login_with_delay(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        for i in range(3):
            a.send_message(mto=bob, mbody=f"while you were out {i}", mtype="chat")
        a.send_message(mto="Bob@LocalHost/some-resource", mbody="to a resource", mtype="normal")
        await asyncio.sleep(0.3)
        assert srv.server.offline_store.count("bob") == 4
        b = await connect(srv, f"{bob}/laptop", plugins=("xep_0030", "xep_0203"))
        bodies = []
        for _ in range(4):
            m = await b.next_message()
            bodies.append(m["body"])
            assert str(m["from"]) == f"{alice}/phone"
            assert m["delay"]["stamp"] is not None
            assert str(m["delay"]["from"]) == "localhost"
        assert bodies == [*(f"while you were out {i}" for i in range(3)), "to a resource"]
        assert srv.server.offline_store.count("bob") == 0
        await close(b)
        # Delivered once: a second login gets nothing.
        b = await connect(srv, f"{bob}/laptop")
        a.send_message(mto=f"{bob}/laptop", mbody="live", mtype="chat")
        m = await b.next_message()
        assert m["body"] == "live"
        await close(a, b)


async def test_what_is_not_stored(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        # Chat states alone, headlines, errors, groupchat and no-store hints are not kept.
        a.send_raw(
            "<message to='bob@localhost' type='chat'>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
            "<message to='bob@localhost' type='headline'><body>news</body></message>"
            "<message to='bob@localhost' type='chat'><body>x</body>"
            "<no-store xmlns='urn:xmpp:hints'/></message>"
            "<message to='bob@localhost' type='chat'><body>kept</body></message>"
        )
        a.send_raw("<message id='gc' to='bob@localhost' type='groupchat'><body>gc</body></message>")
        reply = await a.iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert reply.get("type") == "result"  # everything before it was handled
        assert srv.server.offline_store.count("bob") == 1
        a.close()


async def test_negative_priority_login_does_not_take_offline_messages(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        a.send_raw("<message to='bob@localhost' type='chat'><body>wait for me</body></message>")
        await asyncio.sleep(0.2)
        b = await RawClient().login(srv.port, "bob", ca=srv.ca, resource="bot")
        b.send_raw("<presence><priority>-5</priority></presence>")
        await b.wait_for(lambda e: e.get("from") == "bob@localhost/bot")
        await asyncio.sleep(0.2)
        assert srv.server.offline_store.count("bob") == 1
        b2 = await RawClient().login(srv.port, "bob", ca=srv.ca, resource="human")
        b2.send_raw("<presence/>")
        m = await b2.next("message")
        assert m.findtext(f"{{{CLIENT}}}body") == "wait for me"
        assert m.find("{urn:xmpp:delay}delay") is not None
        for c in (a, b, b2):
            c.close()


async def test_offline_store_limit(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"offline_per_account": 2}) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        for i in range(3):
            a.send_raw(
                f"<message id='m{i}' to='bob@localhost' type='chat'><body>{i}</body></message>"
            )
        err = await a.wait_for(lambda e: e.get("id") == "m2")
        assert error_condition(err) == "resource-constraint"
        assert srv.server.offline_store.count("bob") == 2
        a.close()


async def test_offline_messages_survive_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        a.send_raw("<message to='bob@localhost' type='chat'><body>persisted</body></message>")
        await asyncio.sleep(0.2)
        a.close()
    async with running_server(tmp_path) as srv:
        b = await RawClient().login(srv.port, "bob", ca=srv.ca)
        b.send_raw("<presence/>")
        m = await b.next("message")
        assert m.findtext(f"{{{CLIENT}}}body") == "persisted"
        b.close()
