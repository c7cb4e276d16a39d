"""Presence (RFC 6121 §4) between real slixmpp clients: subscription with the library's own
handling, presence flowing both ways, probes at login, directed presence, disconnects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import slixmpp

from tests.e2e.core_helpers import close, free_port, login, roster_of
from tests.e2e.raw_client import RawClient
from tests.support import Client, connect, running_server

AVAILABLE_SHOWS = ("away", "chat", "dnd", "xa")


async def presence_from(
    client: Client, jid: str, ptype: str = "available", show: str | None = None
) -> slixmpp.Presence:
    while True:
        p = await client.next_presence()
        if str(p["from"]) != jid:
            continue
        kind = p["type"]  # slixmpp reports <show/> as the type of an available presence
        if show is not None and kind == show:
            return p
        if show is None and ptype == "available" and kind in ("available", *AVAILABLE_SHOWS):
            return p
        if show is None and kind == ptype:
            return p


async def subscribe_both_ways(a: Client, b: Client) -> None:
    """slixmpp answers requests itself (auto_authorize, auto_subscribe): ask once."""
    a.send_presence_subscription(pto=b.boundjid.bare)
    for _ in range(100):
        ra = await roster_of(a)
        rb = await roster_of(b)
        sa = ra.get(b.boundjid.bare, {}).get("subscription")
        sb = rb.get(a.boundjid.bare, {}).get("subscription")
        if sa == "both" and sb == "both":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"subscription did not complete: {sa}, {sb}")


async def test_mutual_subscription_and_presence_both_ways(tmp_path: Path) -> None:
    async with running_server(tmp_path, c2s={"direct_tls_port": free_port()}) as srv:
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        b = await login(srv, f"{bob}/laptop", direct_tls=True)
        b.send_presence()
        await b.get_roster()
        await subscribe_both_ways(a, b)
        a.send_presence(pshow="dnd", pstatus="in a meeting")
        p = await presence_from(b, f"{alice}/phone", show="dnd")
        assert (p["show"], p["status"]) == ("dnd", "in a meeting")
        b.send_presence(pshow="xa", ppriority=5)
        p = await presence_from(a, f"{bob}/laptop", show="xa")
        assert (p["show"], p["priority"]) == ("xa", 5)
        # bob goes away: alice sees him unavailable.
        await close(b)
        await presence_from(a, f"{bob}/laptop", "unavailable")
        # bob comes back: his initial presence reaches alice, and the server probes alice
        # for him.
        b = await connect(srv, f"{bob}/laptop")
        await presence_from(b, f"{alice}/phone")
        await presence_from(a, f"{bob}/laptop")
        await close(a, b)


async def test_own_clients_see_each_other(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        a1 = await connect(srv, f"{alice}/one")
        a2 = await connect(srv, f"{alice}/two")
        await presence_from(a1, f"{alice}/two")
        await presence_from(a2, f"{alice}/one")  # told at login about the other
        a2.send_presence(pstatus="busy")
        p = await presence_from(a1, f"{alice}/two")
        assert p["status"] == "busy"
        await close(a2)
        await presence_from(a1, f"{alice}/two", "unavailable")
        await close(a1)


async def test_no_presence_without_subscription(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("eve")
        eve = await RawClient().login(srv.port, "eve", ca=srv.ca)
        eve.send_raw("<presence/>")
        await eve.next("presence")
        a = await connect(srv, "alice@localhost/x")
        a.send_presence(pstatus="secret status")
        # A probe from eve is not answered (no subscription); eve sees nothing of alice.
        eve.send_raw("<presence type='probe' to='alice@localhost'/>")
        eve.send_raw("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        el = await eve.recv()
        assert el.get("id") == "p", el.attrib
        eve.close()
        await close(a)


async def test_directed_presence_and_unavailable_on_disconnect(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        carol = srv.add_user("carol")
        c = await connect(srv, f"{carol}/tab")
        a = await connect(srv, f"{alice}/phone")
        a.send_presence(pto=f"{carol}/tab", pstatus="hello carol")
        p = await presence_from(c, f"{alice}/phone")
        assert p["status"] == "hello carol"
        # A broadcast does not reach carol (no subscription)...
        a.send_presence(pstatus="to subscribers only")
        # ...but alice's disconnect does, because of the directed presence.
        await asyncio.sleep(0.2)
        await close(a)
        p = await presence_from(c, f"{alice}/phone", "unavailable")
        assert p["status"] != "to subscribers only"
        await close(c)


async def test_unavailable_presence_ends_directed_presence(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("carol")
        c = await RawClient().login(srv.port, "carol", ca=srv.ca)
        c.send_raw("<presence/>")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        a.send_raw("<presence/>")
        a.send_raw("<presence to='carol@localhost/raw'/>")
        p = await c.wait_for(lambda e: e.get("from") == "alice@localhost/raw")
        assert p.get("type") is None
        a.send_raw("<presence type='unavailable'/>")
        p = await c.wait_for(lambda e: e.get("from") == "alice@localhost/raw")
        assert p.get("type") == "unavailable"
        a.close()
        c.close()
