"""RFC 6121 rosters and presence: the subscription state machine, broadcast, probes,
directed presence and roster versioning (XEP-0237 style ``ver``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Direction, Hooks, IqScope, Priority
from minimix.core.router import Router
from minimix.core.session import Session, SessionRegistry
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, copy_shallow, make, new_id
from minimix.protocol.xml import Element, ParseError, SubElement, parse_element, serialize, tag
from minimix.storage.stores import DocumentStore, RosterItem, RosterStore

log = logging.getLogger(__name__)

_QUERY = tag(ns.ROSTER, "query")
_ITEM = tag(ns.ROSTER, "item")
SUBSCRIPTION_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))
_PENDING = "subscription-requests"


@dataclass(slots=True)
class ClientAvailable:
    """A client sent its initial available presence."""

    session: Session


@dataclass(slots=True)
class ClientUnavailable:
    """A client that was available went unavailable (presence or disconnect)."""

    session: Session


class Roster(Extension):
    """Roster management (jabber:iq:roster) and presence (RFC 6121 §3-4)."""

    features = (ns.ROSTER_VER, ns.PRE_APPROVAL)

    def __init__(
        self,
        router: Router,
        sessions: SessionRegistry,
        store: RosterStore,
        documents: DocumentStore,
    ) -> None:
        self.router = router
        self.sessions = sessions
        self.store = store
        self.documents = documents
        self.hooks: Hooks | None = None

    def register(self, hooks: Hooks) -> None:
        self.hooks = hooks
        hooks.on_iq("get", _QUERY, self.get_roster, IqScope.ACCOUNT)
        hooks.on_iq("set", _QUERY, self.set_roster, IqScope.ACCOUNT)
        hooks.on_stanza(Direction.OUTBOUND, "presence", self.outbound_presence, Priority.NORMAL)
        hooks.on_stanza(Direction.INBOUND_BARE, "presence", self.inbound_presence, Priority.NORMAL)
        hooks.on_stanza(Direction.INBOUND_FULL, "presence", self.inbound_full, Priority.NORMAL)

    def stream_features(self, authenticated: bool, bound: bool) -> list[Element]:
        if authenticated:
            # RFC 6121 §2.6.1 roster versioning and §3.4 subscription pre-approval.
            return [Element(tag(ns.ROSTER_VER, "ver")), Element(tag(ns.PRE_APPROVAL, "sub"))]
        return []

    # ------------------------------------------------------------------ roster iq
    @staticmethod
    def _own(iq: Element, origin: Any) -> Session:
        if not isinstance(origin, Session) or str(origin.account) != (
            iq.get("to") or str(origin.account)
        ):
            raise StanzaError("forbidden", "only your own roster")
        return origin

    async def get_roster(self, iq: Element, origin: Any) -> Element | None:
        session = self._own(iq, origin)
        session.interested = True
        user = session.account.local
        version = str(self.store.version(user))
        asked = iq[0].get("ver")
        if asked is not None and asked == version:
            return None
        q = Element(_QUERY, {"ver": version})
        for item in self.store.items(user):
            q.append(item_element(item))
        return q

    async def set_roster(self, iq: Element, origin: Any) -> Element | None:
        session = self._own(iq, origin)
        items = iq[0].findall(_ITEM)
        if len(items) != 1:
            raise StanzaError("bad-request", "exactly one item")
        el = items[0]
        contact = try_parse(el.get("jid"))
        if contact is None:
            raise StanzaError("jid-malformed" if el.get("jid") else "bad-request")
        contact = contact.bare
        user = session.account.local
        if contact == session.account:
            raise StanzaError("not-allowed", "you are not your own contact")
        if el.get("subscription") == "remove":
            item = self.store.get(user, str(contact))
            if item is None:
                raise StanzaError("item-not-found")
            if item.subscription in ("from", "both"):
                await self._send(session.account, contact, "unsubscribed")
                await self._unavailable_to(session.account, contact)
            if item.subscription in ("to", "both") or item.ask:
                await self._send(session.account, contact, "unsubscribe")
            version = self.store.remove(user, str(contact))
            self.documents.set(user, _PENDING, str(contact), None)
            await self.push(
                session.account, RosterItem(str(contact), subscription="remove"), version
            )
            return None
        groups = [g.text or "" for g in el.findall(tag(ns.ROSTER, "group"))]
        if len(set(groups)) != len(groups) or any(not g for g in groups):
            raise StanzaError("bad-request", "duplicate or empty group")
        item = self.store.get(user, str(contact)) or RosterItem(str(contact))
        item.name = el.get("name") or None
        item.groups = groups
        version = self.store.put(user, item)
        await self.push(session.account, item, version)
        return None

    async def push(self, account: JID, item: RosterItem, version: int) -> None:
        for s in self.sessions.of_account(account):
            if s.interested:
                iq = make("iq", to=s.jid, type_="set", id_=new_id())
                q = SubElement(iq, _QUERY, {"ver": str(version)})
                q.append(item_element(item))
                s.send(iq)

    def subscription(self, account: JID, contact: JID) -> str:
        item = self.store.get(account.local, str(contact.bare))
        return item.subscription if item else "none"

    # ------------------------------------------------------------------ outbound presence
    async def outbound_presence(self, stanza: Element, session: Session) -> bool:
        ptype = stanza.get("type")
        to_attr = stanza.get("to")
        if to_attr is None:
            if ptype in (None, "unavailable"):
                await self._broadcast(session, stanza)
                return True
            if ptype in SUBSCRIPTION_TYPES:
                raise StanzaError("bad-request")
            return ptype == "probe" or ptype == "error"
        to = try_parse(to_attr)
        if to is None:
            return False
        if ptype in SUBSCRIPTION_TYPES:
            await self._outbound_subscription(session, to.bare, str(ptype), stanza)
            return True
        if ptype == "probe":
            return True  # clients do not probe (RFC 6121 §4.3)
        if ptype in (None, "unavailable"):
            if ptype is None:
                session.directed.add(to)
            else:
                session.directed.discard(to)
        return False

    async def _broadcast(self, session: Session, stanza: Element) -> None:
        account = session.account
        user = account.local
        available = stanza.get("type") is None
        was_available = session.available
        if available:
            prio = stanza.findtext("{jabber:client}priority")
            try:
                session.priority = max(-128, min(127, int(prio))) if prio else 0
            except ValueError:
                session.priority = 0
            session.presence = stanza
        else:
            session.presence = None
        items = self.store.items(user)
        out = copy_shallow(stanza, to=None)
        # Contacts with a 'from' subscription see it.
        for item in items:
            if item.subscription in ("from", "both"):
                contact = try_parse(item.contact)
                if contact is not None:
                    await self.router.route(copy_shallow(out, to=str(contact)), session)
        # The account's other available clients see it.
        for other in self.sessions.of_account(account):
            if other is not session and other.available:
                other.send(copy_shallow(out, to=str(other.jid)))
        if available and not was_available:
            session.send(copy_shallow(out, to=str(session.jid)))
            for other in self.sessions.of_account(account):
                if other is not session and other.presence is not None:
                    session.send(copy_shallow(other.presence, to=str(session.jid)))
            for item in items:
                if item.subscription in ("to", "both"):
                    probe = make("presence", to=item.contact, from_=account, type_="probe")
                    await self.router.route(probe, session)
            for requester in self.documents.keys(user, _PENDING):
                text = self.documents.get(user, _PENDING, requester)
                req = make("presence", to=account, from_=requester, type_="subscribe")
                if text:
                    req = _parse_stored(text) or req
                session.send(req)
            if self.hooks is not None:
                await self.hooks.emit(ClientAvailable(session))
        elif not available:
            session.send(copy_shallow(out, to=str(session.jid)))
            for target in list(session.directed):
                await self.router.route(copy_shallow(out, to=str(target)), session)
            session.directed.clear()
            if was_available and self.hooks is not None:
                await self.hooks.emit(ClientUnavailable(session))

    async def session_ended(self, session: Session) -> None:
        """Broadcast unavailable for a client that went away while available."""
        if session.presence is None and not session.directed:
            return
        unavailable = make("presence", from_=session.jid, type_="unavailable")
        was = session.presence is not None
        session.presence = None
        if was:
            for item in self.store.items(session.account.local):
                if item.subscription in ("from", "both"):
                    await self.router.route(copy_shallow(unavailable, to=item.contact), None)
            for other in self.sessions.of_account(session.account):
                if other is not session and other.available:
                    other.send(copy_shallow(unavailable, to=str(other.jid)))
        for target in list(session.directed):
            await self.router.route(copy_shallow(unavailable, to=str(target)), None)
        session.directed.clear()
        if was and self.hooks is not None:
            await self.hooks.emit(ClientUnavailable(session))

    async def _outbound_subscription(
        self, session: Session, contact: JID, ptype: str, stanza: Element
    ) -> None:
        account = session.account
        user = account.local
        if contact == account:
            return
        item = self.store.get(user, str(contact))
        changed = False
        if ptype == "subscribe":
            if item is None:
                item = RosterItem(str(contact))
            if item.subscription not in ("to", "both") and item.ask != "subscribe":
                item.ask = "subscribe"
                changed = True
        elif ptype == "subscribed":
            pending = self.documents.get(user, _PENDING, str(contact)) is not None
            if item is None:
                item = RosterItem(str(contact))
            if pending or (item.subscription in ("none", "to") and not pending):
                if pending:
                    self.documents.set(user, _PENDING, str(contact), None)
                    item.subscription = {"none": "from", "to": "both"}.get(
                        item.subscription, item.subscription
                    )
                    item.approved = False
                    changed = True
                elif not item.approved and item.subscription in ("none", "to"):
                    item.approved = True  # pre-approval (RFC 6121 §3.4)
                    version = self.store.put(user, item)
                    await self.push(account, item, version)
                    return
                else:
                    return
        elif ptype == "unsubscribe":
            if item is not None and (item.subscription in ("to", "both") or item.ask):
                item.subscription = {"to": "none", "both": "from"}.get(
                    item.subscription, item.subscription
                )
                item.ask = None
                changed = True
        elif ptype == "unsubscribed":
            self.documents.set(user, _PENDING, str(contact), None)
            if item is not None and (item.subscription in ("from", "both") or item.approved):
                item.subscription = {"from": "none", "both": "to"}.get(
                    item.subscription, item.subscription
                )
                item.approved = False
                changed = True
        if changed and item is not None:
            version = self.store.put(user, item)
            await self.push(account, item, version)
        # RFC 6121 §3.1.2: stamped with the bare JID; children (status, nick) travel along.
        await self.router.route(
            copy_shallow(stanza, to=str(contact), from_=str(account), type=ptype), None
        )
        if ptype == "subscribed" and changed:
            for s in self.sessions.of_account(account):
                if s.presence is not None:
                    await self.router.route(
                        copy_shallow(s.presence, to=str(contact), from_=str(s.jid)), None
                    )
        if ptype == "unsubscribed" and changed:
            await self._unavailable_to(account, contact)

    async def _unavailable_to(self, account: JID, contact: JID) -> None:
        """Unavailable from each available client, once the contact may no longer see it."""
        for s in self.sessions.of_account(account):
            if s.presence is not None:
                await self.router.route(
                    make("presence", to=contact, from_=s.jid, type_="unavailable"), None
                )

    async def _send(self, account: JID, contact: JID, ptype: str) -> None:
        await self.router.route(make("presence", to=contact, from_=account, type_=ptype), None)

    # ------------------------------------------------------------------ inbound presence
    async def inbound_full(self, stanza: Element, origin: Any) -> bool:
        if stanza.get("type") in SUBSCRIPTION_TYPES or stanza.get("type") == "probe":
            to = try_parse(stanza.get("to"))
            if to is not None:
                return await self.inbound_presence(copy_shallow(stanza, to=str(to.bare)), origin)
        return False

    async def inbound_presence(self, stanza: Element, origin: Any) -> bool:
        to = try_parse(stanza.get("to"))
        frm = try_parse(stanza.get("from"))
        if to is None or frm is None:
            return True
        account = to.bare
        user = account.local
        if not self._exists(user):
            if stanza.get("type") == "subscribe":
                await self._send(account, frm.bare, "unsubscribed")
            return True
        ptype = stanza.get("type")
        contact = frm.bare
        if ptype in SUBSCRIPTION_TYPES:
            await self._inbound_subscription(account, contact, str(ptype), stanza)
            return True
        if ptype == "probe":
            if contact == account or self.subscription(account, contact) in ("from", "both"):
                for s in self.sessions.of_account(account):
                    if s.presence is not None:
                        await self.router.route(
                            copy_shallow(s.presence, to=str(frm), from_=str(s.jid)), None
                        )
            return True
        for s in self.sessions.of_account(account):
            if s.available:
                s.send(stanza)
        return True

    def _exists(self, user: str) -> bool:
        return (
            self.store.db.fetchone("SELECT 1 FROM accounts WHERE username=?", (user,)) is not None
        )

    async def _inbound_subscription(
        self, account: JID, contact: JID, ptype: str, stanza: Element
    ) -> None:
        user = account.local
        item = self.store.get(user, str(contact))
        deliver = False
        if ptype == "subscribe":
            if item is not None and item.subscription in ("from", "both"):
                await self._send(account, contact, "subscribed")
                return
            if item is not None and item.approved:
                item.subscription = {"none": "from", "to": "both"}.get(
                    item.subscription, item.subscription
                )
                item.approved = False
                version = self.store.put(user, item)
                await self.push(account, item, version)
                await self._send(account, contact, "subscribed")
                for s in self.sessions.of_account(account):
                    if s.presence is not None:
                        await self.router.route(
                            copy_shallow(s.presence, to=str(contact), from_=str(s.jid)), None
                        )
                return
            self.documents.set(user, _PENDING, str(contact), serialize(stanza))
            deliver = True
        elif ptype == "subscribed":
            if item is not None and item.ask == "subscribe":
                item.subscription = {"none": "to", "from": "both"}.get(
                    item.subscription, item.subscription
                )
                item.ask = None
                version = self.store.put(user, item)
                await self.push(account, item, version)
                deliver = True
        elif ptype == "unsubscribe":
            self.documents.set(user, _PENDING, str(contact), None)
            if item is not None and item.subscription in ("from", "both"):
                item.subscription = {"from": "none", "both": "to"}.get(
                    item.subscription, item.subscription
                )
                version = self.store.put(user, item)
                await self.push(account, item, version)
                deliver = True
                # RFC 6121 §3.3.3: the former subscriber no longer sees the account online.
                await self._unavailable_to(account, contact)
        elif ptype == "unsubscribed":
            if item is not None and (item.subscription in ("to", "both") or item.ask):
                item.subscription = {"to": "none", "both": "from"}.get(
                    item.subscription, item.subscription
                )
                item.ask = None
                version = self.store.put(user, item)
                await self.push(account, item, version)
                deliver = True
        if deliver:
            for s in self.sessions.of_account(account):
                if s.available:
                    s.send(copy_shallow(stanza, to=str(account)))


def item_element(item: RosterItem) -> Element:
    attrs = {"jid": item.contact, "subscription": item.subscription}
    if item.name:
        attrs["name"] = item.name
    if item.ask:
        attrs["ask"] = item.ask
    if item.approved:
        attrs["approved"] = "true"
    el = Element(_ITEM, attrs)
    for g in item.groups:
        SubElement(el, tag(ns.ROSTER, "group")).text = g
    return el


def _parse_stored(text: str) -> Element | None:
    try:
        return parse_element(text)
    except ParseError:
        return None
