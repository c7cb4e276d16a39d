"""XEP-0054 vcard-temp: each account stores its own vCard; anyone may read it."""

from __future__ import annotations

from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Hooks, IqScope
from minimix.core.session import Session
from minimix.protocol import ns
from minimix.protocol.jid import try_parse
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, ParseError, parse_element, serialize, tag
from minimix.storage.stores import DocumentStore

_VCARD = tag(ns.VCARD, "vCard")


class VCard(Extension):
    features = (ns.VCARD,)

    def __init__(self, documents: DocumentStore, domain: str) -> None:
        self.documents = documents
        self.domain = domain

    def register(self, hooks: Hooks) -> None:
        hooks.on_iq("get", _VCARD, self.get, IqScope.ACCOUNT)
        hooks.on_iq("set", _VCARD, self.set, IqScope.ACCOUNT)
        hooks.on_iq("get", _VCARD, self.get_host, IqScope.HOST)

    async def get(self, iq: Element, origin: Any) -> Element | None:
        to = try_parse(iq.get("to"))
        if to is None:
            raise StanzaError("item-not-found")
        text = self.documents.get(to.local, "vcard", "")
        if text is None:
            raise StanzaError("item-not-found")
        try:
            return parse_element(text)
        except ParseError:
            raise StanzaError("item-not-found") from None

    async def get_host(self, iq: Element, origin: Any) -> Element | None:
        return Element(_VCARD)

    async def set(self, iq: Element, origin: Any) -> Element | None:
        if not isinstance(origin, Session) or iq.get("to") not in (None, str(origin.account)):
            raise StanzaError("forbidden", "only your own vCard")
        self.documents.set(origin.account.local, "vcard", "", serialize(iq[0], ""))
        return None
