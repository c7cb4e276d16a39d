"""XEP-0352: an inactive client gets what matters at once; presence noise waits for <active/>."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from minimix.storage.stores import RosterItem
from tests.e2e.account_data_helpers import Capture, SmClient, body, close, send_xml, settle
from tests.support import Client, Running, connect, running_server

CSI = "urn:xmpp:csi:0"
CLIENT = "jabber:client"


def everything(client: Client) -> Capture:
    """Messages and presences, in arrival order."""
    return Capture(client, f"{{{CLIENT}}}*", lambda el: el.tag != f"{{{CLIENT}}}iq")


def friends(srv: Running, *names: str) -> None:
    for a in names:
        for b in names:
            if a != b:
                srv.server.roster_store.put(a, RosterItem(f"{b}@localhost", subscription="both"))


def describe(el: ET.Element) -> str:
    name = el.tag.split("}")[1]
    if name == "presence":
        return f"presence:{el.get('from')}:{el.findtext(f'{{{CLIENT}}}status')}"
    text = body(el)
    return f"message:{text}" if text is not None else "message:-"


async def test_inactive_client_gets_messages_at_once_and_presence_later(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        alice, bob, carol = srv.add_user("alice"), srv.add_user("bob"), srv.add_user("carol")
        friends(srv, "alice", "bob", "carol")
        a = await connect(srv, f"{alice}/phone", plugins=("xep_0030", "xep_0199", "xep_0352"))
        b = await connect(srv, f"{bob}/desk")
        c = await connect(srv, f"{carol}/desk")
        await settle(a, b, c)
        got = everything(a)
        a.send_raw(f"<inactive xmlns='{CSI}'/>")
        await settle(a)

        for status in ("lunch", "back", "meeting"):
            b.send_presence(pshow="away", pstatus=status)
        c.send_presence(pshow="dnd", pstatus="busy")
        await settle(b, c)
        send_xml(
            b,
            f"<message to='{alice}/phone' type='chat'>"
            "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        await settle(b, c, a)
        assert got.items == []  # all of it is noise: held

        b.send_message(mto=alice, mbody="are you there?", mtype="chat")
        await got.wait(1)
        await settle(a)
        # The message came at once; what was held came first, summarised, in order.
        assert [describe(el) for el in got.items] == [
            f"presence:{bob}/desk:meeting",
            f"presence:{carol}/desk:busy",
            "message:-",
            "message:are you there?",
        ]

        got.items.clear()
        c.send_presence(pstatus="free")
        await settle(c)
        send_xml(
            b,
            f"<message to='{alice}/phone' type='chat'>"
            "<paused xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        await settle(b, c, a)
        assert got.items == []
        a.send_raw(f"<active xmlns='{CSI}'/>")
        await got.wait(2)
        await settle(a)
        assert [describe(el) for el in got.items] == [f"presence:{carol}/desk:free", "message:-"]
        # Active again: everything flows as it comes.
        b.send_presence(pstatus="here")
        await got.wait(3)
        assert describe(got.items[2]) == f"presence:{bob}/desk:here"
        await close(a, b, c)


async def test_group_chat_waits_unless_it_mentions_the_client(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        # Bob's account stands in for a room: bob@localhost/<nick> are its occupants.
        room_self = await connect(srv, f"{bob}/Ally")
        speaker = await connect(srv, f"{bob}/Zed")
        send_xml(
            room_self,
            f"<presence to='{alice}/phone'><x xmlns='http://jabber.org/protocol/muc#user'>"
            "<item affiliation='member' role='participant'/><status code='110'/></x></presence>",
        )
        await settle(room_self)
        got = everything(a)
        await settle(a)
        got.items.clear()
        a.send_raw(f"<inactive xmlns='{CSI}'/>")
        await settle(a)

        def groupchat(text: str) -> None:
            send_xml(
                speaker,
                f"<message to='{alice}/phone' type='groupchat'><body>{text}</body></message>",
            )

        groupchat("lunch anyone?")
        groupchat("pizza it is")
        send_xml(
            speaker,
            f"<message to='{alice}/phone' type='groupchat'>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        await settle(speaker, a)
        assert got.items == []
        groupchat("ally, are you coming?")
        await got.wait(4)
        assert [describe(el) for el in got.items] == [
            "message:lunch anyone?",
            "message:pizza it is",
            "message:-",
            "message:ally, are you coming?",
        ]
        await close(a, room_self, speaker)


async def test_resumed_stream_starts_active(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        srv.add_user("alice")
        bob = srv.add_user("bob")
        friends(srv, "alice", "bob")
        phone = await SmClient.login(srv, "alice", "phone")
        assert phone.raw.features is not None
        assert phone.raw.features.find(f"{{{CSI}}}csi") is not None
        b = await connect(srv, f"{bob}/desk")
        await settle(b)
        phone.raw.send_raw(f"<inactive xmlns='{CSI}'/>")
        phone.raw.send_raw("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        while (await phone.next_stanza()).get("id") != "p":
            pass
        phone.ack()
        b.send_presence(pstatus="held")
        await settle(b)
        phone.kill()
        raw, resumed = await phone.resume(srv, "alice")
        assert resumed.tag.endswith("resumed")
        b.send_presence(pstatus="after")
        seen: list[str | None] = []
        while "after" not in seen:
            el = await raw.recv()
            if el.tag == f"{{{CLIENT}}}presence":
                seen.append(el.findtext(f"{{{CLIENT}}}status"))
        assert seen == ["held", "after"]
        raw.close()
        await close(b)
