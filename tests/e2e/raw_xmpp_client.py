"""A minimal XMPP client written from RFC 6120 for tests, independent of slixmpp: asyncio streams,
STARTTLS, SASL PLAIN, resource binding, and raw stanzas in and out (ElementTree pull parsing)."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

STREAM = "http://etherx.jabber.org/streams"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SM = "urn:xmpp:sm:3"


class RawClient:
    def __init__(self, host: str, port: int, ca: Path, domain: str = "localhost") -> None:
        self.host, self.port, self.ca, self.domain = host, port, ca, domain
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.jid = ""
        self.inbox: list[ET.Element] = []
        self._parser: ET.XMLPullParser | None = None
        self._depth = 0
        self._reading: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.handled = 0

    # ------------------------------------------------------------------ stream plumbing
    def _open_stream(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.send(
            f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{STREAM}' to='{self.domain}' version='1.0'>"
        )

    def send(self, xml: str) -> None:
        assert self.writer is not None
        self.writer.write(xml.encode())

    async def _next_element(self) -> ET.Element:
        """The next complete top-level element of the stream (reading while needed)."""
        assert self.reader is not None and self._parser is not None
        while True:
            for event, el in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        return el
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("stream closed")
            self._parser.feed(data)

    async def connect(
        self, user: str, password: str, resource: str, resume: tuple[str, int] | None = None
    ) -> None:
        """Log in and bind ``resource``; or, with ``resume=(previd, h)``, resume that stream
        (XEP-0198) instead of binding."""
        await self._authenticate(user, password)
        if resume is not None:
            previd, h = resume
            self.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
            answer = await self._next_element()
            assert answer.tag == f"{{{SM}}}resumed", ET.tostring(answer)
            self.handled = h  # the count goes on from the resumed stream (XEP-0198 §5)
            self._reading = asyncio.ensure_future(self._read_forever())
            return
        await self._bind(resource)

    async def _authenticate(self, user: str, password: str) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self._open_stream()
        features = await self._next_element()
        assert features.find(f"{{{TLS}}}starttls") is not None
        self.send(f"<starttls xmlns='{TLS}'/>")
        proceed = await self._next_element()
        assert proceed.tag == f"{{{TLS}}}proceed"
        ctx = ssl.create_default_context(cafile=str(self.ca))
        await self.writer.start_tls(ctx, server_hostname=self.domain)
        self._open_stream()
        features = await self._next_element()
        mechs = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        assert "PLAIN" in mechs, mechs
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        outcome = await self._next_element()
        assert outcome.tag == f"{{{SASL}}}success", ET.tostring(outcome)
        self._open_stream()
        await self._next_element()  # features: bind

    async def _bind(self, resource: str) -> None:
        self.send(
            f"<iq type='set' id='bind1'><bind xmlns='{BIND}'><resource>{resource}</resource>"
            "</bind></iq>"
        )
        bound = await self._next_element()
        self.jid = bound.findtext(f"{{{BIND}}}bind/{{{BIND}}}jid") or ""
        assert self.jid.endswith(f"/{resource}"), ET.tostring(bound)
        self.send("<presence/>")
        self._reading = asyncio.ensure_future(self._read_forever())

    async def enable_stream_management(self) -> str:
        """XEP-0198 with resumption; returns the stream id to resume. Stanzas are counted."""
        self.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await self.take(lambda el: el.tag == f"{{{SM}}}enabled")
        return enabled.get("id", "")

    def drop(self) -> None:
        """Lose the connection without closing the stream (a phone entering a tunnel)."""
        if self.writer is not None:
            transport = self.writer.transport
            transport.abort()
        if self._reading is not None:
            self._reading.cancel()

    async def _read_forever(self) -> None:
        try:
            while True:
                el = await self._next_element()
                if el.tag == f"{{{SM}}}enabled":
                    self.handled = 0  # counting starts here (XEP-0198 §4)
                if el.tag == f"{{{SM}}}r":
                    self.send(f"<a xmlns='{SM}' h='{self.handled}'/>")
                    continue
                if el.tag.split("}", 1)[-1] in ("message", "presence", "iq"):
                    self.handled += 1
                self.inbox.append(el)
                self._changed.set()
        except (ConnectionError, asyncio.CancelledError, ET.ParseError):
            return

    async def take(self, pred: Callable[[ET.Element], bool], timeout: float = 5.0) -> ET.Element:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, el in enumerate(self.inbox):
                if pred(el):
                    return self.inbox.pop(i)
            left = deadline - loop.time()
            if left <= 0:
                dump = "\n".join(ET.tostring(e, encoding="unicode") for e in self.inbox)
                raise TimeoutError("nothing matched; got:\n" + dump)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self.writer is not None:
            try:
                self.send("</stream:stream>")
                await self.writer.drain()
            except (ConnectionError, RuntimeError):
                pass
            self.writer.close()
        if self._reading is not None:
            self._reading.cancel()


def local(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]
