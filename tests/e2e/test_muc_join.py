"""Group chat service, end to end: creating a room, the join flow and its order, group chat."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from minimix.protocol import ns
from tests.e2e.muc_helpers import (
    SERVICE,
    body,
    close,
    codes,
    configure,
    create,
    from_room,
    is_subject,
    item,
    join,
    kind,
    send_groupchat,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.support import running_server

ROOM = f"coven@{SERVICE}"


async def test_create_join_and_talk(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")

        created = await create(a, ra, ROOM, "Alice")
        own = created[0]
        assert kind(own) == "presence" and own.get("from") == f"{ROOM}/Alice"
        assert {"110", "201"} <= codes(own)
        owner_item = item(own)
        assert owner_item is not None
        assert owner_item.get("affiliation") == "owner" and owner_item.get("role") == "moderator"
        assert is_subject(created[-1])

        # Join order (XEP-0045 §7.1): others, self (110, our id), history, subject.
        seq = await join(b, rb, ROOM, "Bob", pid="bob-join")
        assert [kind(el) for el in seq] == ["presence", "presence", "message"]
        assert seq[0].get("from") == f"{ROOM}/Alice"
        assert "110" not in codes(seq[0])
        assert seq[1].get("from") == f"{ROOM}/Bob"
        assert "110" in codes(seq[1]) and seq[1].get("id") == "bob-join"
        bob_item = item(seq[1])
        assert bob_item is not None and bob_item.get("role") == "participant"
        assert bob_item.get("affiliation") == "none"
        assert is_subject(seq[2])
        # Alice (a moderator in a semi-anonymous room) sees Bob join with his real JID.
        seen = await ra.take(lambda el: el.get("from") == f"{ROOM}/Bob")
        seen_item = item(seen)
        assert seen_item is not None and seen_item.get("jid") == "bob@localhost/r"
        # Bob, a participant, does not see Alice's real JID.
        alice_item = item(seq[0])
        assert alice_item is not None and alice_item.get("jid") is None

        mid = send_groupchat(b, ROOM, "Harpier cries", "msg-1")
        for rec in (ra, rb):
            got = await rec.take(lambda el: body(el) == "Harpier cries")
            assert got.get("type") == "groupchat"
            assert got.get("from") == f"{ROOM}/Bob"
            assert got.get("id") == mid  # muc#stable_id
            sid = got.find(f"{{{ns.SID}}}stanza-id")
            assert sid is not None and sid.get("by") == ROOM and sid.get("id")
            oid = got.find(f"{{{ns.OCCUPANT_ID}}}occupant-id")
            assert oid is not None and oid.get("id")
        assert srv.server.router.counters.get("muc_stanzas_out", 0) > 0
        await close(a, b)


async def test_history_and_subject_on_join(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        await create(a, ra, ROOM, "Alice")
        a.send_raw(
            f"<message to='{ROOM}' type='groupchat' id='s1'><subject>Spells</subject></message>"
        )
        await ra.take(
            lambda el: is_subject(el) and el.findtext("{jabber:client}subject") == "Spells"
        )
        for i in range(5):
            send_groupchat(a, ROOM, f"line {i}")
        await ra.take(lambda el: body(el) == "line 4")

        seq = await join(b, rb, ROOM, "Bob", history={"maxstanzas": "3"})
        history = [el for el in seq if body(el) is not None]
        assert [body(el) for el in history] == ["line 2", "line 3", "line 4"]
        for el in history:
            d = el.find(f"{{{ns.DELAY}}}delay")
            assert d is not None and d.get("from") == ROOM and d.get("stamp")
        assert is_subject(seq[-1])
        assert seq[-1].findtext("{jabber:client}subject") == "Spells"
        assert seq[-1].find(f"{{{ns.DELAY}}}delay") is not None
        # The subject comes after the history, the history after the self-presence.
        own_index = next(i for i, el in enumerate(seq) if "110" in codes(el))
        assert own_index < seq.index(history[0])

        c, rc = await muc_client(srv, "carol")
        seq = await join(c, rc, ROOM, "Carol", history={"maxchars": "0"})
        assert not [el for el in seq if body(el) is not None]
        d, rd = await muc_client(srv, "dave")
        seq = await join(d, rd, ROOM, "Dave", history={"since": "2999-01-01T00:00:00Z"})
        assert not [el for el in seq if body(el) is not None]
        e, re_ = await muc_client(srv, "erin")
        seq = await join(e, re_, ROOM, "Erin", history={"seconds": "3600", "maxstanzas": "2"})
        assert [body(el) for el in seq if body(el) is not None] == ["line 3", "line 4"]
        assert all(from_room(ROOM)(el) for el in seq)
        await close(a, b, c, d, e)


def _xml(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode")


async def test_reserved_room_is_configured_before_anyone_enters(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        seq = await join(a, ra, ROOM, "Alice")
        assert "201" in codes(seq[0])
        form = await send_iq(a, f"<query xmlns='{ns.MUC_OWNER}'/>", ROOM, "get")
        x = form.find(f"{{{ns.MUC_OWNER}}}query/{{{ns.DATA}}}x")
        assert x is not None and x.get("type") == "form"
        fields = {f.get("var") for f in x.findall(f"{{{ns.DATA}}}field")}
        assert {
            "muc#roomconfig_roomname",
            "muc#roomconfig_roomdesc",
            "muc#roomconfig_persistentroom",
            "muc#roomconfig_publicroom",
            "muc#roomconfig_membersonly",
            "muc#roomconfig_moderatedroom",
            "muc#roomconfig_passwordprotectedroom",
            "muc#roomconfig_roomsecret",
            "muc#roomconfig_whois",
            "muc#roomconfig_maxusers",
            "muc#maxhistoryfetch",
            "muc#roomconfig_changesubject",
            "muc#roomconfig_allowpm",
            "muc#roomconfig_allowinvites",
        } <= fields
        # Non-owners may not configure.
        denied = await send_iq(b, f"<query xmlns='{ns.MUC_OWNER}'/>", ROOM, "get")
        assert denied.get("type") == "error"
        # Still locked: nobody else can enter until the form is submitted.
        assert (await join(b, rb, ROOM, "Bob"))[-1].get("type") == "error"
        done = await configure(
            a, ROOM, {"muc#roomconfig_roomname": "A Dark Cave", "muc#roomconfig_whois": "anyone"}
        )
        assert done.get("type") == "result"
        seq = await join(b, rb, ROOM, "Bob")
        assert {"100", "110"} <= codes(seq[-2])  # non-anonymous now
        await close(a, b)
