"""Bad input over a raw socket: each gets the standard stream or stanza error, and a second,
already-connected client keeps being served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.e2e.raw_client import CLIENT, STREAM, RawClient, error_condition
from tests.support import Client, Running, connect, disconnect, running_server

MAX = 4096


def header(content_ns: str, stream_ns: str, to: str) -> str:
    return (
        f"<stream:stream xmlns='{content_ns}' xmlns:stream='{stream_ns}' to='{to}' version='1.0'>"
    )


@asynccontextmanager
async def witnessed(tmp_path: Path) -> AsyncIterator[tuple[Running, Client]]:
    """A server with a bystander client already logged in; afterwards, the bystander must
    still be served: it pings the server and gets a message from a fresh client."""
    async with running_server(tmp_path, limits={"max_stanza_size": MAX}) as srv:
        srv.add_user("mallory")
        srv.add_user("bob")
        srv.add_user("carol")
        bob = await connect(srv, "bob@localhost/desk")
        yield srv, bob
        await bob.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        carol = await RawClient().login(srv.port, "carol", ca=srv.ca)
        carol.send_raw(
            "<message to='bob@localhost/desk' type='chat'><body>still here?</body></message>"
        )
        msg = await bob.next_message()
        assert msg["body"] == "still here?"
        carol.close()
        await disconnect(bob)


async def authenticated(srv: Running) -> RawClient:
    return await RawClient().login(srv.port, "mallory", ca=srv.ca)


async def secured(srv: Running) -> RawClient:
    """TLS in place, stream opened, not authenticated."""
    c = RawClient()
    await c.connect(srv.port, srv.ca)
    await c.start()
    await c.starttls()
    return c


STREAM_ERRORS = [
    ("unclosed tag mismatch", "<message><body>x</message>", "not-well-formed"),
    ("garbage", "<<<>>>", "not-well-formed"),
    ("bad utf-8", b"<message><body>\xff\xfe</body></message>", "not-well-formed"),
    ("undefined entity", "<message><body>&xxe;</body></message>", "restricted-xml"),
    ("doctype inside the stream", '<!DOCTYPE foo [<!ENTITY x "y">]><message/>', "not-well-formed"),
    ("comment", "<!-- hello --><message/>", "restricted-xml"),
    ("processing instruction", "<?php echo 1; ?><message/>", "restricted-xml"),
    (
        "oversized stanza",
        "<message><body>" + "a" * (MAX + 100) + "</body></message>",
        "policy-violation",
    ),
    ("slowly oversized", "<message><body>" + "b" * (MAX - 10), "policy-violation"),
    ("deep nesting", "<message>" + "<x>" * 200, "policy-violation"),
    ("unknown top-level element", "<foo xmlns='urn:example'/>", "unsupported-stanza-type"),
    (
        "spoofed from",
        "<message from='bob@localhost/desk' to='bob@localhost'><body>hi</body></message>",
        "invalid-from",
    ),
    ("spoofed from domain", "<message from='localhost' to='bob@localhost'/>", "invalid-from"),
    ("invalid from", "<message from='@@' to='bob@localhost'/>", "invalid-from"),
]


@pytest.mark.parametrize(
    ("name", "data", "condition"), STREAM_ERRORS, ids=[e[0] for e in STREAM_ERRORS]
)
async def test_stream_error_after_login(
    tmp_path: Path, name: str, data: str | bytes, condition: str
) -> None:
    async with witnessed(tmp_path) as (srv, bob):
        m = await authenticated(srv)
        m.send_raw(data)
        assert await m.stream_error() == condition
        assert await m.closed()
        m.close()
        if "spoofed" in name:
            with pytest.raises(TimeoutError):
                await bob.next_message(timeout=0.3)


@pytest.mark.parametrize(
    ("name", "data", "condition"),
    [
        (
            "doctype in the stream header",
            "<?xml version='1.0'?><!DOCTYPE stream>",
            "restricted-xml",
        ),
        ("not XML at all", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not-well-formed"),
        (
            "wrong stream namespace",
            header("jabber:client", "urn:wrong", "localhost"),
            "invalid-namespace",
        ),
        (
            "wrong content namespace",
            header("jabber:server", STREAM, "localhost"),
            "invalid-namespace",
        ),
        (
            "unknown host",
            header("jabber:client", STREAM, "example.org"),
            "host-unknown",
        ),
        (
            "invalid JID as host",
            header("jabber:client", STREAM, "a@@b"),
            "host-unknown",
        ),
    ],
)
async def test_stream_error_at_the_stream_header(
    tmp_path: Path, name: str, data: str, condition: str
) -> None:
    async with witnessed(tmp_path) as (srv, _bob):
        c = RawClient()
        await c.connect(srv.port)
        c.begin_parser()
        c.send_raw(data)
        assert await c.stream_error() == condition
        assert await c.closed()
        c.close()


@pytest.mark.parametrize("kind", ["message", "presence", "iq"])
async def test_stanzas_before_authentication(tmp_path: Path, kind: str) -> None:
    async with witnessed(tmp_path) as (srv, bob):
        c = await secured(srv)
        c.send_raw(f"<{kind} to='bob@localhost/desk' type='get' id='1'><body>x</body></{kind}>")
        assert await c.stream_error() == "not-authorized"
        assert await c.closed()
        c.close()
        with pytest.raises(TimeoutError):
            await bob.next_message(timeout=0.3)


async def test_stanzas_before_tls(tmp_path: Path) -> None:
    async with witnessed(tmp_path) as (srv, _bob):
        c = RawClient()
        await c.connect(srv.port)
        await c.start()
        c.send_raw("<message to='bob@localhost/desk'><body>x</body></message>")
        assert await c.stream_error() == "not-authorized"
        c.close()


async def test_invalid_jids_get_jid_malformed(tmp_path: Path) -> None:
    async with witnessed(tmp_path) as (srv, _bob):
        m = await authenticated(srv)
        for to in (
            "@localhost",
            "a@b@c",
            "bob@localhost/",
            "x" * 1100 + "@localhost",
            "bob@-bad-.org",
        ):
            m.send_raw(f"<message to='{to}' id='m1'><body>x</body></message>")
            reply = await m.next("message")
            assert reply.get("type") == "error", to
            assert error_condition(reply) == "jid-malformed", to
        reply = await m.iq("<iq type='get' to='bad@@jid'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert error_condition(reply) == "jid-malformed"
        # Still connected and served.
        reply = await m.iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert reply.get("type") == "result"
        m.close()


async def test_iq_without_payload_or_with_bad_type(tmp_path: Path) -> None:
    async with witnessed(tmp_path) as (srv, _bob):
        m = await authenticated(srv)
        reply = await m.iq("<iq type='get' to='localhost'/>")
        assert error_condition(reply) == "bad-request"
        reply = await m.iq("<iq type='nonsense' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert error_condition(reply) == "bad-request"
        reply = await m.iq(
            "<iq type='get' to='localhost'><unknown xmlns='urn:example:nothing'/></iq>"
        )
        assert error_condition(reply) == "service-unavailable"
        assert reply.get("from") == "localhost"
        m.close()


async def test_a_flood_of_garbage_connections(tmp_path: Path) -> None:
    async with witnessed(tmp_path) as (srv, _bob):
        for i in [*range(9), 11, 12, *range(14, 32)]:  # control bytes, no whitespace
            c = RawClient()
            await c.connect(srv.port)
            c.begin_parser()
            c.send_raw(bytes([i]) * 50)
            await c.closed()
            c.close()


async def test_stanza_to_the_server_from_an_unbound_client(tmp_path: Path) -> None:
    """After SASL but before bind, only bind (and session) are accepted."""
    async with witnessed(tmp_path) as (srv, _bob):
        c = await secured(srv)
        await c.authenticate("mallory", "secret", "SCRAM-SHA-256")
        await c.start()
        reply = await c.iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert reply.get("type") == "error"
        assert reply.find(f"{{{CLIENT}}}error") is not None
        c.send_raw("<message to='bob@localhost/desk'><body>x</body></message>")
        assert await c.stream_error() == "not-authorized"
        c.close()
