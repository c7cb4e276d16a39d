"""XEP-0402 PEP Native Bookmarks, kept in sync with both XEP-0048 forms; XEP-0049 private XML.

The ``urn:xmpp:bookmarks:1`` node (one item per room) is the source of truth. Whatever form a
client writes — an item on that node, the legacy ``storage:bookmarks`` PEP node (XEP-0223) or
``<storage xmlns='storage:bookmarks'/>`` in private XML storage (XEP-0049) — the other two are
rewritten to match (``#compat`` and ``#compat-pep``), clients get PEP notifications for what
changed, and other server features get :class:`BookmarkPublished` / :class:`BookmarkRetracted`
events. :meth:`Bookmarks.bookmarks` returns an account's current bookmarks.

Private XML storage is generic: any namespace a client stores is kept per account.
"""

from __future__ import annotations

import logging
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Hooks, IqScope
from minimix.core.locks import KeyedLock
from minimix.core.session import Session
from minimix.extensions.bookmark_events import Bookmark, BookmarkPublished, BookmarkRetracted
from minimix.extensions.pep import NodeChange, Pep, pubsub_error
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, ParseError, SubElement, parse_element, serialize, tag
from minimix.storage.stores import DocumentStore

log = logging.getLogger(__name__)

_QUERY = tag(ns.PRIVATE, "query")
_STORAGE = tag(ns.LEGACY_BOOKMARKS, "storage")
_LEGACY_CONFERENCE = tag(ns.LEGACY_BOOKMARKS, "conference")
_CONFERENCE = tag(ns.BOOKMARKS, "conference")
_PRIVATE_STORE = "private"
_LEGACY_ITEM = "current"
_RESERVED_PREFIXES = ("jabber:", "http://jabber.org/", "vcard-temp")

# XEP-0402 §3 (publish-options) and XEP-0048/XEP-0223 node configurations.
NATIVE_CONFIG: dict[str, Any] = {
    "access_model": "whitelist",
    "max_items": None,
    "persist_items": True,
    "send_last_published_item": "never",
}
LEGACY_CONFIG: dict[str, Any] = {"access_model": "whitelist", "persist_items": True}


def _truthy(value: str | None) -> bool:
    return value in ("true", "1")


def from_native(item_id: str, payload: Element) -> Bookmark | None:
    """A bookmark from an item of the native node (item id = the room's JID)."""
    room = try_parse(item_id)
    if payload.tag != _CONFERENCE or room is None or room.resource or not room.local:
        return None
    return Bookmark(
        room=room,
        autojoin=_truthy(payload.get("autojoin")),
        name=payload.get("name") or None,
        nick=payload.findtext(tag(ns.BOOKMARKS, "nick")) or None,
        password=payload.findtext(tag(ns.BOOKMARKS, "password")) or None,
    )


def from_legacy(conference: Element) -> Bookmark | None:
    room = try_parse(conference.get("jid"))
    if room is None or room.resource or not room.local:
        return None
    return Bookmark(
        room=room,
        autojoin=_truthy(conference.get("autojoin")),
        name=conference.get("name") or None,
        nick=conference.findtext(tag(ns.LEGACY_BOOKMARKS, "nick")) or None,
        password=conference.findtext(tag(ns.LEGACY_BOOKMARKS, "password")) or None,
    )


def native_payload(b: Bookmark, extensions: Element | None = None) -> Element:
    attrs = {"autojoin": "true" if b.autojoin else "false"}
    if b.name:
        attrs["name"] = b.name
    el = Element(_CONFERENCE, attrs)
    if b.nick:
        SubElement(el, tag(ns.BOOKMARKS, "nick")).text = b.nick
    if b.password:
        SubElement(el, tag(ns.BOOKMARKS, "password")).text = b.password
    if extensions is not None:
        el.append(extensions)
    return el


def legacy_conference(b: Bookmark) -> Element:
    attrs = {"jid": str(b.room), "autojoin": "true" if b.autojoin else "false"}
    if b.name:
        attrs["name"] = b.name
    el = Element(_LEGACY_CONFERENCE, attrs)
    if b.nick:
        SubElement(el, tag(ns.LEGACY_BOOKMARKS, "nick")).text = b.nick
    if b.password:
        SubElement(el, tag(ns.LEGACY_BOOKMARKS, "password")).text = b.password
    return el


