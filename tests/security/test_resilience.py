"""Faults inside the server: a crashing extension handler, a full disk, a locked database.
Each turns into a standard error for the stanza concerned; nothing is lost in silence, nothing
is acknowledged before its error, and the server keeps serving."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from minimix.core.hooks import Direction, IqScope, Priority
from minimix.protocol.xml import Element
from tests.security.hostile import (
    CLIENT,
    SM_NS,
    Peer,
    assert_unaffected,
    condition_of,
    hang_up,
    neighbours,
)
from tests.support import Running, connect, running_server

CRASH_NS = "urn:example:crash"


async def test_extension_crash_answers_internal_server_error(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        hooks = srv.server.hooks

        async def broken_iq(iq: Element, origin: Any) -> Element | None:
            raise RuntimeError("a bug in an IQ handler")

        async def broken_filter(stanza: Element, origin: Any) -> bool:
            if stanza.findtext("{jabber:client}body") == "crash outbound":
                raise KeyError("a bug in an outbound hook")
            return False

        async def broken_delivery(stanza: Element, origin: Any) -> bool:
            if stanza.findtext("{jabber:client}body") == "crash inbound":
                raise ZeroDivisionError("a bug in a delivery hook")
            return False

        hooks.on_iq("get", f"{{{CRASH_NS}}}query", broken_iq, IqScope.HOST)
        hooks.on_stanza(Direction.OUTBOUND, "message", broken_filter, Priority.FIRST)
        hooks.on_stanza(Direction.INBOUND_FULL, "message", broken_delivery, Priority.FIRST)
        srv.add_user("tester")
        t = await Peer().login(srv, "tester")

        reply = await t.iq(f"<iq type='get' to='localhost'><query xmlns='{CRASH_NS}'/></iq>")
        assert reply.get("type") == "error"
        assert condition_of(reply) == "internal-server-error"
        for body in ("crash outbound", "crash inbound"):
            t.send(
                f"<message to='alice@localhost/good' type='chat' id='{body}'><body>{body}</body>"
                "</message>"
            )
            err = await t.next("message")
            assert err.get("id") == body and err.get("type") == "error"
            assert condition_of(err) == "internal-server-error"
        # The same connection, the server, and everyone else carry on.
        pong = await t.iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert pong.get("type") == "result"
        t.send("<message to='alice@localhost/good' type='chat'><body>fine</body></message>")
        assert (await a.next_message())["body"] == "fine"
        assert a.messages.empty()  # the crashing ones were never delivered
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def send_and_ack(
    peer: Peer, to: str, count: int, prefix: str, handled_before: int = 0
) -> dict[str, str]:
    """Send ``count`` messages, each followed by an ack request. Returns, per message id,
    "error:<condition>" or "ok"; checks that every error arrived before the ack covering it."""
    outcome: dict[str, str] = {}
    for i in range(count):
        mid = f"{prefix}{i}"
        peer.send(f"<message to='{to}' type='chat' id='{mid}'><body>{mid}</body></message>")
        peer.send(f"<r xmlns='{SM_NS}'/>")
        while True:
            el = await peer.recv()
            if el.tag == f"{{{CLIENT}}}message" and el.get("id") == mid:
                assert el.get("type") == "error"
                outcome[mid] = "error:" + condition_of(el)
            elif el.tag == f"{{{SM_NS}}}a":
                assert int(el.get("h", "-1")) == handled_before + i + 1
                outcome.setdefault(mid, "ok")  # no error came before this ack
                break
    return outcome


async def sm_sender(srv: Running, name: str) -> Peer:
    srv.add_user(name)
    p = await Peer().login(srv, name)
    p.send(f"<enable xmlns='{SM_NS}'/>")
    assert (await p.recv()).tag == f"{{{SM_NS}}}enabled"
    return p


def stored_offline(srv: Running, user: str) -> set[str]:
    out = set()
    for _, text, _ in srv.server.offline_store.peek(user):
        el = ET.fromstring(f"<s xmlns='jabber:client'>{text}</s>")[0]
        out.add(el.get("id", ""))
    return out


async def test_disk_full_turns_into_an_error_not_a_loss(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        srv.add_user("away")
        sender = await sm_sender(srv, "sender")
        db = srv.server.db
        pages = db.fetchone("PRAGMA page_count")
        assert pages is not None
        db.execute(f"PRAGMA max_page_count = {int(pages[0])}")  # the disk is full from now on
        try:
            outcome = await send_and_ack(sender, "away@localhost", 60, "full")
        finally:
            db.execute("PRAGMA max_page_count = 1073741823")
        failed = {m for m, r in outcome.items() if r != "ok"}
        assert failed, "the full disk was never noticed"
        assert {outcome[m] for m in failed} == {"error:resource-constraint"}
        # Exactly what was not refused was stored: no silent loss, no false error.
        assert stored_offline(srv, "away") == {m for m, r in outcome.items() if r == "ok"}
        # Space again: the server stores again, the sender was never disconnected.
        again = await send_and_ack(sender, "away@localhost", 1, "after", handled_before=60)
        assert again == {"after0": "ok"}
        await assert_unaffected(a, b)
        away = await connect(srv, "away@localhost/back")
        expected = {m for m, r in outcome.items() if r == "ok"} | {"after0"}
        got = {(await away.next_message())["body"] for _ in expected}
        assert got == expected
        await hang_up(a, b, away)


async def test_locked_database_turns_into_an_error_not_a_loss(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        srv.add_user("away")
        sender = await sm_sender(srv, "sender")
        srv.server.db.execute("PRAGMA busy_timeout = 200")  # give up on the lock sooner
        other = sqlite3.connect(srv.server.db.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            outcome = await send_and_ack(sender, "away@localhost", 2, "locked")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert outcome == {
            "locked0": "error:resource-constraint",
            "locked1": "error:resource-constraint",
        }
        assert stored_offline(srv, "away") == set()
        freed = await send_and_ack(sender, "away@localhost", 1, "free", handled_before=2)
        assert freed == {"free0": "ok"}
        assert stored_offline(srv, "away") == {"free0"}
        await assert_unaffected(a, b)
        await hang_up(a, b)
