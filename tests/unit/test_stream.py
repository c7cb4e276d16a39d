"""Stream transcripts, no sockets: XML in, XML out.

First the sans-I/O :class:`XmppStream`, then a whole client connection over a fake transport:
negotiation (STARTTLS, SASL, bind) and stanza intake, with an in-memory database."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import scramp

from minimix.config import LimitsConfig
from minimix.core.c2s import ClientConnection, ClientServices
from minimix.core.hooks import Hooks
from minimix.core.router import Router
from minimix.core.session import SessionRegistry
from minimix.extensions.ping import Ping
from minimix.protocol import ns
from minimix.protocol.stanza import StreamError
from minimix.protocol.xml import element
from minimix.storage.database import Database
from minimix.storage.stores import AccountStore
from minimix.stream.machine import (
    ElementReceived,
    ProtocolViolation,
    StreamClosed,
    StreamOpened,
    XmppStream,
)

OPEN = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)

# --------------------------------------------------------------------------- XmppStream


def test_open_receive_send_close() -> None:
    s = XmppStream()
    (opened,) = s.receive(OPEN.encode())
    assert opened == StreamOpened(to="localhost", version="1.0", lang="en", content_ns=ns.CLIENT)
    s.open("abc", "localhost", element(ns.STREAM, "features"))
    out = s.data_to_send().decode()
    assert out.startswith("<?xml version='1.0'?><stream:stream xmlns=\"jabber:client\"")
    assert 'id="abc"' in out and 'from="localhost"' in out and 'version="1.0"' in out
    assert out.endswith("<stream:features></stream:features>")
    (ev,) = s.receive(b"<message to='a@b'><body>x</body></message>")
    assert isinstance(ev, ElementReceived)
    s.send(ev.element)
    assert s.data_to_send() == b'<message to="a@b"><body>x</body></message>'
    assert s.receive(b"</stream:stream>") == [StreamClosed()]
    s.close()
    assert s.data_to_send() == b"</stream:stream>"
    assert s.closed and s.receive(b"<more/>") == []


def test_violation_queues_the_stream_error_and_closes() -> None:
    s = XmppStream()
    s.receive(OPEN.encode())
    s.open("abc", "localhost", None)
    s.data_to_send()
    (ev,) = s.receive(b"<message><body></message>")
    assert isinstance(ev, ProtocolViolation) and ev.condition == "not-well-formed"
    out = s.data_to_send().decode()
    assert out.startswith(
        '<stream:error><not-well-formed xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>'
    )
    assert out.endswith("</stream:error></stream:stream>")


def test_error_before_our_header_still_sends_one() -> None:
    s = XmppStream()
    (ev,) = s.receive(b"<stream:stream xmlns:stream='urn:nope' xmlns='jabber:client'>")
    assert isinstance(ev, ProtocolViolation) and ev.condition == "invalid-namespace"
    out = s.data_to_send().decode()
    assert out.startswith("<?xml version='1.0'?><stream:stream")
    assert "<invalid-namespace" in out and out.endswith("</stream:stream>")


def test_component_stream_namespace() -> None:
    s = XmppStream(content_ns=ns.COMPONENT)
    (ev,) = s.receive(
        b"<stream:stream xmlns='jabber:component:accept' "
        b"xmlns:stream='http://etherx.jabber.org/streams' to='gw.localhost'>"
    )
    assert isinstance(ev, StreamOpened) and ev.content_ns == ns.COMPONENT
    s2 = XmppStream(content_ns=ns.COMPONENT)
    (ev,) = s2.receive(OPEN.encode())
    assert isinstance(ev, ProtocolViolation) and ev.condition == "invalid-namespace"


def test_reset_expects_a_new_header() -> None:
    s = XmppStream()
    s.receive(OPEN.encode())
    s.reset()
    assert not s.header_received
    (ev,) = s.receive(OPEN.encode())
    assert isinstance(ev, StreamOpened)


# --------------------------------------------------------------------------- a connection


@dataclass
class FakeTransport:
    """Records what the server writes; pretends TLS works."""

    tls: bool = False
    starttls_ok: bool = True
    framed: bool = False
    peer: str = "192.0.2.1"
    out: list[bytes] = field(default_factory=list)
    closed: bool = False
    conn: ClientConnection | None = None

    @property
    def is_tls(self) -> bool:
        return self.tls

    @property
    def can_starttls(self) -> bool:
        return not self.tls

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def write_frames(self, frames: list[str]) -> None:
        self.out.append("".join(frames).encode())

    async def start_tls(self) -> bool:
        self.tls = self.starttls_ok
        return self.starttls_ok

    def close(self) -> None:
        self.closed = True

    def buffered(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def tls_server_end_point(self) -> bytes | None:
        return b"\x07" * 32 if self.tls else None

    def take(self) -> str:
        text = b"".join(self.out).decode()
        self.out.clear()
        return text


@dataclass
class Harness:
    services: ClientServices
    accounts: AccountStore

    def connect(self, tls: bool = False) -> tuple[ClientConnection, FakeTransport]:
        t = FakeTransport(tls=tls)
        conn = ClientConnection(self.services, t)
        t.conn = conn
        return conn, t


@asynccontextmanager
async def harness(**limits: float) -> AsyncIterator[Harness]:
    db = Database(":memory:")
    hooks = Hooks()
    sessions = SessionRegistry()
    router = Router("localhost", hooks, sessions)
    accounts = AccountStore(db)
    router.account_exists = accounts.exists
    Ping().register(hooks)
    services = ClientServices(
        domain="localhost",
        router=router,
        hooks=hooks,
        sessions=sessions,
        accounts=accounts,
        limits=LimitsConfig(**limits),  # type: ignore[arg-type]
    )
    accounts.create("alice", "pencil")
    try:
        yield Harness(services, accounts)
    finally:
        db.close()


async def say(conn: ClientConnection, t: FakeTransport, xml: str) -> str:
    """Feed the client's XML; let the connection work; return what the server wrote."""
    conn.data_received(xml.encode())
    for _ in range(2000):  # until the connection has handled it (PLAIN runs in a thread)
        await asyncio.sleep(0 if conn._worker is None else 0.001)
        if conn._worker is None:
            break
    for _ in range(10):  # tasks it started (session end, routing)
        await asyncio.sleep(0)
    return t.take()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_transcript_starttls_plain_bind_ping_close() -> None:
    async with harness() as h:
        conn, t = h.connect()
        out = await say(conn, t, OPEN)
        assert (
            '<stream:features><starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"><required/>' in out
        )
        assert "mechanisms" not in out  # nothing to authenticate with before TLS
        out = await say(conn, t, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert out == '<proceed xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>'
        assert t.tls
        out = await say(conn, t, OPEN)
        mechs = re.findall(r"<mechanism>([^<]+)</mechanism>", out)
        assert mechs == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                         "SCRAM-SHA-1", "PLAIN"]  # fmt: skip
        assert "starttls" not in out
        auth = b64("\0alice\0pencil")
        out = await say(conn, t, f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{auth}</auth>")
        assert out == f'<success xmlns="{ns.SASL}"/>'
        out = await say(conn, t, OPEN)
        assert f'<bind xmlns="{ns.BIND}"/>' in out
        out = await say(
            conn,
            t,
            f"<iq type='set' id='b'><bind xmlns='{ns.BIND}'><resource>desk</resource></bind></iq>",
        )
        assert out == (
            f'<iq type="result" id="b"><bind xmlns="{ns.BIND}"><jid>alice@localhost/desk</jid>'
            "</bind></iq>"
        )
        out = await say(
            conn, t, "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        assert out == '<iq type="result" id="p" to="alice@localhost/desk" from="localhost"/>'
        out = await say(conn, t, "</stream:stream>")
        assert out == "</stream:stream>"
        assert t.closed
        assert len(h.services.sessions) == 0


async def test_transcript_scram_sha_256_plus() -> None:
    async with harness() as h:
        conn, t = h.connect(tls=True)
        await say(conn, t, OPEN)
        client = scramp.ScramClient(
            ["SCRAM-SHA-256-PLUS"],
            "alice",
            "pencil",
            channel_binding=("tls-server-end-point", b"\x07" * 32),
        )
        out = await say(
            conn,
            t,
            f"<auth xmlns='{ns.SASL}' mechanism='SCRAM-SHA-256-PLUS'>"
            f"{b64(client.get_client_first())}</auth>",
        )
        challenge = re.fullmatch(f'<challenge xmlns="{ns.SASL}">([^<]+)</challenge>', out)
        assert challenge is not None
        client.set_server_first(base64.b64decode(challenge.group(1)).decode())
        out = await say(
            conn, t, f"<response xmlns='{ns.SASL}'>{b64(client.get_client_final())}</response>"
        )
        success = re.fullmatch(f'<success xmlns="{ns.SASL}">([^<]+)</success>', out)
        assert success is not None
        client.set_server_final(base64.b64decode(success.group(1)).decode())


async def test_transcript_failures_and_recovery() -> None:
    async with harness() as h:
        conn, t = h.connect(tls=True)
        await say(conn, t, OPEN)
        out = await say(conn, t, f"<auth xmlns='{ns.SASL}' mechanism='X-UNKNOWN'/>")
        assert out == f'<failure xmlns="{ns.SASL}"><invalid-mechanism/></failure>'
        out = await say(conn, t, f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>!!!</auth>")
        assert out == f'<failure xmlns="{ns.SASL}"><incorrect-encoding/></failure>'
        bad = b64("\0alice\0wrong")
        out = await say(conn, t, f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{bad}</auth>")
        assert out == f'<failure xmlns="{ns.SASL}"><not-authorized/></failure>'
        out = await say(conn, t, f"<response xmlns='{ns.SASL}'>abcd</response>")
        assert "malformed-request" in out
        good = b64("\0alice\0pencil")
        out = await say(conn, t, f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{good}</auth>")
        assert out == f'<success xmlns="{ns.SASL}"/>'
        # SASL again after success is a protocol violation.
        await say(conn, t, OPEN)
        out = await say(conn, t, f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{good}</auth>")
        assert "<policy-violation" in out and out.endswith("</stream:stream>")


@pytest.mark.parametrize(
    ("to", "condition"),
    [("example.org", "host-unknown"), ("user@localhost", "host-unknown")],
)
async def test_transcript_wrong_host(to: str, condition: str) -> None:
    async with harness() as h:
        conn, t = h.connect()
        out = await say(conn, t, OPEN.replace("to='localhost'", f"to='{to}'"))
        assert f'<{condition} xmlns="{ns.STREAMS}"/>' in out
        assert t.closed


async def bound(
    h: Harness, user: str, password: str, resource: str
) -> tuple[ClientConnection, FakeTransport, str]:
    """A connection through TLS, PLAIN and bind; returns the bind result too."""
    conn, t = h.connect(tls=True)
    await say(conn, t, OPEN)
    plain = b64(f"\0{user}\0{password}")
    assert "<success" in await say(
        conn, t, f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{plain}</auth>"
    )
    await say(conn, t, OPEN)
    bind = f"<bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind>"
    return conn, t, await say(conn, t, f"<iq type='set' id='b'>{bind}</iq>")


async def test_transcript_stamps_and_checks_from() -> None:
    async with harness() as h:
        h.accounts.create("bob", "x")
        conn, t, _ = await bound(h, "alice", "pencil", "r")
        _, bt, _ = await bound(h, "bob", "x", "r")
        await say(conn, t, "<message to='bob@localhost/r'><body>hi</body></message>")
        assert bt.take() == (
            '<message to="bob@localhost/r" from="alice@localhost/r"><body>hi</body></message>'
        )
        out = await say(conn, t, "<message from='bob@localhost/r' to='bob@localhost/r'/>")
        assert f'<invalid-from xmlns="{ns.STREAMS}"/>' in out and t.closed


async def test_conflicting_bind_replaces_the_old_stream() -> None:
    async with harness() as h:
        _, old_t, out = await bound(h, "alice", "pencil", "same")
        assert "<jid>alice@localhost/same</jid>" in out
        _, _, out = await bound(h, "alice", "pencil", "same")
        assert "<jid>alice@localhost/same</jid>" in out
        assert f'<conflict xmlns="{ns.STREAMS}"/>' in old_t.take() and old_t.closed
        assert len(h.services.sessions) == 1


async def test_unauthenticated_timeout() -> None:
    async with harness(unauthenticated_timeout=0.05) as h:
        conn, t = h.connect()
        await say(conn, t, OPEN)
        await asyncio.sleep(0.1)
        assert f'<connection-timeout xmlns="{ns.STREAMS}"/>' in t.take()
        assert t.closed
        assert conn.stream.closed
        assert isinstance(StreamError("connection-timeout"), StreamError)
