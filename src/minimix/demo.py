"""``minimix demo``: account-join shown with real clients, as a readable narrative.

A server starts on free loopback ports in a temporary directory. Bob creates a room; two clients
of Alice's account (her phone and her laptop) join it; the phone goes offline and comes back.
Bob, in the room, sees one Alice throughout: one join, no leave. The demo checks each claim it
prints and exits 0 when all hold. It uses slixmpp (``pip install -e '.[test]'``) as the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from minimix.config import Config, from_dict

ROOM = "demo@conference.localhost"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
MUC_OWNER = "http://jabber.org/protocol/muc#owner"


class DemoFailed(Exception):
    """A claim of the narrative did not hold."""


def _say(text: str) -> None:
    print(text, flush=True)


def _check(ok: bool, claim: str) -> None:
    if not ok:
        _say(f"    FAILED: {claim}")
        raise DemoFailed(claim)
    _say(f"    ok: {claim}")


def run_demo(config: Config, keep: bool) -> int:
    """Run the narrative; 0 when every claim held, 1 otherwise."""
    try:
        import slixmpp  # noqa: F401
    except ImportError:
        _say("minimix demo needs slixmpp as its client: pip install -e '.[test]'")
        return 1
    data = Path(tempfile.mkdtemp(prefix="minimix-demo-"))
    for name in ("minimix", "slixmpp", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return asyncio.run(_demo(config, data))
    except DemoFailed:
        return 1
    except (OSError, TimeoutError) as exc:
        _say(f"minimix demo: {exc}")
        return 1
    finally:
        if keep:
            _say(f"(the demo's data directory is kept: {data})")
        else:
            shutil.rmtree(data, ignore_errors=True)


def _demo_config(config: Config, data: Path) -> Config:
    return from_dict(
        {
            "domain": "localhost",
            "data_dir": str(data),
            "log_level": "error",
            "c2s": {"host": "127.0.0.1", "port": 0, "direct_tls_port": 0},
            "http": {"port": 0},
            "muc": {"domain": "conference.localhost"},
            "account_join": {"enabled": True, "linger": "forever"},
        },
        "demo",
    )


async def _demo(base: Config, data: Path) -> int:
    from minimix.app import Server

    config = _demo_config(base, data)
    server = Server(config)
    await server.start()
    clients: list[_Client] = []
    try:
        port = server.ports["c2s"]
        ca = data / "tls" / "self-signed.crt"
        server.accounts.create("alice", "demo-password")
        server.accounts.create("bob", "demo-password")
        _say("minimix demo: the account is the occupant, every client is served")
        _say(f"  a server for 'localhost' listens on 127.0.0.1:{port} (data in {data})")

        bob = await _Client.online("bob@localhost/desk", port, ca)
        clients.append(bob)
        _say(f"\n1. bob@localhost/desk creates the room {ROOM}")
        await bob.join("Bob")
        await bob.iq_set(
            ROOM, f"<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>"
        )

        _say("\n2. Alice's phone joins the room as 'alice'")
        phone = await _Client.online("alice@localhost/phone", port, ca)
        clients.append(phone)
        seq = await phone.join("alice")
        _check(any(_codes(e) >= {"110"} for e in seq), "the phone is in the room (status 110)")
        await bob.wait(lambda e: _from(e) == f"{ROOM}/alice" and e.get("type") is None)
        _say("    bob sees alice arrive")

        _say("\n3. Alice's laptop joins the same room as 'alice'")
        laptop = await _Client.online("alice@localhost/laptop", port, ca)
        clients.append(laptop)
        seq = await laptop.join("alice")
        others = [_from(e) for e in seq if e.tag.endswith("presence") and "110" not in _codes(e)]
        _check(f"{ROOM}/Bob" in others, "the laptop gets the occupant list, Bob included")
        await bob.settle()
        _check(bob.count_alice_joins() == 1, "bob saw alice arrive once: one occupant, two clients")

        _say('\n4. Bob says "hello, Alice"')
        bob.groupchat("hello, Alice")
        await phone.wait(lambda e: _body(e) == "hello, Alice")
        await laptop.wait(lambda e: _body(e) == "hello, Alice")
        _check(True, "the phone and the laptop both got it")

        _say("\n5. The phone loses its connection (no leave, no goodbye)")
        await phone.offline()
        clients.remove(phone)
        await bob.settle()
        _check(bob.count_alice_leaves() == 0, "bob saw nobody leave: alice is still in the room")

        _say('\n6. Bob says "are you there?" while the phone is offline')
        bob.groupchat("are you there?")
        await laptop.wait(lambda e: _body(e) == "are you there?")
        _check(True, "the laptop got it; the account's archive keeps it for the phone")

        _say("\n7. The phone comes back and joins again")
        phone = await _Client.online("alice@localhost/phone", port, ca)
        clients.append(phone)
        seq = await phone.join("alice", history="<history maxstanzas='5'/>")
        missed = [_body(e) for e in seq if _body(e)]
        _check("are you there?" in missed, "the phone gets what it missed, as room history")
        await bob.settle()
        _check(
            bob.count_alice_joins() == 1 and bob.count_alice_leaves() == 0,
            "the room saw one occupant throughout: one join, no leave",
        )

        _say("\n8. What an operator sees (minimix rooms):")
        from minimix.operator import show_rooms

        await asyncio.sleep(0.05)
        show_rooms(config, "alice@localhost")
        _say("\nminimix demo: every claim held.")
        return 0
    finally:
        for c in clients:
            await c.offline()
        await server.stop()


# --------------------------------------------------------------------------- the demo's client


def _codes(el: ET.Element) -> set[str]:
    return {s.get("code", "") for s in el.iter(f"{{{MUC_USER}}}status")}


def _from(el: ET.Element) -> str:
    return el.get("from") or ""


def _body(el: ET.Element) -> str | None:
    return el.findtext("{jabber:client}body")


class _Client:
    """A slixmpp client that keeps what it receives, in order."""

    def __init__(self, jid: str, port: int, ca: Path) -> None:
        import slixmpp

        self.xmpp = slixmpp.ClientXMPP(jid, "demo-password")
        self.xmpp.ca_certs = ca
        self.xmpp.enable_direct_tls = False
        self.xmpp.register_plugin("xep_0199")
        self.port = port
        self.items: list[ET.Element] = []
        self.changed = asyncio.Event()
        self.xmpp.add_filter("in", self._incoming)
        self._ids = 0

    def _incoming(self, stanza: Any) -> Any:
        self.items.append(stanza.xml)
        self.changed.set()
        return stanza

    @staticmethod
    async def online(jid: str, port: int, ca: Path) -> _Client:
        c = _Client(jid, port, ca)
        started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def on_start(_: Any) -> None:
            if not started.done():
                started.set_result(True)

        c.xmpp.add_event_handler("session_start", on_start)
        c.xmpp.connect("127.0.0.1", port)
        await asyncio.wait_for(started, 10)
        c.xmpp.send_presence()
        return c

    async def offline(self) -> None:
        with contextlib.suppress(Exception):
            fut = self.xmpp.disconnected
            self.xmpp.disconnect()
            await asyncio.wait_for(fut, 3)

    async def wait(self, pred: Callable[[ET.Element], bool], timeout: float = 5.0) -> ET.Element:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for el in self.items[seen:]:
                if pred(el):
                    return el
            seen = len(self.items)
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{self.xmpp.boundjid} did not receive what the demo expects")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def join(self, nick: str, history: str = "") -> list[ET.Element]:
        start = len(self.items)
        self.xmpp.send_raw(
            f"<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'>{history}</x></presence>"
        )
        await self.wait(
            lambda e: (
                e.find("{jabber:client}subject") is not None
                or (e.tag.endswith("presence") and e.get("type") == "error")
            )
        )
        return [e for e in self.items[start:] if _from(e).split("/", 1)[0] == ROOM]

    def groupchat(self, text: str) -> None:
        self._ids += 1
        mid = f"demo{self._ids}"
        self.xmpp.send_raw(
            f"<message to='{ROOM}' type='groupchat' id='{mid}'><body>{text}</body></message>"
        )

    async def iq_set(self, to: str, payload: str) -> None:
        self._ids += 1
        iid = f"demo-iq{self._ids}"
        self.xmpp.send_raw(f"<iq type='set' to='{to}' id='{iid}'>{payload}</iq>")
        answer = await self.wait(lambda e: e.tag.endswith("iq") and e.get("id") == iid)
        if answer.get("type") != "result":
            raise DemoFailed(f"{to} refused: {ET.tostring(answer, encoding='unicode')}")

    async def settle(self) -> None:
        """A round trip to the server: anything sent to this client before is in by now."""
        import slixmpp

        await self.xmpp.plugin["xep_0199"].ping(jid=slixmpp.JID("localhost"), timeout=5)

    def count_alice_joins(self) -> int:
        return sum(
            1
            for e in self.items
            if e.tag.endswith("presence") and _from(e) == f"{ROOM}/alice" and e.get("type") is None
        )

    def count_alice_leaves(self) -> int:
        return sum(
            1
            for e in self.items
            if e.tag.endswith("presence")
            and _from(e) == f"{ROOM}/alice"
            and e.get("type") == "unavailable"
        )
