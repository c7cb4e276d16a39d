"""Group chat service, end to end: persistent rooms survive a restart; shutdown says 332."""

from __future__ import annotations

from pathlib import Path

from minimix.protocol import ns
from tests.e2e.muc_helpers import (
    SERVICE,
    admin_item,
    body,
    close,
    codes,
    create,
    error_condition,
    is_subject,
    item,
    join,
    send_groupchat,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.support import running_server

ROOM = f"coven@{SERVICE}"
TEMP = f"pop-up@{SERVICE}"
NO_AUTO_JOIN = {"enabled": False}


async def test_persistent_room_survives_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        await create(
            a,
            ra,
            ROOM,
            "Alice",
            {
                "muc#roomconfig_persistentroom": "1",
                "muc#roomconfig_roomname": "A Dark Cave",
                "muc#roomconfig_roomdesc": "For all good witches",
                "muc#roomconfig_passwordprotectedroom": "1",
                "muc#roomconfig_roomsecret": "cauldron",
            },
        )
        await create(a, ra, TEMP, "Alice")
        for jid, aff in (("bob@localhost", "member"), ("carol@localhost", "outcast")):
            result = await send_iq(a, admin_item(affiliation=aff, jid=jid), ROOM, "set")
            assert result.get("type") == "result"
        a.send_raw(f"<message to='{ROOM}' type='groupchat'><subject>Spells</subject></message>")
        await ra.take(is_subject)
        await join(b, rb, ROOM, "Bob", password="cauldron")
        for i in range(3):
            send_groupchat(a, ROOM, f"before restart {i}")
        before = await rb.take(lambda el: body(el) == "before restart 2")
        oid_before = before.find(f"{{{ns.OCCUPANT_ID}}}occupant-id")
        assert oid_before is not None
    # The service told every occupant it was shutting down (110 + 332).
    for rec, nick in ((ra, "Alice"), (rb, "Bob")):
        notice = await rec.take(
            lambda el, nick=nick: (
                el.get("from") == f"{ROOM}/{nick}"  # type: ignore[misc]
                and el.get("type") == "unavailable"
            )
        )
        assert codes(notice) == {"110", "332"}
    await close(a, b)

    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        c, rc = await muc_client(srv, "carol")
        info = await send_iq(b, f"<query xmlns='{ns.DISCO_INFO}'/>", ROOM)
        identity = info.find(f".//{{{ns.DISCO_INFO}}}identity")
        assert identity is not None and identity.get("name") == "A Dark Cave"
        features = {f.get("var") for f in info.iter(f"{{{ns.DISCO_INFO}}}feature")}
        assert {"muc_persistent", "muc_passwordprotected"} <= features
        # The temporary room is gone.
        gone = await send_iq(b, f"<query xmlns='{ns.DISCO_INFO}'/>", TEMP)
        assert error_condition(gone) == "item-not-found"

        # Configuration (the password), affiliations, history and subject are back.
        assert error_condition((await join(b, rb, ROOM, "Bob"))[-1]) == "not-authorized"
        seq = await join(b, rb, ROOM, "Bob", password="cauldron")
        own = seq[-2 - 3]
        assert "110" in codes(own) and "201" not in codes(own)
        bob = item(own)
        assert bob is not None and bob.get("affiliation") == "member"
        assert [body(el) for el in seq if body(el)] == [f"before restart {i}" for i in range(3)]
        assert seq[-1].findtext("{jabber:client}subject") == "Spells"
        seq = await join(a, ra, ROOM, "Alice")
        alice = item(seq[-2 - 3])
        assert alice is not None and alice.get("affiliation") == "owner"
        assert error_condition((await join(c, rc, ROOM, "Carol", password="cauldron"))[-1]) == (
            "forbidden"
        )
        # Occupant ids stay the same across the restart (the room's secret is stored).
        send_groupchat(a, ROOM, "after restart")
        live = await rb.take(lambda el: body(el) == "after restart")
        oid_live = live.find(f"{{{ns.OCCUPANT_ID}}}occupant-id")
        assert oid_live is not None and oid_live.get("id") == oid_before.get("id")
        await close(a, b, c)
