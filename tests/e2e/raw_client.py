"""A small, independent XMPP client over a raw socket, for tests.

It shares no code with the server: it parses with the standard library's
``xml.etree.ElementTree.XMLPullParser``, does SCRAM with ``scramp``'s client side, and TLS with
``ssl``. Tests use it to see exact stream and stanza errors, to send malformed input, and as a
second client implementation beside slixmpp.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import scramp

STREAM = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
STREAMS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class StreamEnded(Exception):
    """The server closed the stream (or the socket)."""


class RawClient:
    """One connection. ``await recv()`` returns the next top-level element."""

    def __init__(self, domain: str = "localhost") -> None:
        self.domain = domain
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.features: ET.Element | None = None
        self.jid = ""
        self.stream_closed = False
        self._parser: ET.XMLPullParser | None = None
        self._depth = 0
        self._queue: list[ET.Element] = []
        self._stash: list[ET.Element] = []

    # ------------------------------------------------------------------ transport
    async def connect(self, port: int, ca: Path | None = None, direct_tls: bool = False) -> None:
        ctx = self._context(ca) if direct_tls else None
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname=self.domain if ctx else None
        )
        self._ca = ca

    @staticmethod
    def _context(ca: Path | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if ca is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def send_raw(self, data: str | bytes) -> None:
        assert self.writer is not None
        self.writer.write(data.encode() if isinstance(data, str) else data)

    def send(self, el: ET.Element) -> None:
        self.send_raw(ET.tostring(el, encoding="unicode", default_namespace=None))

    def send_xml(self, text: str) -> None:
        self.send_raw(text)

    def begin_parser(self) -> None:
        """Expect a new stream from the server (at connect, after STARTTLS and SASL)."""
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0

    def open_stream(self, to: str | None = None) -> None:
        self.begin_parser()
        self.send_raw(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{STREAM}' to='{to or self.domain}' version='1.0'>"
        )

    async def recv(self, timeout: float = 5.0) -> ET.Element:
        """The next complete top-level element (stream errors included)."""
        while not self._queue:
            if self.stream_closed:
                raise StreamEnded("stream closed")
            assert self.reader is not None and self._parser is not None
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                self.stream_closed = True
                raise StreamEnded("connection closed")
            self._parser.feed(data)
            for event, el in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        self._queue.append(el)
                    elif self._depth == 0:
                        self.stream_closed = True
        return self._queue.pop(0)

    async def wait_for(
        self, pred: Callable[[ET.Element], bool], timeout: float = 5.0
    ) -> ET.Element:
        """The first element matching ``pred``; others stay for later calls, in order."""
        for i, el in enumerate(self._stash):
            if pred(el):
                return self._stash.pop(i)
        while True:
            el = await self.recv(timeout)
            if pred(el):
                return el
            self._stash.append(el)

    async def recv_until(self, tag: str, timeout: float = 5.0) -> ET.Element:
        """The first element with ``tag`` (Clark notation); others stay for later calls."""
        return await self.wait_for(lambda el: el.tag == tag, timeout)

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the stream and the socket."""
        try:
            while True:
                await self.recv(timeout)
        except StreamEnded:
            return True

    async def stream_error(self, timeout: float = 5.0) -> str:
        """Read until a stream error; return its condition."""
        el = await self.recv_until(f"{{{STREAM}}}error", timeout)
        for c in el:
            if c.tag.startswith(f"{{{STREAMS_NS}}}") and not c.tag.endswith("}text"):
                return c.tag.split("}")[1]
        return ""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    # ------------------------------------------------------------------ negotiation
    async def start(self) -> ET.Element:
        """Open the stream and return the features."""
        self.open_stream()
        self.features = await self.recv_until(f"{{{STREAM}}}features")
        return self.features

    async def starttls(self) -> None:
        self.send_raw(f"<starttls xmlns='{TLS_NS}'/>")
        el = await self.recv()
        assert el.tag == f"{{{TLS_NS}}}proceed", el.tag
        assert self.writer is not None
        await self.writer.start_tls(self._context(self._ca), server_hostname=self.domain)
        await self.start()

    def mechanisms(self) -> list[str]:
        assert self.features is not None
        return [m.text or "" for m in self.features.iter(f"{{{SASL_NS}}}mechanism")]

    async def authenticate(self, user: str, password: str, mechanism: str) -> ET.Element:
        """Run SASL; returns the final <success/> or <failure/> element."""
        if mechanism == "PLAIN":
            payload = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            self.send_raw(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{payload}</auth>")
            return await self.recv()
        binding = None
        if mechanism.endswith("-PLUS"):
            assert self.writer is not None
            ssl_obj = self.writer.get_extra_info("ssl_object")
            binding = ("tls-server-end-point", end_point_hash(ssl_obj.getpeercert(True)))
        client = scramp.ScramClient([mechanism], user, password, channel_binding=binding)
        first = base64.b64encode(client.get_client_first().encode()).decode()
        self.send_raw(f"<auth xmlns='{SASL_NS}' mechanism='{mechanism}'>{first}</auth>")
        el = await self.recv()
        if el.tag != f"{{{SASL_NS}}}challenge":
            return el
        client.set_server_first(base64.b64decode(el.text or "").decode())
        final = base64.b64encode(client.get_client_final().encode()).decode()
        self.send_raw(f"<response xmlns='{SASL_NS}'>{final}</response>")
        el = await self.recv()
        if el.tag == f"{{{SASL_NS}}}success":
            client.set_server_final(base64.b64decode(el.text or "").decode())
        return el

    async def bind(self, resource: str | None = None) -> ET.Element:
        res = f"<resource>{resource}</resource>" if resource else ""
        self.send_raw(f"<iq type='set' id='bind1'><bind xmlns='{BIND_NS}'>{res}</bind></iq>")
        el = await self.recv_until(f"{{{CLIENT}}}iq")
        jid = el.find(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
        if jid is not None:
            self.jid = jid.text or ""
        return el

    async def login(
        self,
        port: int,
        user: str,
        password: str = "secret",
        ca: Path | None = None,
        direct_tls: bool = False,
        mechanism: str = "SCRAM-SHA-256",
        resource: str | None = "raw",
    ) -> RawClient:
        """Connect, secure, authenticate and bind: ready for stanzas."""
        await self.connect(port, ca, direct_tls)
        await self.start()
        if not direct_tls:
            await self.starttls()
        result = await self.authenticate(user, password, mechanism)
        if result.tag != f"{{{SASL_NS}}}success":
            raise PermissionError(ET.tostring(result, encoding="unicode"))
        await self.start()
        await self.bind(resource)
        return self

    # ------------------------------------------------------------------ stanzas
    async def iq(self, xml: str, timeout: float = 5.0) -> ET.Element:
        """Send ``<iq ...>`` text with an id of our own; return the matching reply."""
        iq_id = uuid.uuid4().hex[:8]
        self.send_raw(xml.replace("<iq ", f"<iq id='{iq_id}' ", 1))
        tag = f"{{{CLIENT}}}iq"
        return await self.wait_for(lambda el: el.tag == tag and el.get("id") == iq_id, timeout)

    async def next(self, kind: str, timeout: float = 5.0) -> ET.Element:
        """The next ``message``/``presence``/``iq`` stanza."""
        return await self.recv_until(f"{{{CLIENT}}}{kind}", timeout)


def end_point_hash(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1: the certificate's hash, with its signature hash (SHA-256 at least)."""
    from cryptography import x509

    algo = x509.load_der_x509_certificate(cert_der).signature_hash_algorithm
    name = algo.name if algo is not None and algo.name not in ("md5", "sha1") else "sha256"
    return hashlib.new(name, cert_der).digest()


def error_condition(stanza: ET.Element) -> str:
    """The defined condition of a stanza error, or '' when there is none."""
    err = stanza.find(f"{{{CLIENT}}}error")
    if err is None:
        return ""
    for c in err:
        if c.tag.startswith(f"{{{STANZAS_NS}}}") and not c.tag.endswith("}text"):
            return c.tag.split("}")[1]
    return ""
