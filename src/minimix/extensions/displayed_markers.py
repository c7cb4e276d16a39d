"""XEP-0490 Message Displayed Synchronization: read state that follows the account.

The state lives in the account's private PEP node ``urn:xmpp:mds:displayed:0`` (one item per
chat), which PEP serves as it is. This extension adds the optional server assistance: a client
may put ``<displayed xmlns='urn:xmpp:mds:displayed:0'>`` into a message it sends anyway (next to
an XEP-0333 marker); the server takes it out and publishes it on the node for the chat.
"""

from __future__ import annotations

import logging
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Direction, Hooks, Priority
from minimix.core.session import Session
from minimix.extensions.pep import Pep
from minimix.protocol import ns
from minimix.protocol.jid import try_parse
from minimix.protocol.stanza import StanzaError, stanza_type
from minimix.protocol.xml import Element, tag

log = logging.getLogger(__name__)

_DISPLAYED = tag(ns.MDS, "displayed")
# XEP-0490 §4: the node is private, keeps every chat's item, and sends nothing on presence.
NODE_CONFIG: dict[str, Any] = {
    "access_model": "whitelist",
    "max_items": None,
    "persist_items": True,
    "send_last_published_item": "never",
}


class DisplayedMarkers(Extension):
    account_features = (ns.MDS_SERVER_ASSIST,)

    def __init__(self, pep: Pep) -> None:
        self.pep = pep

    def register(self, hooks: Hooks) -> None:
        self.pep.node_defaults(ns.MDS, NODE_CONFIG)
        # Before account-join re-addresses messages to rooms, after blocking.
        hooks.on_stanza(Direction.OUTBOUND, "message", self.assist, int(Priority.INTERCEPT) + 10)

    async def assist(self, stanza: Element, origin: Any) -> bool:
        if not isinstance(origin, Session):
            return False
        displayed = stanza.find(_DISPLAYED)
        if displayed is None:
            return False
        to = try_parse(stanza.get("to"))
        # The element is for the server only: it leaves the message before routing (the
        # message is the client's own, not yet seen by anyone else).
        stanza.remove(displayed)
        if to is None:
            return False
        private_pm = (
            stanza_type(stanza) != "groupchat" and stanza.find(tag(ns.MUC_USER, "x")) is not None
        )
        chat = to if private_pm and to.resource else to.bare
        try:
            await self.pep.publish(origin.account, ns.MDS, str(chat), displayed)
        except StanzaError as err:
            log.info("%s: displayed state not published (%s)", origin.jid, err)
        return False
