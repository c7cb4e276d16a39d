"""XEP-0191 Blocking Command: an account's block list, enforced both ways."""

from __future__ import annotations

import json
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Direction, Hooks, IqScope, Priority
from minimix.core.router import Router
from minimix.core.session import Session, SessionRegistry
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, make, new_id
from minimix.protocol.xml import Element, SubElement, local_name, tag
from minimix.storage.stores import DocumentStore

_LIST = tag(ns.BLOCKING, "blocklist")
_BLOCK = tag(ns.BLOCKING, "block")
_UNBLOCK = tag(ns.BLOCKING, "unblock")
_ITEM = tag(ns.BLOCKING, "item")


class BlocklistRequested:
    """Session slot: the client asked for its block list, so it gets block/unblock pushes."""


class Blocking(Extension):
    features = (ns.BLOCKING,)

    def __init__(self, router: Router, sessions: SessionRegistry, documents: DocumentStore):
        self.router = router
        self.sessions = sessions
        self.documents = documents
        self._cache: dict[str, frozenset[str]] = {}

    def register(self, hooks: Hooks) -> None:
        hooks.on_iq("get", _LIST, self.get, IqScope.ACCOUNT)
        hooks.on_iq("set", _BLOCK, self.block, IqScope.ACCOUNT)
        hooks.on_iq("set", _UNBLOCK, self.unblock, IqScope.ACCOUNT)
        for kind in ("message", "presence", "iq"):
            hooks.on_stanza(Direction.OUTBOUND, kind, self.outbound, Priority.FILTER)
            hooks.on_stanza(Direction.INBOUND_BARE, kind, self.inbound, Priority.FILTER)
            hooks.on_stanza(Direction.INBOUND_FULL, kind, self.inbound, Priority.FILTER)
        hooks.on_copies("message", self.inbound_copies, Priority.FILTER)

    def blocked(self, user: str) -> frozenset[str]:
        cached = self._cache.get(user)
        if cached is None:
            text = self.documents.get(user, "blocking", "")
            cached = frozenset(json.loads(text)) if text else frozenset()
            self._cache[user] = cached
        return cached

    def _save(self, user: str, items: frozenset[str]) -> None:
        self.documents.set(user, "blocking", "", json.dumps(sorted(items)) if items else None)
        self._cache[user] = items

    @staticmethod
    def matches(blocked: frozenset[str], jid: JID) -> bool:
        if not blocked:
            return False
        return (
            str(jid) in blocked
            or str(jid.bare) in blocked
            or jid.domain in blocked
            or f"{jid.domain}/{jid.resource}" in blocked
        )

    @staticmethod
    def _owner(iq: Element, origin: Any) -> Session:
        if not isinstance(origin, Session) or iq.get("to") != str(origin.account):
            raise StanzaError("forbidden", "only your own block list")
        return origin

    async def get(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        session.slot(BlocklistRequested, BlocklistRequested)
        out = Element(_LIST)
        for j in sorted(self.blocked(session.account.local)):
            SubElement(out, _ITEM, {"jid": j})
        return out

    def _items(self, el: Element) -> list[str]:
        out = []
        for item in el.findall(_ITEM):
            j = try_parse(item.get("jid"))
            if j is None:
                raise StanzaError("jid-malformed")
            out.append(str(j))
        return out

    async def block(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        items = self._items(iq[0])
        if not items:
            raise StanzaError("bad-request", "name at least one JID")
        user = session.account.local
        self._save(user, self.blocked(user) | frozenset(items))
        for j in items:
            jid = try_parse(j)
            if jid is None:
                continue
            for s in self.sessions.of_account(session.account):
                if s.presence is not None:
                    await self.router.route(
                        make("presence", to=jid, from_=s.jid, type_="unavailable"), None
                    )
        self._push(session.account, "block", items)
        return None

    async def unblock(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        user = session.account.local
        items = self._items(iq[0])
        self._save(user, self.blocked(user) - frozenset(items) if items else frozenset())
        self._push(session.account, "unblock", items)
        return None

    def _push(self, account: JID, what: str, items: list[str]) -> None:
        for s in self.sessions.of_account(account):
            if s.peek_slot(BlocklistRequested) is not None:
                iq = make("iq", to=s.jid, type_="set", id_=new_id())
                el = SubElement(iq, tag(ns.BLOCKING, what))
                for j in items:
                    SubElement(el, _ITEM, {"jid": j})
                s.send(iq)

    async def outbound(self, stanza: Element, session: Session) -> bool:
        blocked = self.blocked(session.account.local)
        to = try_parse(stanza.get("to"))
        if to is None or not self.matches(blocked, to):
            return False
        if local_name(stanza) == "presence":
            return True
        raise StanzaError("not-acceptable", app_error=Element(tag(ns.BLOCKING_ERRORS, "blocked")))

    def inbound_copies(self, stanza: Element, recipients: list[str], origin: Any) -> list[str]:
        """Copies of a message for many accounts: drop the group chat, headlines and errors that
        a recipient blocks (as :meth:`inbound` does); what is to be refused goes the usual way."""
        if stanza.get("type") not in ("error", "groupchat", "headline"):
            return recipients
        frm = try_parse(stanza.get("from"))
        if frm is None:
            return recipients
        domain = self.router.domain
        left = []
        for r in recipients:
            to = try_parse(r)
            if to is None or to.domain != domain or not self.matches(self.blocked(to.local), frm):
                left.append(r)
        return left

    async def inbound(self, stanza: Element, origin: Any) -> bool:
        to = try_parse(stanza.get("to"))
        frm = try_parse(stanza.get("from"))
        if to is None or frm is None:
            return False
        if not self.matches(self.blocked(to.local), frm):
            return False
        kind = local_name(stanza)
        if kind == "iq" and stanza.get("type") in ("get", "set"):
            raise StanzaError("service-unavailable")
        if kind == "message" and stanza.get("type") not in ("error", "groupchat", "headline"):
            raise StanzaError("service-unavailable")
        return True
