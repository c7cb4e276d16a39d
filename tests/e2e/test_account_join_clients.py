"""Account-join with unmodified clients of different making: slixmpp's own XEP-0045 plugin, and a
minimal raw-XML client written from RFC 6120 (``raw_xmpp_client.py``), in one room together."""

from __future__ import annotations

from pathlib import Path

from minimix.protocol import ns
from tests.e2e.account_join_helpers import RoomTap, no_stanza, self_unavailable
from tests.e2e.muc_helpers import (
    SERVICE,
    body,
    close,
    create,
    from_room,
    join,
    kind,
    send_groupchat,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.e2e.raw_xmpp_client import RawClient, local
from tests.support import connect, running_server

ROOM = f"mixed@{SERVICE}"
ALICE = "alice@localhost"
OCC = f"{ROOM}/alice"
MUC_USER = ns.MUC_USER


def raw_codes(el: object) -> set[str]:
    from xml.etree import ElementTree as ET

    assert isinstance(el, ET.Element)
    return {s.get("code", "") for s in el.iter(f"{{{MUC_USER}}}status")}


async def test_a_raw_client_and_a_slixmpp_client_share_one_occupancy(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await muc_client(srv, "bob", "desk")
        await create(b, rb, ROOM, "Bob")
        tap = RoomTap(srv, ALICE)
        srv.add_user("alice")
        raw = RawClient("127.0.0.1", srv.port, srv.ca)
        await raw.connect("alice", "secret", "raw")
        raw.send(
            f"<presence to='{OCC}' id='raw-join'><x xmlns='{ns.MUC}'>"
            "<history maxstanzas='0'/></x></presence>"
        )
        me = await raw.take(lambda el: local(el) == "presence" and "110" in raw_codes(el))
        assert me.get("id") == "raw-join" and me.get("from") == OCC
        await raw.take(lambda el: el.find("{jabber:client}subject") is not None)
        a, ra = await muc_client(srv, "alice", "slix")
        seq = await join(a, ra, ROOM, "alice", pid="slix-join")
        assert [kind(e) for e in seq] == ["presence", "presence", "message"]
        assert len(tap.joins()) == 1  # two libraries, two clients, one occupant
        # Both receive the room; what either sends reaches the other as the one occupant.
        send_groupchat(b, ROOM, "hello mixed company")
        got = await raw.take(lambda el: el.findtext("{jabber:client}body") == "hello mixed company")
        assert got.get("to") == raw.jid
        await ra.take(lambda el: body(el) == "hello mixed company")
        raw.send(f"<message to='{ROOM}' type='groupchat' id='r1'><body>from raw</body></message>")
        echo = await raw.take(lambda el: el.get("id") == "r1")
        assert echo.get("from") == OCC
        await ra.take(lambda el: body(el) == "from raw")
        await rb.take(lambda el: body(el) == "from raw" and el.get("from") == OCC)
        # The raw client's self-ping is answered by the server.
        raw.send(f"<iq type='get' id='sp' to='{OCC}'><ping xmlns='{ns.PING}'/></iq>")
        pong = await raw.take(lambda el: el.get("id") == "sp")
        assert pong.get("type") == "result"
        # The raw client leaves: only it is told; the slixmpp client stays in.
        raw.send(f"<presence to='{OCC}' type='unavailable'/>")
        out = await raw.take(lambda el: el.get("type") == "unavailable")
        assert "110" in raw_codes(out)
        await no_stanza(ra, self_unavailable(ROOM))
        send_groupchat(b, ROOM, "after raw left")
        await ra.take(lambda el: body(el) == "after raw left")
        await raw.close()
        await close(a, b)


async def test_slixmpp_muc_plugin_clients_of_one_account(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        b, rb = await muc_client(srv, "bob", "desk")
        await create(b, rb, ROOM, "Bob")
        send_groupchat(b, ROOM, "history line")
        await rb.take(lambda el: body(el) == "history line")
        tap = RoomTap(srv, ALICE)
        srv.add_user("alice")
        plugins = ("xep_0030", "xep_0199", "xep_0045")
        phone = await connect(srv, f"{ALICE}/phone", plugins=plugins)
        laptop = await connect(srv, f"{ALICE}/laptop", plugins=plugins)
        muc_phone = phone.plugin["xep_0045"]
        muc_laptop = laptop.plugin["xep_0045"]
        own1, subject1, occupants1, history1 = await muc_phone.join_muc_wait(
            ROOM, "alice", maxstanzas=5, timeout=10
        )
        own2, subject2, occupants2, history2 = await muc_laptop.join_muc_wait(
            ROOM, "alice", maxstanzas=5, timeout=10
        )
        assert len(tap.joins()) == 1
        for own, subject, occupants, history in (
            (own1, subject1, occupants1, history1),
            (own2, subject2, occupants2, history2),
        ):
            assert str(own["from"]) == OCC
            assert f"{ROOM}/Bob" in {str(p["from"]) for p in occupants}
            assert [m["body"] for m in history] == ["history line"]
            assert subject is not None
        assert sorted(muc_phone.get_roster(ROOM)) == ["Bob", "alice"]
        assert sorted(muc_laptop.get_roster(ROOM)) == ["Bob", "alice"]
        laptop.send_message(mto=ROOM, mbody="from the plugin", mtype="groupchat")
        msg = await phone.next_message()
        while msg["body"] != "from the plugin":
            msg = await phone.next_message()
        assert str(msg["from"]) == OCC
        await rb.take(lambda el: body(el) == "from the plugin" and from_room(ROOM)(el))
        muc_laptop.leave_muc(ROOM, "alice")
        await no_stanza(rb, lambda el: el.get("from") == OCC and el.get("type") == "unavailable")
        assert ROOM not in muc_laptop.get_joined_rooms()
        assert ROOM in muc_phone.get_joined_rooms()
        send_groupchat(b, ROOM, "phone only")
        msg = await phone.next_message()
        while msg["body"] != "phone only":
            msg = await phone.next_message()
        phone.disconnect()
        laptop.disconnect()
        await close(b)
