"""Blocking (XEP-0191): list, block, unblock, pushes, and enforcement in both directions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from slixmpp.exceptions import IqError

from tests.e2e.core_helpers import close
from tests.e2e.raw_client import CLIENT, RawClient, error_condition
from tests.support import connect, running_server

B = "urn:xmpp:blocking"


def blocked_jids(iq: Any) -> set[str]:
    return {i.get("jid") for i in iq.xml.iter(f"{{{B}}}item")}


async def test_block_with_slixmpp_and_enforcement_both_ways(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        mallory = srv.add_user("mallory")
        a = await connect(srv, f"{alice}/x", plugins=("xep_0030", "xep_0191"))
        m = await RawClient().login(srv.port, "mallory", ca=srv.ca)
        blocklist = await a.plugin["xep_0191"].get_blocked(timeout=5)
        assert blocked_jids(blocklist) == set()
        await a.plugin["xep_0191"].block([mallory], timeout=5)
        blocklist = await a.plugin["xep_0191"].get_blocked(timeout=5)
        assert blocked_jids(blocklist) == {mallory}
        # Inbound: mallory's messages bounce with service-unavailable; alice sees nothing.
        m.send_raw(f"<message id='m1' to='{alice}' type='chat'><body>spam</body></message>")
        err = await m.wait_for(lambda e: e.get("id") == "m1")
        assert error_condition(err) == "service-unavailable"
        reply = await m.iq(f"<iq type='get' to='{alice}/x'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert error_condition(reply) == "service-unavailable"
        # Outbound: alice cannot write to mallory (not-acceptable + <blocked/>).
        with_error = asyncio.get_running_loop().create_future()
        a.add_event_handler("message_error", lambda msg: with_error.set_result(msg))
        a.send_message(mto=mallory, mbody="hi", mtype="chat")
        msg = await asyncio.wait_for(with_error, 5)
        assert msg["error"]["condition"] == "not-acceptable"
        assert msg.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None
        with_error = asyncio.get_running_loop().create_future()
        # Unblock: messages flow again.
        await a.plugin["xep_0191"].unblock([mallory], timeout=5)
        m.send_raw(f"<message to='{alice}/x' type='chat'><body>sorry</body></message>")
        got = await a.next_message()
        while got["type"] == "error":  # the bounce of "hi" arrived as a message, too
            got = await a.next_message()
        assert got["body"] == "sorry"
        m.close()
        await close(a)


async def test_pushes_domain_blocks_and_presence(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        for u in ("alice", "bob"):
            srv.add_user(u)
        a1 = await RawClient().login(srv.port, "alice", ca=srv.ca, resource="one")
        a2 = await RawClient().login(srv.port, "alice", ca=srv.ca, resource="two")
        for c in (a1, a2):
            await c.iq(f"<iq type='get'><blocklist xmlns='{B}'/></iq>")
        b = await RawClient().login(srv.port, "bob", ca=srv.ca)
        b.send_raw("<presence/>")
        a1.send_raw("<presence/>")
        a1.send_raw("<presence to='bob@localhost/raw'/>")  # directed presence
        await b.wait_for(lambda e: e.get("from") == "alice@localhost/one")
        reply = await a1.iq(
            f"<iq type='set'><block xmlns='{B}'><item jid='bob@localhost'/></block></iq>"
        )
        assert reply.get("type") == "result"
        # Every client that asked for the list gets the push.
        for c in (a1, a2):
            push = await c.wait_for(lambda e: e.find(f"{{{B}}}block") is not None)
            assert [i.get("jid") for i in push.iter(f"{{{B}}}item")] == ["bob@localhost"]
        # bob sees alice go unavailable.
        p = await b.wait_for(lambda e: e.get("from") == "alice@localhost/one")
        assert p.get("type") == "unavailable"
        # Block a whole domain, then unblock everything.
        reply = await a1.iq(
            f"<iq type='set'><block xmlns='{B}'><item jid='example.org'/></block></iq>"
        )
        reply = await a1.iq(f"<iq type='get'><blocklist xmlns='{B}'/></iq>")
        items = sorted(i.get("jid") or "" for i in reply.iter(f"{{{B}}}item"))
        assert items == ["bob@localhost", "example.org"]
        reply = await a1.iq(f"<iq type='set'><unblock xmlns='{B}'/></iq>")
        reply = await a1.iq(f"<iq type='get'><blocklist xmlns='{B}'/></iq>")
        assert list(reply.iter(f"{{{B}}}item")) == []
        # Bad requests.
        reply = await a1.iq(f"<iq type='set'><block xmlns='{B}'/></iq>")
        assert error_condition(reply) == "bad-request"
        reply = await a1.iq(f"<iq type='set'><block xmlns='{B}'><item jid='a@@b'/></block></iq>")
        assert error_condition(reply) == "jid-malformed"
        b.send_raw("<message to='alice@localhost/one' type='chat'><body>back</body></message>")
        m = await a1.next("message")
        assert m.findtext(f"{{{CLIENT}}}body") == "back"
        for c in (a1, a2, b):
            c.close()


async def test_blocking_survives_reconnect(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        srv.add_user("bob")
        a = await connect(srv, f"{alice}/x", plugins=("xep_0030", "xep_0191"))
        await a.plugin["xep_0191"].block(["bob@localhost"], timeout=5)
        await close(a)
        a = await connect(srv, f"{alice}/x", plugins=("xep_0030", "xep_0191"))
        try:
            blocklist = await a.plugin["xep_0191"].get_blocked(timeout=5)
        except IqError as exc:  # pragma: no cover - diagnostic
            raise AssertionError(exc.iq) from exc
        assert blocked_jids(blocklist) == {"bob@localhost"}
        await close(a)