def _parse(text: str) -> Element | None:
    try:
        return parse_element(text)
    except ParseError:
        return None


class Bookmarks(Extension):
    account_features = (ns.BOOKMARKS_COMPAT, ns.BOOKMARKS_COMPAT_PEP, ns.PRIVATE)

    def __init__(self, pep: Pep, documents: DocumentStore) -> None:
        self.pep = pep
        self.documents = documents
        self.hooks: Hooks | None = None
        self._locks = KeyedLock()

    def register(self, hooks: Hooks) -> None:
        self.hooks = hooks
        hooks.on_iq("get", _QUERY, self.private_get, IqScope.ACCOUNT)
        hooks.on_iq("set", _QUERY, self.private_set, IqScope.ACCOUNT)
        self.pep.node_defaults(ns.BOOKMARKS, NATIVE_CONFIG)
        self.pep.node_defaults(ns.LEGACY_BOOKMARKS, LEGACY_CONFIG)
        self.pep.validate(ns.BOOKMARKS, self._check_native)
        self.pep.validate(ns.LEGACY_BOOKMARKS, self._check_legacy)
        self.pep.watch(ns.BOOKMARKS, self._native_changed)
        self.pep.watch(ns.LEGACY_BOOKMARKS, self._legacy_changed)

    # ------------------------------------------------------------------ reading
    def bookmarks(self, account: JID) -> list[Bookmark]:
        """The account's current bookmarks (from the XEP-0402 node), ordered by room."""
        out: list[Bookmark] = []
        for item in self.pep.items(account.bare, ns.BOOKMARKS):
            payload = _parse(item.payload)
            b = from_native(item.id, payload) if payload is not None else None
            if b is not None:
                out.append(b)
        return sorted(out, key=lambda b: str(b.room))

    def _native_extensions(self, account: JID) -> dict[str, Element]:
        out: dict[str, Element] = {}
        for item in self.pep.items(account, ns.BOOKMARKS):
            payload = _parse(item.payload)
            ext = payload.find(tag(ns.BOOKMARKS, "extensions")) if payload is not None else None
            if ext is not None:
                out[item.id] = ext
        return out

    def legacy_storage(self, account: JID) -> Element:
        """The XEP-0048 ``<storage/>`` for the account: every bookmark, plus stored URLs."""
        storage = Element(_STORAGE)
        for b in self.bookmarks(account):
            storage.append(legacy_conference(b))
        previous = self.documents.get(account.local, _PRIVATE_STORE, _STORAGE)
        old = _parse(previous) if previous else None
        if old is not None:
            for url in old.findall(tag(ns.LEGACY_BOOKMARKS, "url")):
                storage.append(url)
        return storage

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_native(item_id: str, payload: Element) -> None:
        if payload.tag != _CONFERENCE:
            raise pubsub_error("bad-request", "invalid-payload")
        room = try_parse(item_id)
        if room is None or room.resource or not room.local:
            raise StanzaError("bad-request", "the item id must be the room's JID")

    @staticmethod
    def _check_legacy(item_id: str, payload: Element) -> None:
        if payload.tag != _STORAGE:
            raise pubsub_error("bad-request", "invalid-payload")

    # ------------------------------------------------------------------ events
    async def _emit(self, event: object) -> None:
        if self.hooks is not None:
            await self.hooks.emit(event)

    async def _native_changed(self, change: NodeChange) -> None:
        """A client wrote the native node: tell the server, rewrite both legacy forms."""
        account = change.owner
        async with self._locks.hold(account):
            if change.kind == "published" and change.payload is not None and change.item_id:
                b = from_native(change.item_id, change.payload)
                if b is not None:
                    await self._emit(BookmarkPublished(account, b))
            for removed in change.removed:
                if change.kind == "published" and removed == change.item_id:
                    continue  # replaced, not removed
                room = try_parse(removed)
                if room is not None:
                    await self._emit(BookmarkRetracted(account, room))
            await self._write_legacy(account, pep_node=True)

    async def _legacy_changed(self, change: NodeChange) -> None:
        """A client wrote the legacy PEP node: apply its list, rewrite private storage."""
        account = change.owner
        async with self._locks.hold(account):
            storage = change.payload if change.kind == "published" else None
            await self._apply_legacy(account, storage)
            self._store_private_storage(account, storage)

    async def _apply_legacy(self, account: JID, storage: Element | None) -> None:
        """Make the native node hold exactly the conferences of ``storage`` (None: none).

        Unchanged bookmarks are left alone (no notification, no event); changed and new ones
        are published, missing ones retracted (XEP-0402 §5.3.2).
        """
        wanted: dict[JID, Bookmark] = {}
        for conf in storage.findall(_LEGACY_CONFERENCE) if storage is not None else []:
            b = from_legacy(conf)
            if b is not None:
                wanted[b.room] = b
        current = {b.room: b for b in self.bookmarks(account)}
        extensions = self._native_extensions(account)
        for room, b in wanted.items():
            if current.get(room) == b:
                continue
            payload = native_payload(b, extensions.get(str(room)))
            await self.pep.publish(
                account, ns.BOOKMARKS, str(room), payload, options=None, watchers=False
            )
            await self._emit(BookmarkPublished(account, b))
        for room in current:
            if room not in wanted:
                await self.pep.retract(account, ns.BOOKMARKS, str(room), watchers=False)
                await self._emit(BookmarkRetracted(account, room))

    async def _write_legacy(self, account: JID, pep_node: bool) -> None:
        storage = self.legacy_storage(account)
        self._store_private_storage(account, storage)
        if pep_node and (len(storage) or self.pep.config(account, ns.LEGACY_BOOKMARKS) is not None):
            await self.pep.publish(
                account, ns.LEGACY_BOOKMARKS, _LEGACY_ITEM, storage, watchers=False
            )

    def _store_private_storage(self, account: JID, storage: Element | None) -> None:
        if storage is None:
            storage = Element(_STORAGE)
        self.documents.set(account.local, _PRIVATE_STORE, _STORAGE, serialize(storage, ""))

    # ------------------------------------------------------------------ private XML (XEP-0049)
    @staticmethod
    def _owner(iq: Element, origin: Any) -> Session:
        if not isinstance(origin, Session) or iq.get("to") not in (None, str(origin.account)):
            raise StanzaError("forbidden", "only your own private storage")
        return origin

    @staticmethod
    def _checked_children(query: Element) -> list[Element]:
        kids = list(query)
        if not kids:
            raise StanzaError("not-acceptable", "say which namespace")
        for el in kids:
            uri = el.tag[1 : el.tag.index("}")] if el.tag.startswith("{") else ""
            if not uri or uri.startswith(_RESERVED_PREFIXES):
                raise StanzaError("not-acceptable", "that namespace is reserved")
        return kids

    async def private_get(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        kids = self._checked_children(iq[0])
        if len(kids) != 1:
            raise StanzaError("not-acceptable", "one namespace at a time")
        wanted = kids[0]
        out = Element(_QUERY)
        if wanted.tag == _STORAGE:
            out.append(self.legacy_storage(session.account))
            return out
        text = self.documents.get(session.account.local, _PRIVATE_STORE, wanted.tag)
        stored = _parse(text) if text else None
        out.append(stored if stored is not None else Element(wanted.tag))
        return out

    async def private_set(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        account = session.account
        for el in self._checked_children(iq[0]):
            if el.tag == _STORAGE:
                async with self._locks.hold(account):
                    await self._apply_legacy(account, el)
                    self._store_private_storage(account, el)
                    if len(el) or self.pep.config(account, ns.LEGACY_BOOKMARKS) is not None:
                        storage = self.legacy_storage(account)
                        await self.pep.publish(
                            account, ns.LEGACY_BOOKMARKS, _LEGACY_ITEM, storage, watchers=False
                        )
            else:
                self.documents.set(account.local, _PRIVATE_STORE, el.tag, serialize(el, ""))
        return None
