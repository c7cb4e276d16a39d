"""XEP-0160 offline messages: stored when no client is available, delivered at next login."""

from __future__ import annotations

import logging

from minimix.core.extension import Extension
from minimix.core.hooks import Hooks
from minimix.core.router import Router
from minimix.extensions.roster import ClientAvailable
from minimix.protocol import ns
from minimix.protocol.dates import format_datetime
from minimix.protocol.stanza import StanzaError, copy_shallow, stanza_type
from minimix.protocol.xml import Element, ParseError, SubElement, parse_element, serialize, tag
from minimix.storage.stores import OfflineStore

log = logging.getLogger(__name__)


stamp = format_datetime


class Offline(Extension):
    features = (ns.OFFLINE,)

    def __init__(self, router: Router, store: OfflineStore, domain: str, limit: int) -> None:
        self.router = router
        self.store = store
        self.domain = domain
        self.limit = limit

    def register(self, hooks: Hooks) -> None:
        self.router.undeliverable.append(self.store_message)
        hooks.on_event(ClientAvailable, self.deliver_stored)

    async def store_message(self, stanza: Element) -> bool:
        if stanza_type(stanza) not in ("normal", "chat"):
            return False
        if (
            stanza.find("{jabber:client}body") is None
            and stanza.find("{jabber:x:conference}x") is None
            and stanza.find("{http://jabber.org/protocol/muc#user}x") is None
        ):
            return True  # chat states and receipts alone are not worth keeping: drop silently
        if stanza.find(tag(ns.HINTS, "no-store")) is not None:
            return True
        user = (stanza.get("to") or "").split("@", 1)[0]
        if self.store.count(user) >= self.limit:
            raise StanzaError("resource-constraint", "the recipient's offline store is full")
        self.store.push(user, serialize(stanza))
        return True

    async def deliver_stored(self, event: ClientAvailable) -> None:
        session = event.session
        if session.priority < 0:
            return
        user = session.account.local
        rows = self.store.peek(user)
        delivered: list[int] = []
        for row_id, text, t in rows:
            try:
                el = parse_element(text)
            except ParseError:
                delivered.append(row_id)
                continue
            out = copy_shallow(el, to=str(session.jid))
            if out.find(tag(ns.DELAY, "delay")) is None:
                SubElement(out, tag(ns.DELAY, "delay"), {"from": self.domain, "stamp": stamp(t)})
            session.send(out)
            delivered.append(row_id)
        if delivered:
            self.store.delete(user, delivered)
            log.info("delivered %d offline messages to %s", len(delivered), session.jid)
