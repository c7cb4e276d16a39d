"""A raw XMPP client for hostile tests, and the well-behaved-neighbour check.

:class:`Peer` shares no code with the server: it parses what the server sends with the standard
library's ``XMLPullParser`` and writes whatever bytes a test gives it, so tests can send
malformed XML, bind a chosen source address (``127.0.0.2`` is another IP address on loopback),
stop reading, or speak stream management by hand.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tests.support import Client, Running, connect

STREAM = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
STREAMS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SM_NS = "urn:xmpp:sm:3"
REGISTER_NS = "jabber:iq:register"

_ids = itertools.count(1)


class Endpoint(Protocol):
    """Where to log in: ``tests.support.Running``, or a server process's port and CA."""

    @property
    def port(self) -> int: ...

    @property
    def ca(self) -> Path: ...


class Ended(Exception):
    """The server closed the stream or the connection."""


class Peer:
    """One raw connection to the server. ``await recv()`` gives the next top-level element."""

    def __init__(self, domain: str = "localhost") -> None:
        self.domain = domain
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.received = bytearray()  # every byte the server sent on the current stream layer
        self.features: ET.Element | None = None
        self.jid = ""
        self.ended = False
        self._parser: ET.XMLPullParser | None = None
        self._depth = 0
        self._queue: list[ET.Element] = []
        self._ca: Path | None = None

    # ------------------------------------------------------------------ transport
    async def connect(
        self,
        port: int,
        ca: Path | None = None,
        local_ip: str | None = None,
        direct_tls: bool = False,
        rcvbuf: int | None = None,
    ) -> Peer:
        self._ca = ca
        ctx = self.tls_context() if direct_tls else None
        sock = None
        if local_ip is not None or rcvbuf is not None:
            import socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((local_ip or "127.0.0.1", 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            self.reader, self.writer = await asyncio.open_connection(
                sock=sock, ssl=ctx, server_hostname=self.domain if ctx else None
            )
        else:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname=self.domain if ctx else None
            )
        return self

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self._ca) if self._ca else None)
        if self._ca is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def send(self, data: str | bytes) -> None:
        assert self.writer is not None
        if not self.writer.is_closing():
            self.writer.write(data.encode() if isinstance(data, str) else data)

    async def drain(self) -> None:
        assert self.writer is not None
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()

    # ------------------------------------------------------------------ reading
    def _new_stream(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.received.clear()

    async def recv(self, timeout: float = 5.0) -> ET.Element:
        """The next complete top-level element (stream errors included)."""
        while not self._queue:
            if self.ended:
                raise Ended("stream closed")
            assert self.reader is not None and self._parser is not None
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except (ConnectionError, ssl.SSLError) as exc:
                self.ended = True
                raise Ended(str(exc)) from None
            if not data:
                self.ended = True
                raise Ended("connection closed")
            self.received += data
            self._parser.feed(data)
            for event, el in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 1:
                        self._queue.append(el)  # type: ignore[arg-type]
                    elif self._depth == 0:
                        self.ended = True
        return self._queue.pop(0)

    async def recv_until(
        self, match: str | Callable[[ET.Element], bool], timeout: float = 5.0
    ) -> ET.Element:
        """Skip elements until one with tag ``match`` (Clark notation) or matching a test."""
        while True:
            el = await self.recv(timeout)
            if (el.tag == match) if isinstance(match, str) else match(el):
                return el

    async def stream_error(self, timeout: float = 5.0) -> str:
        """Read until a stream error arrives; return its condition."""
        el = await self.recv_until(f"{{{STREAM}}}error", timeout)
        return condition_of(el, STREAMS_NS)

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the stream or the connection."""
        try:
            while True:
                await self.recv(timeout)
        except Ended:
            return True

    # ------------------------------------------------------------------ negotiation
    def open_stream(self, to: str | None = None) -> None:
        self._new_stream()
        self.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='{STREAM}' to='{to or self.domain}' version='1.0'>"
        )

    async def start(self) -> ET.Element:
        self.open_stream()
        self.features = await self.recv_until(f"{{{STREAM}}}features")
        return self.features

    async def starttls(self) -> None:
        self.send(f"<starttls xmlns='{TLS_NS}'/>")
        el = await self.recv()
        assert el.tag == f"{{{TLS_NS}}}proceed", el.tag
        assert self.writer is not None
        await self.writer.start_tls(self.tls_context(), server_hostname=self.domain)
        await self.start()

    async def secure(
        self, port: int, ca: Path | None, local_ip: str | None = None, rcvbuf: int | None = None
    ) -> Peer:
        """Connect and negotiate STARTTLS: ready to authenticate."""
        await self.connect(port, ca, local_ip, rcvbuf=rcvbuf)
        await self.start()
        await self.starttls()
        return self

    async def auth_plain(self, user: str, password: str) -> ET.Element:
        """SASL PLAIN; returns the ``<success/>`` or ``<failure/>``."""
        payload = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{payload}</auth>")
        return await self.recv()

    async def bind(self, resource: str | None = None) -> ET.Element:
        res = f"<resource>{resource}</resource>" if resource else ""
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{BIND_NS}'>{res}</bind></iq>")
        el = await self.recv_until(f"{{{CLIENT}}}iq")
        jid = el.find(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
        if jid is not None:
            self.jid = jid.text or ""
        return el

    async def login(
        self,
        running: Endpoint,
        user: str,
        password: str = "secret",
        resource: str | None = "raw",
        local_ip: str | None = None,
        rcvbuf: int | None = None,
    ) -> Peer:
        """Connect, STARTTLS, PLAIN, bind: ready for stanzas."""
        await self.secure(running.port, running.ca, local_ip, rcvbuf)
        result = await self.auth_plain(user, password)
        if result.tag != f"{{{SASL_NS}}}success":
            raise PermissionError(ET.tostring(result, encoding="unicode"))
        await self.start()
        bound = await self.bind(resource)
        if bound.get("type") != "result":
            raise PermissionError(ET.tostring(bound, encoding="unicode"))
        return self

    # ------------------------------------------------------------------ stanzas
    async def iq(self, xml: str, timeout: float = 5.0) -> ET.Element:
        """Send ``<iq ...>`` text with an id of our own; return the matching reply."""
        iq_id = f"q{next(_ids)}"
        self.send(xml.replace("<iq ", f"<iq id='{iq_id}' ", 1))
        return await self.recv_until(
            lambda el: el.tag == f"{{{CLIENT}}}iq" and el.get("id") == iq_id, timeout
        )

    async def next(self, kind: str, timeout: float = 5.0) -> ET.Element:
        """The next ``message``/``presence``/``iq`` stanza."""
        return await self.recv_until(f"{{{CLIENT}}}{kind}", timeout)


def condition_of(el: ET.Element, namespace: str = STANZAS_NS) -> str:
    """The defined condition inside a stream error, SASL failure, or stanza error."""
    if el.tag.endswith("}iq") or el.tag.endswith("}message") or el.tag.endswith("}presence"):
        err = el.find(f"{{{CLIENT}}}error")
        if err is None:
            return ""
        el = err
    for c in el:
        if c.tag.startswith(f"{{{namespace}}}") and not c.tag.endswith("}text"):
            return c.tag.split("}")[1]
    return ""


def sasl_condition(el: ET.Element) -> str:
    return condition_of(el, SASL_NS) if el.tag == f"{{{SASL_NS}}}failure" else ""


# ---------------------------------------------------------------------- neighbours

_bodies = itertools.count(1)


async def neighbours(running: Running, a: str = "alice", b: str = "bob") -> tuple[Client, Client]:
    """Two well-behaved slixmpp clients, connected before the attack starts."""
    ja = running.add_user(a)
    jb = running.add_user(b)
    return await connect(running, f"{ja}/good"), await connect(running, f"{jb}/good")


async def _receive_body(client: Client, body: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await client.next_message(max(0.05, deadline - loop.time()))
        if msg["body"] == body:
            return


async def assert_unaffected(a: Client, b: Client, timeout: float = 5.0) -> None:
    """Both well-behaved clients still exchange messages, both ways."""
    for sender, receiver in ((a, b), (b, a)):
        body = f"still fine {next(_bodies)}"
        sender.send_message(mto=receiver.boundjid.full, mbody=body, mtype="chat")
        await _receive_body(receiver, body, timeout)


async def hang_up(*clients: Client) -> None:
    """Disconnect slixmpp clients, waiting only until the server has closed each stream."""
    waits = [asyncio.ensure_future(c.disconnect(wait=1.0)) for c in clients]
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 3)
