"""Bookmarks for account-join tests: published the way clients do (XEP-0402 PEP publish, or the
legacy XEP-0048 forms), falling back to the bookmark events themselves when the server has no
bookmark storage wired."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from minimix.extensions.bookmark_events import Bookmark, BookmarkPublished, BookmarkRetracted
from minimix.protocol import ns
from minimix.protocol.jid import JID
from tests.e2e.muc_helpers import send_iq
from tests.support import Client, Running

PUBLISH_OPTIONS = (
    f"<publish-options><x xmlns='{ns.DATA}' type='submit'>"
    f"<field var='FORM_TYPE' type='hidden'><value>{ns.PUBSUB_PUBLISH_OPTIONS}</value></field>"
    "<field var='pubsub#persist_items'><value>true</value></field>"
    "<field var='pubsub#max_items'><value>max</value></field>"
    "<field var='pubsub#send_last_published_item'><value>never</value></field>"
    "<field var='pubsub#access_model'><value>whitelist</value></field>"
    "</x></publish-options>"
)


def has_bookmarks(srv: Running) -> bool:
    return getattr(srv.server, "bookmarks", None) is not None


async def publish_bookmark(
    srv: Running,
    c: Client,
    room: str,
    *,
    autojoin: bool,
    nick: str | None = None,
    password: str | None = None,
) -> None:
    if not has_bookmarks(srv):
        account = JID.parse(str(c.boundjid.bare))
        b = Bookmark(JID.parse(room), autojoin, None, nick, password)
        await srv.server.hooks.emit(BookmarkPublished(account, b))
        return
    inner = f"<nick>{nick}</nick>" if nick else ""
    inner += f"<password>{password}</password>" if password else ""
    payload = (
        f"<pubsub xmlns='{ns.PUBSUB}'><publish node='{ns.BOOKMARKS}'><item id='{room}'>"
        f"<conference xmlns='{ns.BOOKMARKS}' autojoin='{'true' if autojoin else 'false'}'>"
        f"{inner}</conference></item></publish>{PUBLISH_OPTIONS}</pubsub>"
    )
    res = await send_iq(c, payload, str(c.boundjid.bare), "set")
    assert res.get("type") == "result", ET.tostring(res)


async def retract_bookmark(srv: Running, c: Client, room: str) -> None:
    if not has_bookmarks(srv):
        account = JID.parse(str(c.boundjid.bare))
        await srv.server.hooks.emit(BookmarkRetracted(account, JID.parse(room)))
        return
    payload = (
        f"<pubsub xmlns='{ns.PUBSUB}'><retract node='{ns.BOOKMARKS}' notify='true'>"
        f"<item id='{room}'/></retract></pubsub>"
    )
    res = await send_iq(c, payload, str(c.boundjid.bare), "set")
    assert res.get("type") == "result", ET.tostring(res)


async def publish_legacy_bookmarks(
    srv: Running, c: Client, conferences: list[tuple[str, bool, str]]
) -> None:
    """XEP-0048 in XEP-0049 private storage (the oldest clients' way)."""
    if not has_bookmarks(srv):
        account = JID.parse(str(c.boundjid.bare))
        for room, autojoin, nick in conferences:
            b = Bookmark(JID.parse(room), autojoin, None, nick)
            await srv.server.hooks.emit(BookmarkPublished(account, b))
        return
    confs = "".join(
        f"<conference jid='{room}' autojoin='{'true' if aj else 'false'}'><nick>{nick}</nick>"
        "</conference>"
        for room, aj, nick in conferences
    )
    payload = (
        f"<query xmlns='{ns.PRIVATE}'><storage xmlns='{ns.LEGACY_BOOKMARKS}'>{confs}"
        "</storage></query>"
    )
    res = await send_iq(c, payload, str(c.boundjid.bare), "set")
    assert res.get("type") == "result", ET.tostring(res)
