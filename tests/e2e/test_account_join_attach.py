"""Account-join: a client attaching to a room its account is in is answered from the account's
state at once: every other occupant's presence exactly once, in the order the account learned
of them and as it is now, then its own presence (110) last, then the subject. Each stanza counts
on its own for stream management (XEP-0198), and an inactive client (XEP-0352) gets the same."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from minimix.protocol.jid import JID
from tests.e2e.account_data_helpers import SmClient
from tests.e2e.muc_helpers import (
    SERVICE,
    client,
    close,
    codes,
    create,
    from_room,
    is_subject,
    join,
    join_stanza,
    kind,
)
from tests.support import running_server

ROOM = f"attic@{SERVICE}"
CSI = "urn:xmpp:csi:0"
PING = "urn:xmpp:ping"


def nick_of(el: ET.Element) -> str:
    return (el.get("from") or "").split("/", 1)[1]


async def attach(laptop: SmClient, pid: str) -> list[ET.Element]:
    """Join with the account's nick; every stanza from the room up to the subject."""
    laptop.raw.send_raw(join_stanza(ROOM, "alice", pid=pid, history={"maxstanzas": "0"}))
    seen: list[ET.Element] = []
    while True:
        el = await laptop.next_stanza()
        if from_room(ROOM)(el):
            seen.append(el)
            if is_subject(el):
                return seen


@pytest.mark.parametrize("inactive", [False, True], ids=["active", "inactive"])
async def test_an_attaching_client_gets_each_occupant_once_in_order_then_itself(
    tmp_path: Path, inactive: bool
) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await client(srv, "bob", "desk")
        await create(b, rb, ROOM, "Bob")
        others = {}
        for name in ("u0", "u1", "u2"):  # in the room before the account
            c, r = await client(srv, name)
            await join(c, r, ROOM, name)
            others[name] = c
        phone, rp = await client(srv, "alice", "phone")
        await join(phone, rp, ROOM, "alice")
        for name in ("u3", "u4"):  # after it
            c, r = await client(srv, name)
            await join(c, r, ROOM, name)
            others[name] = c
        others["u1"].send_presence(pto=f"{ROOM}/u1", pshow="away", pstatus="lunch")
        others["u2"].send_presence(pto=f"{ROOM}/u2", ptype="unavailable")
        await rp.take(lambda el: el.get("from") == f"{ROOM}/u4")
        await rp.take(lambda el: el.get("from") == f"{ROOM}/u1" and el.get("type") is None)
        await rp.take(lambda el: el.get("from") == f"{ROOM}/u2" and el.get("type") is not None)

        # Every account's copy of a presence the room sent them all is one element (Bob, the
        # owner, gets another one: with the real JID).
        registry = srv.server.account_join.registry
        room = JID.parse(ROOM)
        alices, u0s = (registry.get(JID.parse(f"{n}@localhost"), room) for n in ("alice", "u0"))
        assert alices.occupants["u4"] is u0s.occupants["u4"]
        assert alices.occupants["u1"] is u0s.occupants["u1"]
        # Also a presence each account got in a copy of its own, as it joined (u0 was in the
        # room before u1 and alice joined: each got u0's presence in its join sequence).
        u1s = registry.get(JID.parse("u1@localhost"), room)
        assert alices.occupants["u0"] is u1s.occupants["u0"]

        laptop = await SmClient.login(srv, "alice", "laptop")
        if inactive:
            laptop.raw.send_raw(f"<inactive xmlns='{CSI}'/>")
        status = {"u1": "lunch", "u3": None}
        for round_ in range(3):  # again from what the first one cached, then after a change
            if round_ == 2:
                others["u3"].send_presence(pto=f"{ROOM}/u3", pshow="dnd", pstatus="busy")
                await rp.take(lambda el: el.findtext("{jabber:client}status") == "busy")
                # The laptop, attached already, gets the change too (held while inactive, and
                # then superseded by the same presence in what attaching sends).
                while not inactive:
                    if (await laptop.next_stanza()).findtext("{jabber:client}status") == "busy":
                        break
                status["u3"] = "busy"
            seq = await attach(laptop, pid=f"attach{round_}")
            presences = [el for el in seq if kind(el) == "presence"]
            assert [nick_of(el) for el in presences] == ["Bob", "u0", "u1", "u3", "u4", "alice"]
            for nick, text in status.items():
                el = next(el for el in presences if nick_of(el) == nick)
                assert el.findtext("{jabber:client}status") == text
            assert all("110" not in codes(el) for el in presences[:-1])
            me = presences[-1]
            assert "110" in codes(me) and me.get("id") == f"attach{round_}"
            assert all(el.get("type") is None for el in presences)
            assert all(el.get("to") == "alice@localhost/laptop" for el in seq)
            assert is_subject(seq[-1]) and len(seq) == len(presences) + 1

        # Every stanza counted once (XEP-0198): after a round trip, the server sent as many
        # stanzas as the client handled, and the client's acknowledgement leaves nothing over.
        laptop.raw.send_raw(f"<iq type='get' id='done' to='localhost'><ping xmlns='{PING}'/></iq>")
        while (await laptop.next_stanza()).get("id") != "done":
            pass
        session = srv.server.sessions.get(JID.parse("alice@localhost/laptop"))
        assert session is not None
        sm = session.link.sm  # type: ignore[attr-defined]
        assert sm.h_out == laptop.h
        laptop.ack()
        for _ in range(100):
            if not sm.queue:
                break
            await asyncio.sleep(0.01)
        assert not sm.queue and not session.closed
        laptop.raw.close()
        await close(b, phone, *others.values())
