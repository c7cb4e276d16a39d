"""The group chat service driven only through slixmpp's own XEP-0045 plugin, as an unmodified
client would use it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from slixmpp import JID

from tests.e2e.muc_helpers import SERVICE, Recorder, close, codes, from_jid
from tests.support import Client, Running, connect, running_server

ROOM = JID(f"plugin@{SERVICE}")
PLUGINS = ("xep_0030", "xep_0199", "xep_0004", "xep_0045")


async def _client(srv: Running, name: str) -> tuple[Client, Recorder]:
    srv.add_user(name)
    c = await connect(srv, f"{name}@localhost/lib", plugins=PLUGINS)
    return c, Recorder(c)


async def test_slixmpp_muc_plugin_end_to_end(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        a, ra = await _client(srv, "alice")
        b, rb = await _client(srv, "bob")
        muc_a = a.plugin["xep_0045"]
        muc_b = b.plugin["xep_0045"]

        own, _subject, _occupants, _history = await muc_a.join_muc_wait(ROOM, "Alice", timeout=5)
        assert own["muc"]["affiliation"] == "owner"
        assert "201" in codes(own.xml)
        form = await muc_a.get_room_config(ROOM, timeout=5)
        fields = form.get_fields()
        assert "muc#roomconfig_roomname" in fields
        form.set_values({"muc#roomconfig_roomname": "Plugin room"})
        await muc_a.set_room_config(ROOM, form, timeout=5)

        for i in range(3):
            a.send_message(mto=ROOM, mbody=f"before {i}", mtype="groupchat")
        await ra.take(lambda el: el.findtext("{jabber:client}body") == "before 2")
        own_b, subject, occupants, history = await muc_b.join_muc_wait(
            ROOM, "Bob", maxstanzas=2, timeout=5
        )
        assert own_b["muc"]["role"] == "participant"
        assert [m["body"] for m in history] == ["before 1", "before 2"]
        assert [p["from"].resource for p in occupants] == ["Alice", "Bob"]  # self last
        assert not subject["subject"]  # no subject set: an empty <subject/>
        assert sorted(muc_a.get_roster(ROOM)) == ["Alice", "Bob"]

        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        b.add_event_handler(
            "groupchat_message",
            lambda m: got.done() or got.set_result(f"{m['mucnick']}: {m['body']}"),
        )
        a.send_message(mto=ROOM, mbody="welcome", mtype="groupchat")
        assert await asyncio.wait_for(got, 5) == "Alice: welcome"

        await muc_a.set_affiliation(ROOM, "member", jid=JID("bob@localhost"), timeout=5)
        assert await muc_a.get_affiliation_list(ROOM, "member", timeout=5) == [JID("bob@localhost")]
        assert await muc_a.get_roles_list(ROOM, "participant", timeout=5) == ["Bob"]
        await muc_a.set_role(ROOM, "Bob", "none", reason="bye", timeout=5)
        kicked = await rb.take(
            lambda el: from_jid(f"{ROOM}/Bob")(el) and el.get("type") == "unavailable"
        )
        assert codes(kicked) == {"110", "307"}
        await muc_a.destroy(ROOM, reason="done", timeout=5)
        await ra.take(lambda el: from_jid(f"{ROOM}/Alice")(el) and el.get("type") == "unavailable")
        await close(a, b)
