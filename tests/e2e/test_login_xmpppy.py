"""A second, independent client library from PyPI (xmpppy, synchronous, its own XML parser
and SASL): registration, STARTTLS login, roster, presence and messages with a slixmpp client.

xmpppy blocks, so each of its clients runs in a worker thread while the server and the
slixmpp client share the test's event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.core_helpers import close
from tests.support import connect, running_server

xmpp: Any = pytest.importorskip("xmpp")


def xmpppy_client(port: int) -> Any:
    cl = xmpp.Client("localhost", port=port, debug=[])
    assert cl.connect(server=("127.0.0.1", port)) == "tls"  # STARTTLS happened
    return cl


def process_until(cl: Any, done: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if done():
            return
        cl.Process(0.05)
    raise TimeoutError("xmpppy client waited in vain")


async def test_xmpppy_registers_logs_in_and_chats_with_slixmpp(tmp_path: Path) -> None:
    async with running_server(tmp_path, registration={"open": True}) as srv:
        alice = srv.add_user("alice")
        a = await connect(srv, f"{alice}/phone")
        got: list[str] = []
        stop = threading.Event()

        def run() -> None:
            reg = xmpppy_client(srv.port)
            assert xmpp.features.register(
                reg.Dispatcher, "localhost", {"username": "carol", "password": "xmpppy-pw"}
            )
            reg.disconnect()
            cl = xmpppy_client(srv.port)
            assert cl.auth("carol", "xmpppy-pw", "desk")
            roster = cl.getRoster()
            assert f"{alice}" not in roster.getItems()  # (xmpppy lists its own JID)
            cl.RegisterHandler("message", lambda _c, m: got.append(m.getBody()))
            cl.sendInitPresence()
            cl.send(xmpp.Message(f"{alice}/phone", "hello from xmpppy", typ="chat"))
            process_until(cl, lambda: bool(got))
            cl.send(xmpp.Presence(to=alice, typ="subscribe"))
            process_until(cl, stop.is_set, 10)
            cl.disconnect()

        worker = asyncio.ensure_future(asyncio.to_thread(run))
        m = await a.next_message()
        assert (m["body"], str(m["from"])) == ("hello from xmpppy", "carol@localhost/desk")
        a.send_message(mto=m["from"], mbody="hello from slixmpp", mtype="chat")
        # slixmpp approves the subscription request by itself; carol then sees alice online.
        for _ in range(100):
            item = srv.server.roster_store.get("alice", "carol@localhost")
            if item is not None and item.subscription in ("from", "both"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("subscription was not approved")
        stop.set()
        await worker
        assert got == ["hello from slixmpp"]
        await close(a)


async def test_xmpppy_wrong_password(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("carol", "right")

        def run() -> tuple[bool, bool]:
            cl = xmpppy_client(srv.port)
            bad = bool(cl.auth("carol", "wrong", "x"))
            cl.disconnect()
            cl = xmpppy_client(srv.port)
            good = bool(cl.auth("carol", "right", "x"))
            cl.disconnect()
            return bad, good

        assert await asyncio.to_thread(run) == (False, True)
