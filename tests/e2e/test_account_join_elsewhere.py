"""Account-join with rooms that are not minimix's own: an independent room service attached as an
XEP-0114 external component (``tests/e2e/tiny_rooms.py``), reached only through the router, as
rooms on other servers will be. Also the gap-fill after a restart, and from a room's archive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from minimix.protocol import ns
from minimix.protocol.jid import JID
from tests.e2e.account_join_helpers import (
    free_port,
    mam_query,
    no_stanza,
    self_unavailable,
    stanza_ids,
    wait_until,
)
from tests.e2e.muc_helpers import (
    SERVICE,
    body,
    close,
    codes,
    create,
    from_jid,
    is_subject,
    join,
    kind,
    send_groupchat,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.e2e.tiny_rooms import TinyRoomService, start_tiny_rooms
from tests.support import Running, running_server

ELSEWHERE = "rooms.elsewhere.test"
SECRET = "component-secret"
DEN = f"den@{ELSEWHERE}"
ALICE = "alice@localhost"


@contextlib.asynccontextmanager
async def server_with_component(
    tmp_path: Path, port: int | None = None, **overrides: Any
) -> AsyncIterator[Running]:
    port = port or free_port()
    async with running_server(
        tmp_path,
        component_port=port,
        components=[{"domain": ELSEWHERE, "secret": SECRET}],
        **overrides,
    ) as srv:
        yield srv


async def test_two_clients_in_a_room_of_an_external_component_service(tmp_path: Path) -> None:
    async with server_with_component(tmp_path) as srv:
        tiny = await start_tiny_rooms(ELSEWHERE, SECRET, srv.server.ports["component"])
        den = tiny.room("den")
        tiny.post(den, "carol", "earlier words")
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        s1 = await join(a1, r1, DEN, "alice", pid="p1")
        s2 = await join(a2, r2, DEN, "alice", pid="p2", history={"maxstanzas": "1"})
        assert tiny.joins_from(ALICE) == 1
        assert tiny.joins_from(f"{ALICE}/phone") == tiny.joins_from(f"{ALICE}/laptop") == 0
        assert den.occupants["alice"] == ALICE
        for seq, pid in ((s1, "p1"), (s2, "p2")):
            assert [kind(e) for e in seq] == ["presence", "presence", "message", "message"]
            assert seq[0].get("from") == f"{DEN}/carol"
            assert "110" in codes(seq[1]) and seq[1].get("id") == pid
            assert body(seq[2]) == "earlier words"
            assert is_subject(seq[3])
        # Live traffic reaches both clients once, with the room's and the account's stanza-ids.
        tiny.post(den, "carol", "hello both")
        for rec in (r1, r2):
            got = await rec.take(lambda el: body(el) == "hello both")
            ids = stanza_ids(got)
            assert DEN in ids and ALICE in ids
        # A client's group chat goes to the room as the account.
        send_groupchat(a2, DEN, "from the laptop", mid="lap1")
        await r1.take(lambda el: body(el) == "from the laptop")
        echo = await r2.take(lambda el: body(el) == "from the laptop")
        assert echo.get("id") == "lap1"
        sent = [e for e in tiny.received if e.get("id") == "lap1"]
        assert [e.get("from") for e in sent] == [ALICE]
        # The room's self-ping optimisation is never needed: the server answers.
        res = await send_iq(a1, f"<ping xmlns='{ns.PING}'/>", f"{DEN}/alice")
        assert res.get("type") == "result"
        # Leaving: one client detaches, then the last one takes the account out.
        a1.send_raw(f"<presence to='{DEN}/alice' type='unavailable'/>")
        await r1.take(self_unavailable(DEN))
        assert den.occupants.get("alice") == ALICE
        a2.send_raw(f"<presence to='{DEN}/alice' type='unavailable'/>")
        await r2.take(self_unavailable(DEN))
        await tiny.wait_for(lambda: "alice" not in den.occupants)
        await close(a1, a2)
        tiny.disconnect()


async def test_error_kick_from_an_external_room_rejoins_transparently(tmp_path: Path) -> None:
    async with server_with_component(tmp_path) as srv:
        srv.server.account_join.registry.settings.backoff_first = 0.05
        tiny = await start_tiny_rooms(ELSEWHERE, SECRET, srv.server.ports["component"])
        den = tiny.room("den")
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, DEN, "alice")
        tiny.kick(den, "alice", (333,), "connection trouble")
        await tiny.wait_for(lambda: tiny.joins_from(ALICE) == 2)
        await tiny.wait_for(lambda: den.occupants.get("alice") == ALICE)
        tiny.post(den, "carol", "you are back")
        await r1.take(lambda el: body(el) == "you are back")
        await no_stanza(r1, self_unavailable(DEN))
        # A kick (307) is final: the client hears it and nothing rejoins.
        tiny.kick(den, "alice", (307,), "enough")
        kicked = await r1.take(self_unavailable(DEN))
        assert "307" in codes(kicked)
        await asyncio.sleep(0.3)
        assert tiny.joins_from(ALICE) == 2
        await close(a1)
        tiny.disconnect()


async def test_restart_rejoins_and_backfills_the_gap_into_the_account_archive(
    tmp_path: Path,
) -> None:
    port = free_port()
    tiny: TinyRoomService | None = None
    async with server_with_component(tmp_path, port) as srv:
        tiny = await start_tiny_rooms(ELSEWHERE, SECRET, port)
        den = tiny.room("den")
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, DEN, "alice")
        tiny.post(den, "carol", "before the restart")
        await r1.take(lambda el: body(el) == "before the restart")
        await close(a1)
    # The server is down; the room lives on elsewhere and keeps talking.
    assert tiny is not None
    tiny.disconnect()  # the server process is gone, and with it the component's connection
    await asyncio.wait_for(tiny.gone.wait(), 5)
    tiny.post(den, "carol", "during the restart 1")
    tiny.post(den, "carol", "during the restart 2")
    joins_before = tiny.joins_from(ALICE)
    async with server_with_component(tmp_path, port) as srv:
        await tiny.reconnect(port)
        # No client action: the server rejoins the account by itself.
        await tiny.wait_for(lambda: tiny.joins_from(ALICE) > joins_before, timeout=15)
        key = (JID.parse(ALICE), JID.parse(DEN))
        await wait_until(
            lambda: (
                (o := srv.server.account_join.registry.get(*key)) is not None
                and o.phase.value == "joined"
            ),
            timeout=15,
        )
        a1, r1 = await muc_client(srv, "alice", "phone")
        archived = [body(m) for m in await mam_query(a1, r1, with_jid=DEN)]
        assert archived.count("before the restart") == 1
        assert archived.count("during the restart 1") == 1
        assert archived.count("during the restart 2") == 1
        await close(a1)
        tiny.disconnect()


async def test_gap_beyond_the_rooms_history_is_backfilled_from_the_room_archive(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await muc_client(srv, "bob", "desk")
        room = f"archive@{SERVICE}"
        await create(b, rb, room, "Bob", {"muc#roomconfig_historylength": "2"})
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, room, "alice")
        send_groupchat(b, room, "seen live")
        await r1.take(lambda el: body(el) == "seen live")
        a1.send_raw(f"<presence to='{room}/alice' type='unavailable'/>")
        await rb.take(lambda el: from_jid(f"{room}/alice")(el) and el.get("type") == "unavailable")
        for i in range(5):
            send_groupchat(b, room, f"missed {i}")
            await rb.take(lambda el, i=i: body(el) == f"missed {i}")
        await join(a1, r1, room, "alice", history={"maxstanzas": "0"})

        async def archived() -> list[str | None]:
            return [body(m) for m in await mam_query(a1, r1, with_jid=room)]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        got = await archived()
        while got.count("missed 0") != 1 and loop.time() < deadline:
            await asyncio.sleep(0.1)
            got = await archived()
        assert [got.count(f"missed {i}") for i in range(5)] == [1] * 5
        assert got.count("seen live") == 1
        await close(a1, b)


async def test_what_a_room_sends_the_account_is_answered_never_bounced(tmp_path: Path) -> None:
    async with server_with_component(tmp_path) as srv:
        tiny = await start_tiny_rooms(ELSEWHERE, SECRET, srv.server.ports["component"])
        den = tiny.room("den")
        a1, r1 = await muc_client(srv, "alice", "phone")
        await join(a1, r1, DEN, "alice")

        def answer(iid: str) -> ET.Element | None:
            return next((e for e in tiny.received if e.get("id") == iid), None)

        # A ping from the room (Openfire's idle check) is answered as the account.
        tiny.send_raw_stanza(
            f"<iq type='get' from='{DEN}' to='{ALICE}' id='idle1'><ping xmlns='{ns.PING}'/></iq>"
        )
        await tiny.wait_for(lambda: answer("idle1") is not None)
        assert answer("idle1").get("type") == "result"  # type: ignore[union-attr]
        # An occupant's vCard request through the room is answered by the server's handlers.
        res = await send_iq(a1, "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>", "", "set")
        assert res.get("type") == "result"
        tiny.send_raw_stanza(
            f"<iq type='get' from='{DEN}/carol' to='{ALICE}' id='vc1'>"
            "<vCard xmlns='vcard-temp'/></iq>"
        )
        await tiny.wait_for(lambda: answer("vc1") is not None)
        vc = answer("vc1")
        assert vc is not None and vc.get("type") == "result"
        assert vc.findtext(".//{vcard-temp}FN") == "Alice"
        # A request nobody here handles gets an error rooms do not treat as a ghost.
        tiny.send_raw_stanza(
            f"<iq type='get' from='{DEN}/carol' to='{ALICE}' id='odd1'>"
            "<query xmlns='urn:example:unknown'/></iq>"
        )
        await tiny.wait_for(lambda: answer("odd1") is not None)
        odd = answer("odd1")
        assert odd is not None and odd.get("type") == "error"
        assert (
            odd.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}feature-not-implemented") is not None
        )
        # Group chat from a room the account is not in: never bounced; the account leaves it.
        tiny.send_raw_stanza(
            f"<message type='groupchat' from='elsewhere@{ELSEWHERE}/x' to='{ALICE}' id='stray1'>"
            "<body>who are you</body></message>"
        )
        await tiny.wait_for(
            lambda: any(
                e.get("to", "").startswith(f"elsewhere@{ELSEWHERE}")
                and e.get("type") == "unavailable"
                for e in tiny.received
            )
        )
        assert not [e for e in tiny.received if e.get("id") == "stray1"]  # no error came back
        await no_stanza(r1, lambda el: body(el) == "who are you")
        assert den.occupants.get("alice") == ALICE
        await close(a1)
        tiny.disconnect()
