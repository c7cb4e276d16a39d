"""XEP-0199 XMPP Ping: answer pings addressed to the server or an account."""

from __future__ import annotations

from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Hooks, IqScope
from minimix.protocol import ns
from minimix.protocol.xml import Element, tag


class Ping(Extension):
    features = (ns.PING,)

    def register(self, hooks: Hooks) -> None:
        hooks.on_iq("get", tag(ns.PING, "ping"), self.pong, IqScope.ANY)

    async def pong(self, iq: Element, origin: Any) -> Element | None:
        return None
