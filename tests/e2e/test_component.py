"""External components (XEP-0114): a slixmpp ComponentXMPP attaches its domain and exchanges
stanzas with clients; wrong secrets and forged addresses are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import slixmpp
from slixmpp.componentxmpp import ComponentXMPP

from tests.e2e.core_helpers import close, free_port
from tests.e2e.raw_client import STREAM, RawClient, error_condition
from tests.support import Running, connect, running_server

DOMAIN = "gateway.localhost"
SECRET = "component secret"


class Echo(ComponentXMPP):
    """Echoes chat messages back, prefixed; answers disco with an identity of its own."""

    def __init__(self, secret: str = SECRET) -> None:
        super().__init__(DOMAIN, secret, "127.0.0.1", 0)
        self.register_plugin("xep_0030")
        self.plugin["xep_0030"].add_identity("gateway", "irc", name="Echo gateway")
        self.received: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.add_event_handler("message", self.on_message)

    def on_message(self, msg: slixmpp.Message) -> None:
        self.received.put_nowait(msg)
        if msg["type"] in ("chat", "normal"):
            msg.reply(f"echo: {msg['body']}").send()


async def attach(srv: Running, secret: str = SECRET) -> Echo:
    echo = Echo(secret)
    started = asyncio.get_running_loop().create_future()
    echo.add_event_handler("session_start", lambda _: started.set_result(True))
    echo.connect("127.0.0.1", srv.server.ports["component"])
    await asyncio.wait_for(started, 10)
    return echo


def config() -> dict[str, object]:
    return {
        "component_port": free_port(),
        "component": [{"domain": DOMAIN, "secret": SECRET}],
    }


async def test_component_exchanges_stanzas_with_clients(tmp_path: Path) -> None:
    async with running_server(tmp_path, **config()) as srv:
        alice = srv.add_user("alice")
        echo = await attach(srv)
        a = await connect(srv, f"{alice}/x")
        a.send_message(mto=f"bot@{DOMAIN}", mbody="hello gateway", mtype="chat")
        got = await asyncio.wait_for(echo.received.get(), 5)
        assert str(got["from"]) == f"{alice}/x"
        reply = await a.next_message()
        assert reply["body"] == "echo: hello gateway"
        assert str(reply["from"]) == f"bot@{DOMAIN}"
        # Disco on the component is answered by the component.
        info = await a.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=5)
        assert ("gateway", "irc") in {(c, t) for c, t, _, _ in info["disco_info"]["identities"]}
        # The component reaches the account's bare JID too.
        echo.send_message(mto=alice, mfrom=f"news@{DOMAIN}", mbody="headline", mtype="chat")
        m = await a.next_message()
        assert m["body"] == "headline"
        # It can ping the server.
        iq = echo.Iq()
        iq["type"] = "get"
        iq["to"] = "localhost"
        iq["from"] = DOMAIN
        iq.enable("ping")
        result = await iq.send(timeout=5)
        assert result["type"] == "result"
        echo.disconnect()
        await asyncio.wait_for(echo.disconnected, 5)
        await close(a)


async def test_wrong_secret_and_unknown_domain(tmp_path: Path) -> None:
    async with running_server(tmp_path, **config()) as srv:
        port = srv.server.ports["component"]
        c = RawClient(DOMAIN)
        await c.connect(port)
        c.begin_parser()
        c.send_raw(
            f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='{STREAM}' to='{DOMAIN}'>"
        )
        c.send_raw("<handshake>0000000000000000000000000000000000000000</handshake>")
        assert await c.stream_error() == "not-authorized"
        c.close()
        c = RawClient("other.localhost")
        await c.connect(port)
        c.begin_parser()
        c.send_raw(
            "<stream:stream xmlns='jabber:component:accept' "
            f"xmlns:stream='{STREAM}' to='other.localhost'>"
        )
        assert await c.stream_error() == "host-unknown"
        c.close()


async def test_component_cannot_send_as_someone_else(tmp_path: Path) -> None:
    async with running_server(tmp_path, **config()) as srv:
        srv.add_user("alice")
        echo = await attach(srv)
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        a.send_raw("<presence/>")
        lost = asyncio.get_running_loop().create_future()
        echo.add_event_handler("disconnected", lambda _: lost.done() or lost.set_result(True))
        echo.send_raw(
            "<message from='bob@localhost' to='alice@localhost/raw'><body>forged</body></message>"
        )
        await asyncio.wait_for(lost, 5)
        # Once gone, its domain bounces.
        a.send_raw(f"<message id='g' to='x@{DOMAIN}'><body>anyone?</body></message>")
        err = await a.wait_for(lambda e: e.get("id") == "g")
        assert err.get("type") == "error"
        assert error_condition(err) != ""
        a.close()


async def test_second_connection_for_the_same_domain_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path, **config()) as srv:
        first = await attach(srv)
        second = Echo()
        refused = asyncio.get_running_loop().create_future()
        second.add_event_handler(
            "stream_error", lambda e: refused.done() or refused.set_result(e["condition"])
        )
        second.connect("127.0.0.1", srv.server.ports["component"])
        assert await asyncio.wait_for(refused, 5) == "conflict"
        first.disconnect()
        await asyncio.wait_for(first.disconnected, 5)
