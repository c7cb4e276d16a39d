"""Bookmarks: XEP-0402 and both XEP-0048 forms stay in sync, every way round, with events."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from minimix.extensions.bookmark_events import Bookmark, BookmarkPublished, BookmarkRetracted
from minimix.protocol.jid import JID
from tests.e2e.account_data_helpers import (
    PUBSUB,
    close,
    error_condition,
    events,
    eventually,
    iq_xml,
    item_ids,
    items,
    option,
    pep_client,
    publish,
    settle,
)
from tests.support import Client, Running, running_server

NATIVE = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
PRIVATE = "jabber:iq:private"
EVENT = f"{PUBSUB}#event"
ROOM1 = "coven@conference.localhost"
ROOM2 = "tavern@conference.localhost"
NATIVE_OPTIONS = (
    option("persist_items", "true")
    + option("max_items", "max")
    + option("send_last_published_item", "never")
    + option("access_model", "whitelist")
)


class Events:
    """Bookmark events the server emits, as (kind, room, autojoin)."""

    def __init__(self, srv: Running) -> None:
        self.seen: list[tuple[str, str, bool | None]] = []

        async def published(ev: BookmarkPublished) -> None:
            self.seen.append(("published", str(ev.bookmark.room), ev.bookmark.autojoin))

        async def retracted(ev: BookmarkRetracted) -> None:
            self.seen.append(("retracted", str(ev.room), None))

        srv.server.hooks.on_event(BookmarkPublished, published)
        srv.server.hooks.on_event(BookmarkRetracted, retracted)


def native(
    autojoin: bool, name: str = "", nick: str = "", password: str = "", ext: str = ""
) -> str:
    attrs = f" autojoin='{'true' if autojoin else 'false'}'"
    if name:
        attrs += f" name='{name}'"
    inner = f"<nick>{nick}</nick>" if nick else ""
    inner += f"<password>{password}</password>" if password else ""
    inner += f"<extensions>{ext}</extensions>" if ext else ""
    return f"<conference xmlns='{NATIVE}'{attrs}>{inner}</conference>"


def legacy(*conferences: tuple[str, bool, str], urls: str = "") -> str:
    out = f"<storage xmlns='{LEGACY}'>"
    for jid, autojoin, nick in conferences:
        out += f"<conference jid='{jid}' autojoin='{'true' if autojoin else 'false'}'>"
        out += f"<nick>{nick}</nick></conference>"
    return out + urls + "</storage>"


async def private_storage(client: Client) -> ET.Element:
    q = await iq_xml(client, "get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>")
    storage = q.find(f"{{{LEGACY}}}storage")
    assert storage is not None, ET.tostring(q)
    return storage


def conferences(storage: ET.Element) -> dict[str, dict[str, str | None]]:
    return {
        c.get("jid", ""): {
            "autojoin": c.get("autojoin"),
            "name": c.get("name"),
            "nick": c.findtext(f"{{{LEGACY}}}nick"),
            "password": c.findtext(f"{{{LEGACY}}}password"),
        }
        for c in storage.findall(f"{{{LEGACY}}}conference")
    }


async def legacy_pep(client: Client, owner: str) -> ET.Element:
    res = await items(client, owner, LEGACY)
    storage = res.find(f".//{{{PUBSUB}}}item/{{{LEGACY}}}storage")
    assert storage is not None, ET.tostring(res)
    return storage


async def native_items(client: Client, owner: str) -> dict[str, ET.Element]:
    res = await items(client, owner, NATIVE)
    out: dict[str, ET.Element] = {}
    for item in res.iter(f"{{{PUBSUB}}}item"):
        conf = item.find(f"{{{NATIVE}}}conference")
        assert conf is not None
        out[item.get("id", "")] = conf
    return out


async def test_native_bookmarks_read_in_both_old_forms(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        seen = Events(srv)
        phone = await pep_client(srv, f"{alice}/phone", NATIVE)
        old = await pep_client(srv, f"{alice}/old", LEGACY)
        phone_events, old_events = events(phone), events(old)

        await publish(
            phone, NATIVE, native(True, "The Coven", "hecate", "cauldron"), ROOM1, NATIVE_OPTIONS
        )
        (ev,) = await phone_events.wait(1)
        assert ev.find(f".//{{{EVENT}}}item").get("id") == ROOM1  # type: ignore[union-attr]
        (legacy_ev,) = await old_events.wait(1)
        pushed = legacy_ev.find(f".//{{{EVENT}}}item/{{{LEGACY}}}storage")
        assert pushed is not None and ROOM1 in conferences(pushed)

        expected = {
            ROOM1: {
                "autojoin": "true",
                "name": "The Coven",
                "nick": "hecate",
                "password": "cauldron",
            }
        }
        assert conferences(await private_storage(old)) == expected
        assert conferences(await legacy_pep(old, alice)) == expected
        assert seen.seen == [("published", ROOM1, True)]
        assert srv.server.bookmarks.bookmarks(JID.parse(alice)) == [
            Bookmark(JID.parse(ROOM1), True, "The Coven", "hecate", "cauldron")
        ]

        # Turning autojoin off and removing the bookmark show up everywhere as well.
        await publish(phone, NATIVE, native(False, "The Coven", "hecate"), ROOM1, NATIVE_OPTIONS)
        assert conferences(await private_storage(old))[ROOM1]["autojoin"] == "false"
        await iq_xml(
            phone,
            "set",
            f"<pubsub xmlns='{PUBSUB}'><retract node='{NATIVE}' notify='true'>"
            f"<item id='{ROOM1}'/></retract></pubsub>",
        )
        assert conferences(await private_storage(old)) == {}
        assert conferences(await legacy_pep(old, alice)) == {}
        assert seen.seen[1:] == [("published", ROOM1, False), ("retracted", ROOM1, None)]
        await close(phone, old)


async def test_private_storage_writes_reach_the_native_node(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        seen = Events(srv)
        modern = await pep_client(srv, f"{alice}/modern", NATIVE)
        old = await pep_client(srv, f"{alice}/old")
        got = events(modern)
        url = "<url name='Home' url='https://example.org/'/>"
        await iq_xml(
            old,
            "set",
            f"<query xmlns='{PRIVATE}'>"
            + legacy((ROOM1, True, "hecate"), (ROOM2, False, "barkeep"), urls=url)
            + "</query>",
        )
        await got.wait(2)
        now = await native_items(modern, alice)
        assert set(now) == {ROOM1, ROOM2}
        assert now[ROOM1].get("autojoin") == "true"
        assert now[ROOM1].findtext(f"{{{NATIVE}}}nick") == "hecate"
        assert now[ROOM2].get("autojoin") == "false"
        assert sorted(seen.seen) == [("published", ROOM1, True), ("published", ROOM2, False)]

        # Rewrite the list: ROOM1 unchanged (no notification, no event), ROOM2 dropped.
        seen.seen.clear()
        await iq_xml(
            old,
            "set",
            f"<query xmlns='{PRIVATE}'>" + legacy((ROOM1, True, "hecate"), urls=url) + "</query>",
        )
        (retract,) = (await got.wait(3))[2:]
        assert retract.find(f".//{{{EVENT}}}retract").get("id") == ROOM2  # type: ignore[union-attr]
        await settle(modern)
        assert len(got.items) == 3
        assert seen.seen == [("retracted", ROOM2, None)]
        assert set(await native_items(modern, alice)) == {ROOM1}
        # The web bookmark stays in the old form; the legacy PEP node matches too.
        storage = await private_storage(old)
        assert storage.find(f"{{{LEGACY}}}url") is not None
        assert set(conferences(await legacy_pep(old, alice))) == {ROOM1}
        await close(modern, old)


async def test_legacy_pep_writes_reach_the_other_forms(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        seen = Events(srv)
        a = await pep_client(srv, f"{alice}/phone", NATIVE)
        got = events(a)
        # A native bookmark with client extensions first...
        ext = "<state xmlns='urn:example:client'>pinned</state>"
        await publish(a, NATIVE, native(False, nick="hecate", ext=ext), ROOM1, NATIVE_OPTIONS)
        await got.wait(1)
        # ...then an old client rewrites the list through the legacy PEP node.
        await publish(
            a,
            LEGACY,
            legacy((ROOM1, True, "hecate"), (ROOM2, True, "barkeep")),
            "current",
            option("persist_items", "true") + option("access_model", "whitelist"),
        )
        await got.wait(3)
        now = await native_items(a, alice)
        assert now[ROOM1].get("autojoin") == "true"
        kept = now[ROOM1].find(f"{{{NATIVE}}}extensions/{{urn:example:client}}state")
        assert kept is not None and kept.text == "pinned"  # extensions survive the old form
        assert set(conferences(await private_storage(a))) == {ROOM1, ROOM2}
        assert seen.seen == [
            ("published", ROOM1, False),
            ("published", ROOM1, True),
            ("published", ROOM2, True),
        ]
        # Deleting the native node removes every bookmark from every form.
        seen.seen.clear()
        await iq_xml(a, "set", f"<pubsub xmlns='{PUBSUB}#owner'><delete node='{NATIVE}'/></pubsub>")
        await eventually(lambda: len(seen.seen) == 2)
        assert sorted(seen.seen) == [("retracted", ROOM1, None), ("retracted", ROOM2, None)]
        assert conferences(await private_storage(a)) == {}
        assert conferences(await legacy_pep(a, alice)) == {}
        assert srv.server.bookmarks.bookmarks(JID.parse(alice)) == []
        await close(a)


async def test_rules_and_generic_private_storage(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        a = await pep_client(srv, f"{alice}/phone")
        b = await pep_client(srv, f"{bob}/desk")
        info = await iq_xml(
            a, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=alice
        )
        features = {f.get("var") for f in info.findall("{*}feature")}
        assert {f"{NATIVE}#compat", f"{NATIVE}#compat-pep", PRIVATE} <= features
        # an item id that is not a room's JID, a payload that is not a conference
        bad = await publish(a, NATIVE, native(True), "not a jid", NATIVE_OPTIONS)
        assert error_condition(bad) == "bad-request"
        bad = await publish(a, NATIVE, "<other xmlns='urn:example'/>", ROOM1, NATIVE_OPTIONS)
        assert error_condition(bad) == "bad-request"
        # the native node is private: whitelist
        await publish(a, NATIVE, native(True), ROOM1, NATIVE_OPTIONS)
        assert error_condition(await items(b, alice, NATIVE)) == "not-allowed"
        assert item_ids(await items(a, alice, NATIVE)) == [ROOM1]

        # any namespace can be stored privately, and read back only by its owner
        note = "<note xmlns='urn:example:notes'>milk</note>"
        await iq_xml(a, "set", f"<query xmlns='{PRIVATE}'>{note}</query>")
        got = await iq_xml(
            a, "get", f"<query xmlns='{PRIVATE}'><note xmlns='urn:example:notes'/></query>"
        )
        assert got.findtext("{urn:example:notes}note") == "milk"
        empty = await iq_xml(
            a, "get", f"<query xmlns='{PRIVATE}'><other xmlns='urn:example:none'/></query>"
        )
        assert empty.find("{urn:example:none}other") is not None
        foreign = await iq_xml(
            b,
            "get",
            f"<query xmlns='{PRIVATE}'><note xmlns='urn:example:notes'/></query>",
            to=alice,
        )
        assert error_condition(foreign) in ("forbidden", "service-unavailable")
        reserved = await iq_xml(
            a, "set", f"<query xmlns='{PRIVATE}'><x xmlns='jabber:x:data'/></query>"
        )
        assert error_condition(reserved) == "not-acceptable"
        nothing = await iq_xml(a, "get", f"<query xmlns='{PRIVATE}'/>")
        assert error_condition(nothing) == "not-acceptable"
        await close(a, b)


async def test_slixmpp_legacy_client_sees_native_bookmarks(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        modern = await pep_client(srv, f"{alice}/modern")
        await publish(modern, NATIVE, native(True, "Coven", "hecate"), ROOM1, NATIVE_OPTIONS)
        old = await pep_client(srv, f"{alice}/old")
        old.register_plugin("xep_0049")
        old.register_plugin("xep_0048")
        result = await old.plugin["xep_0048"].get_bookmarks(method="xep_0049")
        conf = result["private"]["bookmarks"]["conferences"]
        assert [(str(c["jid"]), c["autojoin"], c["nick"]) for c in conf] == [
            (ROOM1, True, "hecate")
        ]
        await close(modern, old)
