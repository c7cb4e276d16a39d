"""XMPP over WebSocket with an independent client library: @xmpp/client (xmpp.js) on Node.js.

Login (SCRAM through the library's own SASL), messages both ways with a slixmpp client on TCP,
stream resumption after a dropped WebSocket (XEP-0198), and limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from minimix.protocol.jid import JID
from tests.e2e.node_client import NodeClient, require_node_client
from tests.support import connect, disconnect, running_server


@asynccontextmanager
async def node_client() -> AsyncIterator[NodeClient]:
    client = await NodeClient.start()
    try:
        yield client
    finally:
        await client.stop()


async def test_login_and_messages_both_ways(tmp_path: Path) -> None:
    require_node_client()
    async with running_server(tmp_path) as srv, node_client() as js:
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        jid = await js.connect(srv.server.ports["http"], "alice", resource="xmppjs")
        assert jid == f"{alice}/xmppjs"
        await js.send("<presence/>")
        b = await connect(srv, f"{bob}/laptop")

        await js.send(f'<message to="{bob}" type="chat"><body>hello from xmpp.js</body></message>')
        msg = await b.next_message()
        assert msg["body"] == "hello from xmpp.js"
        assert str(msg["from"]) == jid

        b.send_message(mto=alice, mbody="hello back", mtype="chat")
        got = await js.next_message()
        assert "<body>hello back</body>" in got and f'from="{bob}/laptop"' in got

        sessions = srv.server.sessions.of_account(JID.parse(alice))
        assert [s.jid.resource for s in sessions] == ["xmppjs"]
        assert sessions[0].link.framed  # it came in over the WebSocket
        await disconnect(b)


async def test_wrong_password_is_refused(tmp_path: Path) -> None:
    require_node_client()
    async with running_server(tmp_path) as srv, node_client() as js:
        srv.add_user("alice")
        try:
            await js.command(
                "connect",
                service=f"ws://127.0.0.1:{srv.server.ports['http']}/xmpp-websocket",
                domain="localhost",
                username="alice",
                password="not-the-password",
                resource="x",
            )
        except RuntimeError as exc:
            assert "not-authorized" in str(exc)
        else:
            raise AssertionError("login with a wrong password succeeded")
        assert not any(e.get("event") == "online" for e in js.events)
        assert len(srv.server.sessions) == 0


async def test_stream_resumption_after_a_dropped_websocket(tmp_path: Path) -> None:
    require_node_client()
    async with running_server(tmp_path) as srv, node_client() as js:
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        jid = await js.connect(srv.server.ports["http"], "alice", resource="phone")
        await js.send("<presence/>")
        b = await connect(srv, f"{bob}/laptop")
        b.send_message(mto=alice, mbody="before the drop", mtype="chat")
        assert "before the drop" in await js.next_message()
        sm = await _sm_state(js)
        assert sm["enabled"] and sm["id"]
        conn_before = srv.server.sessions.get(JID.parse(jid))
        assert conn_before is not None

        mark = len(js.events)
        await js.command("drop")
        for _ in range(100):
            if srv.server.services.hibernating:
                break
            await asyncio.sleep(0.01)
        b.send_message(mto=alice, mbody="during the drop", mtype="chat")

        await js.wait(lambda e: e.get("event") == "resumed", timeout=15, since=mark)
        redelivered = await js.wait(
            lambda e: e.get("event") == "stanza" and "during the drop" in e.get("xml", ""),
            since=mark,
        )
        assert 'to="alice@localhost' in redelivered["xml"]
        # The same session carried on: same full JID, no second session, nothing hibernating.
        assert srv.server.sessions.get(JID.parse(jid)) is conn_before
        assert len(srv.server.sessions.of_account(JID.parse(alice))) == 1
        assert not srv.server.services.hibernating

        b.send_message(mto=alice, mbody="after the drop", mtype="chat")
        assert "after the drop" in await js.next_message()
        await disconnect(b)


async def test_oversized_stanza_ends_the_stream(tmp_path: Path) -> None:
    require_node_client()
    async with (
        running_server(tmp_path, limits={"max_stanza_size": 4096}) as srv,
        node_client() as js,
    ):
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        await js.connect(srv.server.ports["http"], "alice", resource="big")
        b = await connect(srv, f"{bob}/laptop")
        await js.send(f'<message to="{bob}" type="chat"><body>{"x" * 6000}</body></message>')
        await js.wait(lambda e: e.get("event") == "status" and e.get("status") == "disconnect")
        # The library reconnects; the old session was ended (not kept for resumption).
        await js.wait(lambda e: e.get("event") == "online", timeout=15)
        assert not any(e.get("event") == "resumed" for e in js.events)
        await js.send(f'<message to="{bob}" type="chat"><body>small again</body></message>')
        msg = await b.next_message()
        assert msg["body"] == "small again"  # the oversized one never arrived
        del alice
        await disconnect(b)


async def test_rate_limit_slows_a_flood_without_losing_stanzas(tmp_path: Path) -> None:
    require_node_client()
    async with (
        running_server(tmp_path, limits={"rate": 4000.0, "burst": 2000}) as srv,
        node_client() as js,
    ):
        srv.add_user("alice")
        bob = srv.add_user("bob")
        await js.connect(srv.server.ports["http"], "alice", resource="flood")
        b = await connect(srv, f"{bob}/laptop")
        for i in range(30):
            await js.send(
                f'<message to="{bob}" type="chat"><body>n{i} {"y" * 150}</body></message>'
            )
        bodies = [(await b.next_message(timeout=15))["body"].split()[0] for _ in range(30)]
        assert bodies == [f"n{i}" for i in range(30)]
        await disconnect(b)


async def _sm_state(js: NodeClient) -> dict[str, object]:
    for _ in range(50):
        start = len(js.events)
        await js.command("sm")
        ev = await js.wait(lambda e: e.get("event") == "sm", since=start)
        if ev.get("enabled"):
            return ev
        await asyncio.sleep(0.05)
    return ev
