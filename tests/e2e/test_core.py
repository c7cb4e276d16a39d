"""Stream life cycle (RFC 6120 §4): whitespace keepalives, clean close, unauthenticated
timeouts, and what the logs must never contain."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from minimix.protocol.jid import JID
from tests.e2e.raw_client import STREAM, RawClient
from tests.support import running_server


async def test_whitespace_keepalives_are_accepted(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        b = await RawClient().login(srv.port, "bob", ca=srv.ca)
        for _ in range(5):
            a.send_raw(" ")
            a.send_raw("\n\t \r\n")
        a.send_raw("  <message to='bob@localhost/raw'><body>after spaces</body></message>  ")
        m = await b.next("message")
        assert m.findtext("{jabber:client}body") == "after spaces"
        # Keepalives between stream negotiation steps, before authentication, too.
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        c.send_raw(" ")
        await c.starttls()
        c.close()
        a.close()
        b.close()


async def test_clean_stream_close(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        b = await RawClient().login(srv.port, "bob", ca=srv.ca)
        b.send_raw("<presence/>")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        a.send_raw("<presence/>")
        a.send_raw("<presence to='bob@localhost/raw'/>")
        await b.wait_for(lambda e: e.get("from") == "alice@localhost/raw")
        a.send_raw("</stream:stream>")
        # The server answers with its own close tag, then closes the socket.
        assert await a.closed()
        assert a.stream_closed
        # The session is gone: bob sees alice unavailable and her full JID is free again.
        p = await b.wait_for(lambda e: e.get("from") == "alice@localhost/raw")
        assert p.get("type") == "unavailable"
        assert srv.server.sessions.of_account(JID.parse("alice@localhost")) == []
        b.close()


async def test_abrupt_disconnect_ends_the_session(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        a.send_raw("<presence/>")
        await a.next("presence")
        assert len(srv.server.sessions) == 1
        a.close()
        for _ in range(100):
            if len(srv.server.sessions) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(srv.server.sessions) == 0


@pytest.mark.parametrize("stage", ["nothing", "header", "tls", "sasl"])
async def test_unauthenticated_connections_time_out(tmp_path: Path, stage: str) -> None:
    async with running_server(tmp_path, limits={"unauthenticated_timeout": 0.5}) as srv:
        srv.add_user("alice")
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        if stage == "nothing":
            c.begin_parser()
        else:
            await c.start()
        if stage in ("tls", "sasl"):
            await c.starttls()
        if stage == "sasl":
            await c.authenticate("alice", "secret", "SCRAM-SHA-256")
            await c.start()  # authenticated, never binds
        assert await c.stream_error(timeout=5) == "connection-timeout"
        assert await c.closed()
        c.close()
        # A bound client is not timed out.
        ok = await RawClient().login(srv.port, "alice", ca=srv.ca)
        await asyncio.sleep(0.8)
        reply = await ok.iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert reply.get("type") == "result"
        ok.close()


async def test_stream_features_before_and_after_tls(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        features = await c.start()
        tls = features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls")
        assert tls is not None and tls.find("{urn:ietf:params:xml:ns:xmpp-tls}required") is not None
        await c.starttls()
        assert c.features is not None
        assert c.features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
        # STARTTLS twice is a policy violation.
        c.send_raw("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert await c.stream_error() == "policy-violation"
        c.close()


async def test_stream_header_version_and_id(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        c = RawClient()
        await c.connect(srv.port)
        c.begin_parser()
        c.send_raw(
            f"<stream:stream xmlns='jabber:client' xmlns:stream='{STREAM}' to='localhost' "
            "version='2.0'>"
        )
        assert await c.stream_error() == "unsupported-version"
        c.close()


async def test_logs_hold_no_passwords_or_bodies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="minimix")
    async with running_server(tmp_path, registration={"open": True}) as srv:
        srv.add_user("alice", "hunter2-secret")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", "hunter2-secret", srv.ca, mechanism="PLAIN")
        a.send_raw("<message to='bob@localhost'><body>TOP-SECRET-BODY</body></message>")
        a.send_raw("<message to='bob@localhost/x'><body>TOP-SECRET-BODY-2</body></message>")
        await a.iq(
            "<iq type='set' to='localhost'><query xmlns='jabber:iq:register'>"
            "<username>alice</username><password>n3w-hunter3</password></query></iq>"
        )
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        await c.starttls()
        await c.authenticate("alice", "wrong-guess-pw", "PLAIN")
        await c.iq(
            "<iq type='set'><query xmlns='jabber:iq:register'><username>zed</username>"
            "<password>zed-pass-123</password></query></iq>"
        )
        c.send_raw("<message><body>TOP-SECRET-BODY-3</body></message>")
        await c.closed()
        a.close()
        await asyncio.sleep(0.1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "authenticated" in text  # the logs do say something useful
    for secret in ("hunter2", "hunter3", "wrong-guess", "zed-pass", "TOP-SECRET"):
        assert secret not in text, secret


async def test_idle_connection_frees_its_parser_and_reads_on(tmp_path: Path) -> None:
    """A client quiet for a second holds no XML parser; its next stanza (and its stream's
    end tag) are read as before."""
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        b = await RawClient().login(srv.port, "bob", ca=srv.ca)
        a.send_raw("<presence/> ")
        await a.next("presence")
        (conn,) = [c for c in srv.server.services.connections if c.session.account.local == "alice"]
        for _ in range(100):
            if conn.stream._parser._parser is None:
                break
            await asyncio.sleep(0.05)
        assert conn.stream._parser._parser is None
        a.send_raw("<message to='bob@localhost/raw'><body>after a pause</body></message>")
        m = await b.next("message")
        assert m.findtext("{jabber:client}body") == "after a pause"
        await asyncio.sleep(1.2)
        assert conn.stream._parser._parser is None
        a.send_raw("</stream:stream>")
        assert await a.closed()
        assert a.stream_closed
        b.close()
