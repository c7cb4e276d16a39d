"""XEP-0163 Personal Eventing Protocol, with the XEP-0060 subset it needs.

Every account is a pubsub service on its bare JID. Its nodes are created on first publish (or
explicitly), configured with publish-options or the owner's configuration form, and read under
the node's access model: ``presence`` (contacts subscribed to the owner's presence), ``open``
(anyone) or ``whitelist`` (the owner and the members it names).

Notifications go to the clients that asked for them: a client lists ``NODE+notify`` among its
XEP-0115 capabilities, learnt from its presence (one disco#info query per new ``ver``, verified
and cached by hash). Recipients are the owner's own clients and the contacts whose presence the
owner receives, when the access model lets them read. A newly available client gets the last
item of each node it wants (``send_last_published_item = on_sub_and_presence``).

Other features use the same service in code (:meth:`Pep.publish`, :meth:`Pep.retract`, ...) and
watch nodes with :meth:`Pep.watch`; bookmarks keep their three forms in sync that way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Direction, Hooks, IqScope, Priority
from minimix.core.router import Router
from minimix.core.session import Prepared, Session, SessionRegistry
from minimix.extensions.roster import ClientUnavailable
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, make, new_id
from minimix.protocol.xml import (
    Element,
    ParseError,
    SubElement,
    local_name,
    parse_element,
    serialize,
    tag,
)
from minimix.storage.pubsub import PubsubItem, PubsubStore
from minimix.storage.stores import RosterStore

log = logging.getLogger(__name__)

_PUBSUB = tag(ns.PUBSUB, "pubsub")
_OWNER = tag(ns.PUBSUB_OWNER, "pubsub")
_EVENT = tag(ns.PUBSUB_EVENT, "event")
_X = tag(ns.DATA, "x")
_FIELD = tag(ns.DATA, "field")
_VALUE = tag(ns.DATA, "value")
_CAPS = tag(ns.CAPS, "c")
_DISCO_INFO_QUERY = tag(ns.DISCO_INFO, "query")
_MUC_USER_X = tag(ns.MUC_USER, "x")
_MAX_PENDING_QUERIES = 1000

MAX_ITEMS_LIMIT = 1000  # what "max" means, and the most a node keeps

DEFAULT_CONFIG: dict[str, Any] = {
    "access_model": "presence",
    "deliver_notifications": True,
    "deliver_payloads": True,
    "max_items": 1,
    "notification_type": "headline",
    "notify_delete": True,
    "notify_retract": True,
    "persist_items": True,
    "publish_model": "publishers",
    "send_last_published_item": "on_sub_and_presence",
    "title": "",
    "type": "",
}
_BOOLEAN = frozenset(
    (
        "deliver_notifications",
        "deliver_payloads",
        "notify_delete",
        "notify_retract",
        "persist_items",
    )
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "access_model": ("open", "presence", "whitelist"),
    "notification_type": ("headline", "normal"),
    "publish_model": ("publishers", "subscribers", "open"),
    "send_last_published_item": ("never", "on_sub", "on_sub_and_presence"),
}
_TEXT = frozenset(("title", "type"))

ACCOUNT_FEATURES = (
    ns.PUBSUB,
    *(
        f"{ns.PUBSUB}#{f}"
        for f in (
            "access-open",
            "access-presence",
            "access-whitelist",
            "auto-create",
            "auto-subscribe",
            "config-node",
            "create-and-configure",
            "create-nodes",
            "delete-items",
            "delete-nodes",
            "filtered-notifications",
            "item-ids",
            "last-published",
            "manage-affiliations",
            "persistent-items",
            "presence-notifications",
            "publish",
            "publish-options",
            "purge-nodes",
            "retract-items",
            "retrieve-affiliations",
            "retrieve-default",
            "retrieve-items",
            "retrieve-subscriptions",
            "subscribe",
        )
    ),
)


# ---------------------------------------------------------------------- errors
def pubsub_error(condition: str, app: str, **attrs: str) -> StanzaError:
    """A stanza error with its XEP-0060 application condition (pubsub#errors)."""
    return StanzaError(condition, app_error=Element(tag(ns.PUBSUB_ERRORS, app), attrs))


# ---------------------------------------------------------------------- configuration
def _bool(value: str, var: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    raise StanzaError("not-acceptable", f"{var} must be a boolean")


def parse_option(key: str, value: str) -> Any:
    """One node option from its form value; raises ``not-acceptable`` for a bad value."""
    var = f"pubsub#{key}"
    if key in _BOOLEAN:
        return _bool(value, var)
    if key == "max_items":
        if value.strip().lower() == "max":
            return None
        try:
            n = int(value)
        except ValueError:
            raise StanzaError("not-acceptable", f"{var} must be a number or 'max'") from None
        if n < 0:
            raise StanzaError("not-acceptable", f"{var} must not be negative")
        return None if n >= MAX_ITEMS_LIMIT else n
    if key in _CHOICES:
        v = value.strip()
        if v not in _CHOICES[key]:
            raise StanzaError("not-acceptable", f"{var}: {v!r} is not supported here")
        return v
    return value


def read_form(x: Element | None, form_type: str) -> dict[str, Any]:
    """Known ``pubsub#`` options of a submitted form (unknown ones are left out)."""
    out: dict[str, Any] = {}
    if x is None:
        return out
    for field in x.findall(_FIELD):
        var = field.get("var", "")
        values = [(v.text or "") for v in field.findall(_VALUE)]
        if var == "FORM_TYPE":
            if values and values[0].strip() != form_type:
                raise StanzaError("bad-request", f"FORM_TYPE must be {form_type}")
            continue
        if not var.startswith("pubsub#"):
            continue
        key = var[len("pubsub#") :]
        if key in DEFAULT_CONFIG and values:
            out[key] = parse_option(key, values[0])
    return out


def config_form(config: dict[str, Any], form_type: str = ns.PUBSUB_NODE_CONFIG) -> Element:
    x = Element(_X, {"type": "form"})
    ft = SubElement(x, _FIELD, {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(ft, _VALUE).text = form_type
    for key in sorted(DEFAULT_CONFIG):
        value = config.get(key, DEFAULT_CONFIG[key])
        if key in _BOOLEAN:
            ftype, text = "boolean", "1" if value else "0"
        elif key in _CHOICES:
            ftype, text = "list-single", str(value)
        elif key == "max_items":
            ftype, text = "text-single", "max" if value is None else str(value)
        else:
            ftype, text = "text-single", str(value)
        f = SubElement(x, _FIELD, {"var": f"pubsub#{key}", "type": ftype})
        SubElement(f, _VALUE).text = text
        for choice in _CHOICES.get(key, ()):
            SubElement(f, tag(ns.DATA, "option")).append(_value(choice))
    return x


def _value(text: str) -> Element:
    v = Element(_VALUE)
    v.text = text
    return v


# ---------------------------------------------------------------------- capabilities
def caps_ver(info: Element, algo: str = "sha-1") -> str:
    """The XEP-0115 §5.1 verification string of a disco#info result, hashed with ``algo``."""
    identities = sorted(
        (
            i.get("category", ""),
            i.get("type", ""),
            i.get("{http://www.w3.org/XML/1998/namespace}lang", ""),
            i.get("name", ""),
        )
        for i in info.findall(tag(ns.DISCO_INFO, "identity"))
    )
    s = "".join(f"{c}/{t}/{lang}/{n}<" for c, t, lang, n in identities)
    features = sorted(f.get("var", "") for f in info.findall(tag(ns.DISCO_INFO, "feature")))
    s += "".join(f"{f}<" for f in features)
    forms: list[tuple[str, str]] = []
    for x in info.findall(_X):
        fields: dict[str, list[str]] = {}
        form_type = ""
        for field in x.findall(_FIELD):
            values = sorted((v.text or "") for v in field.findall(_VALUE))
            if field.get("var") == "FORM_TYPE":
                form_type = values[0] if values else ""
            else:
                fields[field.get("var", "")] = values
        text = f"{form_type}<"
        for var in sorted(fields):
            text += f"{var}<" + "".join(f"{v}<" for v in fields[var])
        forms.append((form_type, text))
    s += "".join(text for _, text in sorted(forms))
    name = algo.replace("-", "")
    if name not in ("sha1", "sha224", "sha256", "sha384", "sha512"):
        raise ValueError(f"unsupported caps hash {algo}")
    return base64.b64encode(hashlib.new(name, s.encode()).digest()).decode()


class CapsCache:
    """What each client wants, from XEP-0115 presence: resolved once per ``ver`` and cached."""

    def __init__(self, router: Router, domain: str) -> None:
        self.router = router
        self.domain = domain
        self.by_ver: dict[tuple[str, str], frozenset[str]] = {}
        self.of_jid: dict[JID, frozenset[str]] = {}
        self.key_of: dict[JID, tuple[str, str, str]] = {}  # jid -> (hash, ver, node)
        self._pending: dict[str, tuple[JID, tuple[str, str, str]]] = {}
        self.on_resolved: Callable[[JID], Awaitable[None]] | None = None

    def features(self, jid: JID) -> frozenset[str]:
        return self.of_jid.get(jid, frozenset())

    def forget(self, jid: JID) -> None:
        self.of_jid.pop(jid, None)
        self.key_of.pop(jid, None)

    async def presence(self, jid: JID, stanza: Element) -> bool:
        """Note the caps of an available presence; True when ``jid``'s features are known
        now and changed (False while a disco#info query is on its way)."""
        c = stanza.find(_CAPS)
        if c is None:
            changed = jid in self.of_jid and bool(self.of_jid[jid])
            if jid not in self.of_jid or changed:
                self.of_jid[jid] = frozenset()
                self.key_of.pop(jid, None)
                return True
            return False
        key = (c.get("hash", ""), c.get("ver", ""), c.get("node", ""))
        if self.key_of.get(jid) == key:
            return False  # the same as before: known, or its query is on its way
        self.key_of[jid] = key
        cached = self.by_ver.get(key[:2]) if key[0] else None
        if cached is not None:
            self.of_jid[jid] = cached
            return True
        qid = new_id()
        if len(self._pending) >= _MAX_PENDING_QUERIES:
            self._pending.pop(next(iter(self._pending)))  # a client that never answered
        self._pending[qid] = (jid, key)
        iq = make("iq", to=jid, from_=self.domain, type_="get", id_=qid)
        SubElement(iq, _DISCO_INFO_QUERY, {"node": f"{key[2]}#{key[1]}"})
        await self.router.route(iq, None)
        return False

    async def answer(self, iq: Element, origin: Any) -> bool:
        """An iq result or error to the server: ours when it answers a caps query."""
        pending = self._pending.pop(iq.get("id", ""), None)
        if pending is None:
            return False
        jid, key = pending
        if iq.get("type") != "result" or str(jid) != iq.get("from"):
            self.of_jid.setdefault(jid, frozenset())
            return True
        info = iq.find(_DISCO_INFO_QUERY)
        features = frozenset(
            f.get("var", "")
            for f in (info.findall(tag(ns.DISCO_INFO, "feature")) if info is not None else [])
        )
        if info is not None and key[0]:
            try:
                if caps_ver(info, key[0]) == key[1]:
                    self.by_ver[key[:2]] = features  # verified: good for every client
            except ValueError:
                pass
        if self.key_of.get(jid) == key:
            self.of_jid[jid] = features
            if self.on_resolved is not None:
                await self.on_resolved(jid)
        return True


# ---------------------------------------------------------------------- the service
@dataclass(frozen=True, slots=True)
class NodeChange:
    """What happened on a node (for :meth:`Pep.watch`)."""

    owner: JID
    node: str
    kind: str  # 'published' | 'retracted' | 'purged' | 'deleted'
    item_id: str | None = None
    payload: Element | None = None
    removed: tuple[str, ...] = ()  # item ids that went away (retract, purge, delete, eviction)


Watcher = Callable[[NodeChange], Awaitable[None]]
Validator = Callable[[str, Element], None]


class Pep(Extension):
    """The per-account pubsub service: iq protocol, notifications, and an API for features."""

    account_features = (*ACCOUNT_FEATURES,)
    account_identities = (("pubsub", "pep", ""),)

    def __init__(
        self,
        router: Router,
        sessions: SessionRegistry,
        store: PubsubStore,
        roster: RosterStore,
        domain: str,
    ) -> None:
        self.router = router
        self.sessions = sessions
        self.store = store
        self.roster = roster
        self.domain = domain
        self.caps = CapsCache(router, domain)
        self.caps.on_resolved = self._caps_resolved
        # Contacts' clients whose available presence reached each owner.
        self.online: dict[JID, set[JID]] = {}
        # The reverse: for each contact's client, the owners whose accounts it is online to.
        self._owners_of: dict[JID, set[JID]] = {}
        self._watchers: dict[str, list[Watcher]] = {}
        self._validators: dict[str, Validator] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    def register(self, hooks: Hooks) -> None:
        hooks.on_iq("set", _PUBSUB, self.pubsub_set, IqScope.ACCOUNT)
        hooks.on_iq("get", _PUBSUB, self.pubsub_get, IqScope.ACCOUNT)
        hooks.on_iq("set", _OWNER, self.owner_set, IqScope.ACCOUNT)
        hooks.on_iq("get", _OWNER, self.owner_get, IqScope.ACCOUNT)
        hooks.on_stanza(Direction.OUTBOUND, "presence", self.own_presence, Priority.OBSERVE)
        hooks.on_stanza(Direction.INBOUND_BARE, "presence", self.contact_presence, Priority.OBSERVE)
        hooks.on_stanza(Direction.INBOUND_HOST, "iq", self.caps.answer, Priority.NORMAL)
        hooks.on_event(ClientUnavailable, self.client_gone)

    # ------------------------------------------------------------------ API for features
    def watch(self, node: str, watcher: Watcher) -> None:
        """Call ``watcher`` after every change of any account's ``node``."""
        self._watchers.setdefault(node, []).append(watcher)

    def validate(self, node: str, validator: Validator) -> None:
        """Check items published to ``node``: ``validator(item_id, payload)`` raises
        StanzaError to refuse one."""
        self._validators[node] = validator

    def node_defaults(self, node: str, config: dict[str, Any]) -> None:
        """Configuration a ``node`` gets when created without options (e.g. private data)."""
        self._defaults[node] = dict(config)

    def config(self, owner: JID, node: str) -> dict[str, Any] | None:
        stored = self.store.node_config(str(owner), node)
        return {**DEFAULT_CONFIG, **stored} if stored is not None else None

    def items(self, owner: JID, node: str) -> list[PubsubItem]:
        return self.store.items(str(owner), node)

    def item(self, owner: JID, node: str, item_id: str) -> PubsubItem | None:
        got = self.store.items(str(owner), node, ids=[item_id])
        return got[0] if got else None

    def ensure_node(self, owner: JID, node: str, options: dict[str, Any] | None = None) -> None:
        if self.store.node_config(str(owner), node) is None:
            config = {**DEFAULT_CONFIG, **self._defaults.get(node, {}), **(options or {})}
            self.store.create_node(str(owner), node, config)

    async def publish(
        self,
        owner: JID,
        node: str,
        item_id: str | None,
        payload: Element,
        *,
        options: dict[str, Any] | None = None,
        publisher: JID | None = None,
        watchers: bool = True,
    ) -> str:
        """Publish one item as the owner (creating the node); returns the item id.

        ``options`` are publish-options: for an existing node they must match its
        configuration (else ``conflict`` + ``precondition-not-met``). With ``watchers=False``
        the node's watchers are not called (a watcher writing back to the node it watches).
        """
        validator = self._validators.get(node)
        if validator is not None:
            validator(item_id or "", payload)
        existing = self.config(owner, node)
        if existing is None:
            self.ensure_node(owner, node, options)
            config = self.config(owner, node)
            assert config is not None
        else:
            config = existing
            for key, value in (options or {}).items():
                if config.get(key) != value:
                    raise pubsub_error("conflict", "precondition-not-met")
        iid = item_id or new_id()
        text = serialize(payload, "")
        evicted: list[str] = []
        if config["persist_items"]:
            evicted = self.store.publish(
                str(owner), node, iid, text, str(publisher or owner), config["max_items"]
            )
        event = self._event(node)
        item_el = SubElement(event[0], tag(ns.PUBSUB_EVENT, "item"), {"id": iid})
        if config["deliver_payloads"]:
            item_el.append(payload)
        await self._notify(owner, node, config, event)
        if watchers:
            await self._changed(NodeChange(owner, node, "published", iid, payload, tuple(evicted)))
        return iid

    async def retract(
        self, owner: JID, node: str, item_id: str, *, notify: bool = True, watchers: bool = True
    ) -> bool:
        """Remove one item; False when it was not there."""
        config = self.config(owner, node)
        if config is None or not self.store.retract(str(owner), node, item_id):
            return False
        if notify:
            event = self._event(node)
            SubElement(event[0], tag(ns.PUBSUB_EVENT, "retract"), {"id": item_id})
            await self._notify(owner, node, config, event)
        if watchers:
            await self._changed(NodeChange(owner, node, "retracted", item_id, None, (item_id,)))
        return True

    async def purge(self, owner: JID, node: str, *, watchers: bool = True) -> bool:
        config = self.config(owner, node)
        if config is None:
            return False
        removed = self.store.purge(str(owner), node)
        event = Element(_EVENT)
        SubElement(event, tag(ns.PUBSUB_EVENT, "purge"), {"node": node})
        await self._notify(owner, node, config, event)
        if watchers:
            await self._changed(NodeChange(owner, node, "purged", None, None, tuple(removed)))
        return True

    async def delete(self, owner: JID, node: str, *, watchers: bool = True) -> bool:
        config = self.config(owner, node)
        if config is None:
            return False
        removed = [i.id for i in self.store.items(str(owner), node)]
        recipients = self._recipients(owner, node, config)
        self.store.delete_node(str(owner), node)
        if config["notify_delete"]:
            event = Element(_EVENT)
            SubElement(event, tag(ns.PUBSUB_EVENT, "delete"), {"node": node})
            self._send(owner, event, recipients)
        if watchers:
            await self._changed(NodeChange(owner, node, "deleted", None, None, tuple(removed)))
        return True

    async def _changed(self, change: NodeChange) -> None:
        for watcher in list(self._watchers.get(change.node, ())):
            try:
                await watcher(change)
            except Exception:
                log.exception("watcher of %s failed", change.node)

    # ------------------------------------------------------------------ access
    def can_read(self, owner: JID, config: dict[str, Any], node: str, who: JID) -> bool:
        if who.bare == owner:
            return True
        affiliation = self.store.affiliations(str(owner), node).get(str(who.bare), "none")
        if affiliation == "outcast":
            return False
        model = config.get("access_model", "presence")
        if model == "open":
            return True
        if model == "whitelist":
            return affiliation in ("owner", "publisher", "member")
        item = self.roster.get(owner.local, str(who.bare))
        return item is not None and item.subscription in ("from", "both")

    def _check_read(self, owner: JID, config: dict[str, Any], node: str, who: JID) -> None:
        if self.can_read(owner, config, node, who):
            return
        model = config.get("access_model", "presence")
        if model == "whitelist":
            raise pubsub_error("not-allowed", "closed-node")
        if model == "presence":
            raise pubsub_error("not-authorized", "presence-subscription-required")
        raise StanzaError("forbidden")

    # ------------------------------------------------------------------ notifications
    @staticmethod
    def _event(node: str) -> Element:
        event = Element(_EVENT)
        SubElement(event, tag(ns.PUBSUB_EVENT, "items"), {"node": node})
        return event

    def _wants(self, jid: JID, node: str) -> bool:
        return f"{node}+notify" in self.caps.features(jid)

    def _recipients(self, owner: JID, node: str, config: dict[str, Any]) -> list[JID]:
        out: list[JID] = []
        if not config.get("deliver_notifications", True):
            return out
        for s in self.sessions.of_account(owner):
            if s.available and self._wants(s.jid, node):
                out.append(s.jid)
        for jid in sorted(self.online.get(owner, ())):
            if self._wants(jid, node) and self.can_read(owner, config, node, jid):
                out.append(jid)
        reached = {j.bare for j in out}
        for sub in self.store.subscribers(str(owner), node):
            subscriber = try_parse(sub)
            if subscriber is not None and subscriber.bare not in reached:
                if self.can_read(owner, config, node, subscriber):
                    out.append(subscriber)
        return out

    async def _notify(self, owner: JID, node: str, config: dict[str, Any], event: Element) -> None:
        recipients = self._recipients(owner, node, config)
        self._send(owner, event, recipients, config.get("notification_type", "headline"))

    def _send(
        self, owner: JID, event: Element, recipients: list[JID], mtype: str = "headline"
    ) -> None:
        if not recipients:
            return
        msg = make("message", from_=owner, type_=mtype, id_=new_id())
        msg.append(event)
        prepared = Prepared(msg)
        for jid in recipients:
            session = self.sessions.get(jid) if jid.resource else None
            if session is not None:
                session.send_prepared(prepared)
            else:
                out = make("message", to=jid, from_=owner, type_=mtype, id_=new_id())
                out.append(event)
                asyncio.get_running_loop().create_task(self.router.route(out, None))

    def _send_last_items(self, owner: JID, client: JID) -> None:
        """The newest item of each node ``client`` wants and may read (on its presence)."""
        is_owner = client.bare == owner
        for node, stored in self.store.nodes(str(owner)):
            config = {**DEFAULT_CONFIG, **stored}
            if config["send_last_published_item"] != "on_sub_and_presence":
                continue
            if not self._wants(client, node):
                continue
            if not is_owner and not self.can_read(owner, config, node, client):
                continue
            last = self.store.last_item(str(owner), node)
            if last is None:
                continue
            self._send(owner, self._item_event(node, last, config), [client])

    def _item_event(self, node: str, item: PubsubItem, config: dict[str, Any]) -> Element:
        event = self._event(node)
        item_el = SubElement(event[0], tag(ns.PUBSUB_EVENT, "item"), {"id": item.id})
        if config.get("deliver_payloads", True) and item.payload:
            try:
                item_el.append(parse_element(item.payload))
            except ParseError:
                pass
        return event

    # ------------------------------------------------------------------ presence
    async def own_presence(self, stanza: Element, origin: Any) -> bool:
        if not isinstance(origin, Session) or stanza.get("to") is not None:
            return False
        ptype = stanza.get("type")
        if ptype is None:
            fresh = origin.presence is None
            known = await self.caps.presence(origin.jid, stanza)
            if (fresh or known) and origin.jid in self.caps.of_jid:
                self._greet(origin.account, origin.jid)
        elif ptype == "unavailable":
            self._gone(origin.jid)
        return False

    async def contact_presence(self, stanza: Element, origin: Any) -> bool:
        to = try_parse(stanza.get("to"))
        frm = try_parse(stanza.get("from"))
        if to is None or frm is None or not frm.resource or frm.bare == to.bare:
            return False
        if stanza.find(_MUC_USER_X) is not None:
            return False  # a room occupant, not a contact's client
        ptype = stanza.get("type")
        owner = to.bare
        if ptype is None:
            clients = self.online.setdefault(owner, set())
            fresh = frm not in clients
            clients.add(frm)
            self._owners_of.setdefault(frm, set()).add(owner)
            known = await self.caps.presence(frm, stanza)
            if (fresh or known) and frm in self.caps.of_jid:
                self._greet(owner, frm)
        elif ptype == "unavailable":
            remaining = self.online.get(owner)
            if remaining is not None:
                remaining.discard(frm)
                if not remaining:
                    del self.online[owner]
            owners = self._owners_of.get(frm)
            if owners is not None:
                owners.discard(owner)
                if not owners:
                    del self._owners_of[frm]
        return False

    def _greet(self, owner: JID, client: JID) -> None:
        self._send_last_items(owner, client)

    async def _caps_resolved(self, client: JID) -> None:
        """A client's features became known: greet every owner that waits for them."""
        if self._is_local_available(client):
            self._greet(client.bare, client)
        for owner in list(self._owners_of.get(client, ())):
            self._greet(owner, client)

    def _is_local_available(self, client: JID) -> bool:
        s = self.sessions.get(client)
        return s is not None and s.available

    def _gone(self, client: JID) -> None:
        self.caps.forget(client)

    async def client_gone(self, event: Any) -> None:
        self._gone(event.session.jid)

    # ------------------------------------------------------------------ disco
    def disco_items(self, account: JID, requester: JID | None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for node, stored in self.store.nodes(str(account)):
            config = {**DEFAULT_CONFIG, **stored}
            if requester is not None and self.can_read(account, config, node, requester):
                out.append((str(account), node))
        return out

    # ------------------------------------------------------------------ iq protocol
    @staticmethod
    def _addresses(iq: Element) -> tuple[JID, JID]:
        owner = try_parse(iq.get("to"))
        who = try_parse(iq.get("from"))
        if owner is None or who is None:
            raise StanzaError("bad-request")
        return owner.bare, who

    @staticmethod
    def _action(iq: Element) -> Element:
        kids = list(iq[0])
        if not kids:
            raise StanzaError("bad-request", "an empty pubsub request")
        return kids[0]

    def _node_attr(self, el: Element) -> str:
        node = el.get("node")
        if not node:
            raise pubsub_error("bad-request", "nodeid-required")
        return node

    def _existing(self, owner: JID, node: str) -> dict[str, Any]:
        config = self.config(owner, node)
        if config is None:
            raise StanzaError("item-not-found", f"no node {node!r}")
        return config

    @staticmethod
    def _owner_only(owner: JID, who: JID) -> None:
        if who.bare != owner:
            raise StanzaError("forbidden", "only the account owner may do that")

    async def pubsub_set(self, iq: Element, origin: Any) -> Element | None:
        owner, who = self._addresses(iq)
        action = self._action(iq)
        name = local_name(action)
        if name == "publish":
            return await self._publish_iq(iq, owner, who, action)
        if name == "retract":
            self._owner_only(owner, who)
            node = self._node_attr(action)
            self._existing(owner, node)
            items = action.findall(tag(ns.PUBSUB, "item"))
            if not items or not all(i.get("id") for i in items):
                raise pubsub_error("bad-request", "item-required")
            flag = action.get("notify")
            config = self._existing(owner, node)
            notify = (flag in ("1", "true")) if flag is not None else config["notify_retract"]
            for i in items:
                if not await self.retract(owner, node, i.get("id", ""), notify=notify):
                    raise StanzaError("item-not-found", f"no item {i.get('id')!r}")
            return None
        if name == "create":
            self._owner_only(owner, who)
            new_node = action.get("node")
            if not new_node:
                raise pubsub_error("not-acceptable", "nodeid-required")
            configure = iq[0].find(tag(ns.PUBSUB, "configure"))
            options = read_form(
                configure.find(_X) if configure is not None else None, ns.PUBSUB_NODE_CONFIG
            )
            if self.config(owner, new_node) is not None:
                raise StanzaError("conflict", f"node {new_node!r} exists")
            self.ensure_node(owner, new_node, options)
            return None
        if name == "subscribe":
            return self._subscribe(owner, who, action)
        if name == "unsubscribe":
            node = self._node_attr(action)
            jid = try_parse(action.get("jid"))
            if jid is None or jid.bare != who.bare:
                raise pubsub_error("bad-request", "invalid-jid")
            if not self.store.unsubscribe(str(owner), node, str(jid)):
                raise pubsub_error("unexpected-request", "not-subscribed")
            return None
        raise pubsub_error("feature-not-implemented", "unsupported", feature=name)

    async def _publish_iq(
        self, iq: Element, owner: JID, who: JID, action: Element
    ) -> Element | None:
        if who.bare != owner:
            raise pubsub_error("forbidden", "publisher-forbidden")
        node = self._node_attr(action)
        items = action.findall(tag(ns.PUBSUB, "item"))
        if len(items) != 1:
            raise pubsub_error("bad-request", "item-required" if not items else "invalid-payload")
        item = items[0]
        payloads = list(item)
        if len(payloads) != 1:
            raise pubsub_error(
                "bad-request", "payload-required" if not payloads else "invalid-payload"
            )
        po = iq[0].find(tag(ns.PUBSUB, "publish-options"))
        options = read_form(po.find(_X) if po is not None else None, ns.PUBSUB_PUBLISH_OPTIONS)
        iid = await self.publish(
            owner, node, item.get("id"), payloads[0], options=options, publisher=who
        )
        out = Element(_PUBSUB)
        pub = SubElement(out, tag(ns.PUBSUB, "publish"), {"node": node})
        SubElement(pub, tag(ns.PUBSUB, "item"), {"id": iid})
        return out

    def _subscribe(self, owner: JID, who: JID, action: Element) -> Element:
        node = self._node_attr(action)
        jid = try_parse(action.get("jid"))
        if jid is None or jid.bare != who.bare:
            raise pubsub_error("bad-request", "invalid-jid")
        config = self._existing(owner, node)
        self._check_read(owner, config, node, jid)
        self.store.subscribe(str(owner), node, str(jid))
        out = Element(_PUBSUB)
        SubElement(
            out,
            tag(ns.PUBSUB, "subscription"),
            {"node": node, "jid": str(jid), "subscription": "subscribed"},
        )
        if config["send_last_published_item"] != "never":
            last = self.store.last_item(str(owner), node)
            if last is not None:
                self._send(owner, self._item_event(node, last, config), [jid])
        return out

    async def pubsub_get(self, iq: Element, origin: Any) -> Element | None:
        owner, who = self._addresses(iq)
        action = self._action(iq)
        name = local_name(action)
        if name == "items":
            node = self._node_attr(action)
            config = self._existing(owner, node)
            self._check_read(owner, config, node, who)
            ids = [i.get("id", "") for i in action.findall(tag(ns.PUBSUB, "item"))]
            max_items = None
            if action.get("max_items"):
                try:
                    max_items = max(0, int(action.get("max_items", "")))
                except ValueError:
                    raise StanzaError("bad-request", "max_items must be a number") from None
            found = self.store.items(str(owner), node, max_items, ids or None)
            out = Element(_PUBSUB)
            holder = SubElement(out, tag(ns.PUBSUB, "items"), {"node": node})
            for it in found:
                el = SubElement(holder, tag(ns.PUBSUB, "item"), {"id": it.id})
                if it.payload:
                    try:
                        el.append(parse_element(it.payload))
                    except ParseError:
                        pass
            return out
        if name == "subscriptions":
            out = Element(_PUBSUB)
            holder = SubElement(out, tag(ns.PUBSUB, "subscriptions"))
            for node in self.store.subscriptions_of(str(owner), str(who)):
                SubElement(
                    holder,
                    tag(ns.PUBSUB, "subscription"),
                    {"node": node, "jid": str(who), "subscription": "subscribed"},
                )
            return out
        if name == "affiliations":
            out = Element(_PUBSUB)
            holder = SubElement(out, tag(ns.PUBSUB, "affiliations"))
            for node, _ in self.store.nodes(str(owner)):
                if who.bare == owner:
                    aff = "owner"
                else:
                    aff = self.store.affiliations(str(owner), node).get(str(who.bare), "none")
                if aff != "none":
                    SubElement(
                        holder, tag(ns.PUBSUB, "affiliation"), {"node": node, "affiliation": aff}
                    )
            return out
        if name == "default":
            out = Element(_PUBSUB)
            SubElement(out, tag(ns.PUBSUB, "default")).append(config_form(DEFAULT_CONFIG))
            return out
        raise pubsub_error("feature-not-implemented", "unsupported", feature=name)

    async def owner_get(self, iq: Element, origin: Any) -> Element | None:
        owner, who = self._addresses(iq)
        self._owner_only(owner, who)
        action = self._action(iq)
        name = local_name(action)
        out = Element(_OWNER)
        if name == "configure":
            node = self._node_attr(action)
            config = self._existing(owner, node)
            SubElement(out, tag(ns.PUBSUB_OWNER, "configure"), {"node": node}).append(
                config_form(config)
            )
            return out
        if name == "default":
            SubElement(out, tag(ns.PUBSUB_OWNER, "default")).append(config_form(DEFAULT_CONFIG))
            return out
        if name == "affiliations":
            node = self._node_attr(action)
            self._existing(owner, node)
            holder = SubElement(out, tag(ns.PUBSUB_OWNER, "affiliations"), {"node": node})
            SubElement(
                holder,
                tag(ns.PUBSUB_OWNER, "affiliation"),
                {"jid": str(owner), "affiliation": "owner"},
            )
            for jid, aff in sorted(self.store.affiliations(str(owner), node).items()):
                SubElement(
                    holder, tag(ns.PUBSUB_OWNER, "affiliation"), {"jid": jid, "affiliation": aff}
                )
            return out
        if name == "subscriptions":
            node = self._node_attr(action)
            self._existing(owner, node)
            holder = SubElement(out, tag(ns.PUBSUB_OWNER, "subscriptions"), {"node": node})
            for jid in self.store.subscribers(str(owner), node):
                SubElement(
                    holder,
                    tag(ns.PUBSUB_OWNER, "subscription"),
                    {"jid": jid, "subscription": "subscribed"},
                )
            return out
        raise pubsub_error("feature-not-implemented", "unsupported", feature=name)

    async def owner_set(self, iq: Element, origin: Any) -> Element | None:
        owner, who = self._addresses(iq)
        self._owner_only(owner, who)
        action = self._action(iq)
        name = local_name(action)
        node = self._node_attr(action)
        if name == "configure":
            config = self._existing(owner, node)
            x = action.find(_X)
            if x is not None and x.get("type") == "cancel":
                return None
            if x is None or x.get("type", "submit") != "submit":
                raise StanzaError("bad-request", "submit the configuration form")
            config.update(read_form(x, ns.PUBSUB_NODE_CONFIG))
            self.store.set_config(str(owner), node, config)
            if config["max_items"] is not None:
                self._trim(owner, node, config["max_items"])
            return None
        if name == "purge":
            self._existing(owner, node)
            await self.purge(owner, node)
            return None
        if name == "delete":
            self._existing(owner, node)
            await self.delete(owner, node)
            return None
        if name == "affiliations":
            self._existing(owner, node)
            for a in action.findall(tag(ns.PUBSUB_OWNER, "affiliation")):
                jid = try_parse(a.get("jid"))
                aff = a.get("affiliation", "")
                if jid is None or aff not in ("owner", "publisher", "member", "none", "outcast"):
                    raise StanzaError("bad-request", "an affiliation needs a jid and a kind")
                if jid.bare == owner:
                    continue  # the owner stays the owner
                self.store.set_affiliation(str(owner), node, str(jid.bare), aff)
            return None
        raise pubsub_error("feature-not-implemented", "unsupported", feature=name)

    def _trim(self, owner: JID, node: str, max_items: int) -> None:
        items = self.store.items(str(owner), node)
        for it in items[: max(0, len(items) - max(max_items, 1))]:
            self.store.retract(str(owner), node, it.id)
