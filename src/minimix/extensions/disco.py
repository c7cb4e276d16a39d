"""XEP-0030 Service Discovery on the server's domain and on accounts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Hooks, IqScope
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, SubElement, tag


def info_element(
    identities: list[tuple[str, str, str]],
    features: list[str],
    node: str | None = None,
    forms: list[Element] | None = None,
) -> Element:
    q = Element(tag(ns.DISCO_INFO, "query"))
    if node:
        q.set("node", node)
    for cat, typ, name in identities:
        attrs = {"category": cat, "type": typ}
        if name:
            attrs["name"] = name
        SubElement(q, tag(ns.DISCO_INFO, "identity"), attrs)
    for f in sorted(set(features)):
        SubElement(q, tag(ns.DISCO_INFO, "feature"), {"var": f})
    for form in forms or []:
        q.append(form)
    return q


class Disco(Extension):
    features = (ns.DISCO_INFO, ns.DISCO_ITEMS)

    def __init__(self, domain: str, extensions: list[Extension], is_account: Callable[[str], bool]):
        self.domain = domain
        self.extensions = extensions
        self.is_account = is_account
        # Items on the server's domain: (jid, name) of components and services.
        self.host_items: list[tuple[str, str]] = []
        # Providers of items on an account's bare JID (PEP nodes): account -> [(jid, node)]
        self.account_item_providers: list[Callable[[JID, JID | None], list[tuple[str, str]]]] = []

    def register(self, hooks: Hooks) -> None:
        hooks.on_iq("get", tag(ns.DISCO_INFO, "query"), self.info, IqScope.ANY)
        hooks.on_iq("get", tag(ns.DISCO_ITEMS, "query"), self.items, IqScope.ANY)

    def server_features(self) -> list[str]:
        feats: list[str] = []
        for ext in self.extensions:
            feats.extend(ext.features)
        return feats

    def account_feature_list(self) -> list[str]:
        feats: list[str] = [ns.DISCO_INFO, ns.DISCO_ITEMS]
        for ext in self.extensions:
            feats.extend(ext.account_features)
        return feats

    async def info(self, iq: Element, origin: Any) -> Element | None:
        to = try_parse(iq.get("to")) or JID("", self.domain, "")
        node = iq[0].get("node")
        if to.local:
            if not self.is_account(to.local):
                raise StanzaError("service-unavailable")
            identities = [("account", "registered", "")]
            for ext in self.extensions:
                identities.extend(ext.account_identities)
            return info_element(identities, self.account_feature_list(), node)
        if node:
            raise StanzaError("item-not-found")
        identities = [("server", "im", "minimix")]
        for ext in self.extensions:
            identities.extend(ext.identities)
        return info_element(identities, self.server_features())

    async def items(self, iq: Element, origin: Any) -> Element | None:
        to = try_parse(iq.get("to")) or JID("", self.domain, "")
        q = Element(tag(ns.DISCO_ITEMS, "query"))
        node = iq[0].get("node")
        if node:
            q.set("node", node)
        if to.local:
            if not self.is_account(to.local):
                raise StanzaError("service-unavailable")
            frm = try_parse(iq.get("from"))
            for provider in self.account_item_providers:
                for jid, item_node in provider(to, frm):
                    SubElement(q, tag(ns.DISCO_ITEMS, "item"), {"jid": jid, "node": item_node})
            return q
        if not node:
            for jid, name in self.host_items:
                attrs = {"jid": jid}
                if name:
                    attrs["name"] = name
                SubElement(q, tag(ns.DISCO_ITEMS, "item"), attrs)
        return q
