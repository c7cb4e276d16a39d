"""Group chat service, end to end: every join error of XEP-0045 §7.2 reaches the client."""

from __future__ import annotations

from pathlib import Path

from minimix.protocol import ns
from tests.e2e.muc_helpers import (
    SERVICE,
    admin_item,
    close,
    codes,
    create,
    error_condition,
    join,
    kind,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.support import running_server

ROOM = f"coven@{SERVICE}"


def _error(stanzas: list) -> tuple[str | None, str | None]:  # type: ignore[type-arg]
    last = stanzas[-1]
    assert kind(last) == "presence" and last.get("type") == "error", stanzas
    err = last.find("{jabber:client}error")
    assert err is not None
    assert last.find(f"{{{ns.MUC}}}x") is not None  # the room echoes <x xmlns='…muc'/>
    return error_condition(last), err.get("type")


async def test_every_join_error(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join={"enabled": False}) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")

        # item-not-found: the room is locked until its owner configures it.
        seq = await join(a, ra, ROOM, "Alice")
        assert "201" in codes(seq[0])
        assert _error(await join(b, rb, ROOM, "Bob", pid="locked")) == ("item-not-found", "cancel")
        result = await send_iq(
            a,
            f"<query xmlns='{ns.MUC_OWNER}'><x xmlns='{ns.DATA}' type='submit'>"
            f"<field var='FORM_TYPE'><value>{ns.MUC_ROOMCONFIG}</value></field>"
            "<field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>"
            "<field var='muc#roomconfig_roomsecret'><value>cauldron</value></field>"
            "<field var='muc#roomconfig_maxusers'><value>2</value></field>"
            "</x></query>",
            ROOM,
            "set",
        )
        assert result.get("type") == "result"

        # jid-malformed: no nick.
        b.send_raw(f"<presence to='{ROOM}' id='nonick'><x xmlns='{ns.MUC}'/></presence>")
        err = await rb.take(lambda el: el.get("id") == "nonick")
        assert error_condition(err) == "jid-malformed"
        # not-authorized: password missing, then wrong.
        assert _error(await join(b, rb, ROOM, "Bob")) == ("not-authorized", "auth")
        assert _error(await join(b, rb, ROOM, "Bob", password="nope"))[0] == "not-authorized"
        # conflict: the nick is taken by someone else.
        assert _error(await join(b, rb, ROOM, "Alice", password="cauldron")) == (
            "conflict",
            "cancel",
        )
        # not-acceptable: a nick of nothing but spaces.
        assert _error(await join(b, rb, ROOM, "  ", password="cauldron")) == (
            "not-acceptable",
            "modify",
        )
        seq = await join(b, rb, ROOM, "Bob", password="cauldron")
        assert "110" in codes(seq[-2])
        # service-unavailable: two occupants is the maximum.
        c, rc = await muc_client(srv, "carol")
        assert _error(await join(c, rc, ROOM, "Carol", password="cauldron")) == (
            "service-unavailable",
            "wait",
        )
        # forbidden: banned.
        ban = await send_iq(
            a, admin_item(affiliation="outcast", jid="carol@localhost"), ROOM, "set"
        )
        assert ban.get("type") == "result"
        assert _error(await join(c, rc, ROOM, "Carol", password="cauldron")) == (
            "forbidden",
            "auth",
        )
        # registration-required: members only.
        await create(a, ra, f"club@{SERVICE}", "Alice", {"muc#roomconfig_membersonly": "1"})
        assert _error(await join(b, rb, f"club@{SERVICE}", "Bob")) == (
            "registration-required",
            "auth",
        )
        # conflict: a nick reserved by a member.
        member = admin_item(affiliation="member", jid="dave@localhost", nick="Dave")
        assert (await send_iq(a, member, f"club@{SERVICE}", "set")).get("type") == "result"
        member_b = admin_item(affiliation="member", jid="bob@localhost")
        assert (await send_iq(a, member_b, f"club@{SERVICE}", "set")).get("type") == "result"
        assert _error(await join(b, rb, f"club@{SERVICE}", "Dave"))[0] == "conflict"
        assert "110" in codes((await join(b, rb, f"club@{SERVICE}", "Bob"))[-2])
        await close(a, b, c)


async def test_room_creation_policy(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, account_join={"enabled": False}, muc={"creation": "admins"}
    ) as srv:
        a, ra = await muc_client(srv, "alice")
        # not-allowed: only the server's admins create rooms here.
        seq = await join(a, ra, ROOM, "Alice")
        assert _error(seq) == ("not-allowed", "cancel")
        # Messages and IQs to rooms that do not exist get item-not-found.
        a.send_raw(f"<message to='{ROOM}' type='groupchat' id='nr'><body>x</body></message>")
        err = await ra.take(lambda el: el.get("id") == "nr")
        assert error_condition(err) == "item-not-found"
        info = await send_iq(a, f"<query xmlns='{ns.DISCO_INFO}'/>", ROOM, "get")
        assert error_condition(info) == "item-not-found"
        await close(a)
