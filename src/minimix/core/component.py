"""XEP-0114 external components: a gateway or service attaches its domain to the router."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections import deque

from minimix.core.router import Router
from minimix.protocol import ns
from minimix.protocol.jid import try_parse
from minimix.protocol.stanza import STANZA_TAGS, StreamError
from minimix.protocol.xml import Element, local_name, renamespace
from minimix.stream.machine import (
    ElementReceived,
    ProtocolViolation,
    StreamClosed,
    StreamOpened,
    XmppStream,
)

log = logging.getLogger(__name__)


class ComponentConnection:
    """One component stream (jabber:component:accept). Registers its domain once authenticated."""

    def __init__(
        self, router: Router, secrets: dict[str, str], transport: object, max_stanza_size: int
    ) -> None:
        self.router = router
        self.secrets = secrets
        self.transport = transport
        self.stream = XmppStream(content_ns=ns.COMPONENT, max_stanza_size=max_stanza_size)
        self.domain = ""
        self.stream_id = ""
        self.authenticated = False
        self._inbox: deque[object] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    # Component (for the router) ---------------------------------------------
    async def receive(self, stanza: Element) -> None:
        if not self._closed:
            self.stream.send(stanza)
            self._flush()

    # transport callbacks -------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._inbox.extend(self.stream.receive(data))
        if self._inbox and self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._inbox:
                ev = self._inbox.popleft()
                await self._handle(ev)
        finally:
            self._worker = None

    async def _handle(self, ev: object) -> None:
        if isinstance(ev, StreamOpened):
            self.stream_id = os.urandom(8).hex()
            self.domain = ev.to
            self.stream.open(self.stream_id, ev.to, None)
            if ev.to not in self.secrets:
                self.close(StreamError("host-unknown", "no such component"))
            self._flush()
        elif isinstance(ev, ElementReceived):
            el = ev.element
            if not self.authenticated:
                if local_name(el) != "handshake":
                    self.close(StreamError("not-authorized"))
                    return
                expected = hashlib.sha1(
                    (self.stream_id + self.secrets[self.domain]).encode()
                ).hexdigest()
                if not hmac.compare_digest(expected, (el.text or "").strip().lower()):
                    self.close(StreamError("not-authorized", "wrong secret"))
                    return
                if self.domain in self.router.components:
                    self.close(StreamError("conflict", "the component is already connected"))
                    return
                self.authenticated = True
                self.router.register_component(self)
                self.stream.send_text("<handshake/>")
                self._flush()
                log.info("component %s connected", self.domain)
                return
            if el.tag not in STANZA_TAGS and not el.tag.startswith("{jabber:component:accept}"):
                self.close(StreamError("unsupported-stanza-type"))
                return
            renamespace(el, ns.COMPONENT, ns.CLIENT)
            frm = try_parse(el.get("from"))
            if frm is None or frm.domain != self.domain:
                self.close(StreamError("invalid-from", "send from your own domain"))
                return
            to = try_parse(el.get("to"))
            if to is None:
                return
            el.set("to", str(to))
            el.set("from", str(frm))
            await self.router.route(el, self)
        elif isinstance(ev, StreamClosed):
            self.close()
        elif isinstance(ev, ProtocolViolation):
            self._flush()
            self._shutdown()

    def _flush(self) -> None:
        data = self.stream.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[attr-defined]

    def close(self, error: StreamError | None = None) -> None:
        self.stream.close(error)
        self._flush()
        self._shutdown()

    def _shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            if self.authenticated:
                self.router.unregister_component(self)
                log.info("component %s disconnected", self.domain)
            self.transport.close()  # type: ignore[attr-defined]

    def connection_lost(self) -> None:
        self._shutdown()
