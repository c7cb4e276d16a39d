"""XEP-0092 Software Version: the server's name and version."""

from __future__ import annotations

import platform
from typing import Any

from minimix import __version__
from minimix.core.extension import Extension
from minimix.core.hooks import Hooks, IqScope
from minimix.protocol import ns
from minimix.protocol.xml import Element, element, tag


class Version(Extension):
    features = (ns.VERSION,)

    def register(self, hooks: Hooks) -> None:
        hooks.on_iq("get", tag(ns.VERSION, "query"), self.version, IqScope.HOST)

    async def version(self, iq: Element, origin: Any) -> Element | None:
        return element(
            ns.VERSION,
            "query",
            kids=[
                element(ns.VERSION, "name", text="minimix"),
                element(ns.VERSION, "version", text=__version__),
                element(ns.VERSION, "os", text=platform.system()),
            ],
        )
