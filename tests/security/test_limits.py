"""Every limit, over real sockets: the offender gets the standard error, and two well-behaved
clients connected at the same time keep exchanging messages."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from minimix.protocol.jid import JID
from tests.security.hostile import (
    CLIENT,
    REGISTER_NS,
    SASL_NS,
    SM_NS,
    Peer,
    assert_unaffected,
    condition_of,
    hang_up,
    neighbours,
    sasl_condition,
)
from tests.security.rooms import (
    MUC_OWNER_NS,
    archive_missing,
    join_room,
    muc_missing,
    muc_service_of,
)
from tests.support import connect, running_server


def chat(to: str, body: str) -> str:
    return f"<message to='{to}' type='chat'><body>{body}</body></message>"


# ---------------------------------------------------------------------- parser limits


@pytest.mark.parametrize(
    "attack",
    [
        chat("bob@localhost", "A" * 8000),
        # A start tag that never ends: the parser holds it without producing any event.
        "<message to='bob@localhost' x='" + "A" * 8000,
    ],
    ids=["large body", "endless start tag"],
)
async def test_oversized_stanza_closes_only_the_offender(tmp_path: Path, attack: str) -> None:
    async with running_server(tmp_path, limits={"max_stanza_size": 4096}) as srv:
        a, b = await neighbours(srv)
        srv.add_user("mallory")
        m = await Peer().login(srv, "mallory")
        m.send(attack)
        assert await m.stream_error() == "policy-violation"
        assert await m.closed()
        assert b.messages.empty()
        await assert_unaffected(a, b)
        # Just under the limit is fine.
        ok = await Peer().login(srv, "mallory", resource="again")
        ok.send(chat("bob@localhost/good", "B" * 3900))
        assert (await b.next_message())["body"] == "B" * 3900
        await hang_up(a, b)


async def test_deep_nesting_closes_only_the_offender(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"max_depth": 16}) as srv:
        a, b = await neighbours(srv)
        srv.add_user("mallory")
        m = await Peer().login(srv, "mallory")
        # Nesting within the limit is delivered.
        m.send("<message to='bob@localhost/good'><body>fine</body>" + "<x xmlns='urn:x'>" * 10)
        m.send("</x>" * 10 + "</message>")
        assert (await b.next_message())["body"] == "fine"
        m.send("<message to='bob@localhost'>" + "<x xmlns='urn:x'>" * 40)
        assert await m.stream_error() == "policy-violation"
        assert await m.closed()
        await assert_unaffected(a, b)
        await hang_up(a, b)


# ---------------------------------------------------------------------- flow limits


async def test_inbound_flood_is_throttled_without_slowing_others(tmp_path: Path) -> None:
    flood = 1000
    async with running_server(tmp_path, limits={"rate": 20000, "burst": 20000}) as srv:
        a, b = await neighbours(srv)
        srv.add_user("mallory")
        m = await Peer().login(srv, "mallory")
        # About 1 MB at once: the server reads a burst, then reads on at 20 kB/s.
        m.send("".join(chat("bob@localhost/good", f"flood {i} " + "F" * 900) for i in range(flood)))
        first = await b.next_message()
        assert first["body"].startswith("flood 0 ")
        body = "from a neighbour"
        a.send_message(mto=b.boundjid.full, mbody=body, mtype="chat")
        seen = 1
        while (await b.next_message(timeout=10))["body"] != body:
            seen += 1
        # The neighbour's message overtook most of the flood: the flooder is slowed, not served
        # first, and it is not disconnected for it.
        assert seen < flood // 2
        assert not m.ended
        assert srv.server.sessions.get(JID.parse(m.jid)) is not None
        await assert_unaffected(a, b)
        m.abort()
        await hang_up(a, b)


async def test_client_that_does_not_read_is_disconnected(tmp_path: Path) -> None:
    limits = {"max_output_buffer": 262144, "rate": 10**9, "burst": 10**9}
    async with running_server(tmp_path, limits=limits) as srv:
        a, b = await neighbours(srv)
        srv.add_user("sloth")
        srv.add_user("sender")
        sloth = await Peer().login(srv, "sloth", rcvbuf=4096)  # and then it never reads
        sloth_jid = JID.parse(sloth.jid)
        sender = await Peer().login(srv, "sender")
        big = "S" * 100_000
        for _ in range(400):  # at most 40 MB; the kernel's socket buffers hold a few MB
            sender.send(chat(sloth.jid, big))
            await sender.drain()
            await asyncio.sleep(0.005)
            if srv.server.sessions.get(sloth_jid) is None:
                break
        assert srv.server.sessions.get(sloth_jid) is None, "the non-reader is still connected"
        await assert_unaffected(a, b)
        # When the sloth finally reads, the last thing on its stream says why it was dropped.
        assert await sloth.stream_error(timeout=20) == "resource-constraint"
        assert await sloth.closed()
        await hang_up(a, b)


async def test_requests_wait_until_their_answers_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking costs little, answering a lot: a client that does not read its answers gets no
    more of its input handled until it reads, and is dropped if it never does."""
    limits = {"max_output_buffer": 1_048_576, "rate": 10**9, "burst": 10**9}
    async with running_server(tmp_path, limits=limits) as srv:
        a, b = await neighbours(srv)
        big = await Peer().login(srv, "bob", resource="raw")
        photo = "P" * 200_000
        card = await big.iq(
            f"<iq type='set'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>{photo}</BINVAL></PHOTO>"
            "</vCard></iq>"
        )
        assert card.get("type") == "result"
        srv.add_user("sloth")
        sloth = await Peer().login(srv, "sloth", rcvbuf=4096)
        for i in range(60):  # 12 MB of answers, and it reads none of them
            sloth.send(
                f"<iq type='get' id='v{i}' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>"
            )
        sloth.send(
            f"<message to='{a.boundjid.full}' type='chat'><body>after the asking</body></message>"
        )
        await sloth.drain()
        await assert_unaffected(a, b)
        await asyncio.sleep(0.5)
        early = []
        while not a.messages.empty():
            early.append(a.messages.get_nowait()["body"])
        assert "after the asking" not in early
        assert srv.server.sessions.get(JID.parse(sloth.jid)) is not None
        # Once it reads, its input is handled again, in order.
        answers = 0
        while answers < 60:
            el = await sloth.recv(timeout=10)
            answers += el.tag == f"{{{CLIENT}}}iq"
        msg = await a.next_message()
        while msg["body"] != "after the asking":
            msg = await a.next_message()
        # One that never reads is dropped after a while (shortened here).
        monkeypatch.setattr("minimix.core.c2s._STALL_TIMEOUT", 0.5)
        stuck = await Peer().login(srv, "sloth", resource="stuck", rcvbuf=4096)
        for i in range(60):
            stuck.send(
                f"<iq type='get' id='s{i}' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>"
            )
        await stuck.drain()
        for _ in range(200):
            if srv.server.sessions.get(JID.parse(stuck.jid)) is None:
                break
            await asyncio.sleep(0.05)
        assert srv.server.sessions.get(JID.parse(stuck.jid)) is None
        assert await stuck.stream_error(timeout=20) == "resource-constraint"
        await assert_unaffected(a, b)
        for p in (big, sloth):
            p.close()
        await hang_up(a, b)


@pytest.mark.parametrize("state", ["connected", "hibernating"])
async def test_unacknowledged_queue_is_capped(tmp_path: Path, state: str) -> None:
    async with running_server(tmp_path, limits={"sm_max_queue": 20}) as srv:
        a, b = await neighbours(srv)
        srv.add_user("lazy")
        srv.add_user("sender")
        lazy = await Peer().login(srv, "lazy")
        lazy.send(f"<enable xmlns='{SM_NS}' resume='true'/>")
        assert (await lazy.recv()).tag == f"{{{SM_NS}}}enabled"
        lazy_jid = JID.parse(lazy.jid)
        if state == "hibernating":
            lazy.abort()  # gone without a word: the session waits to be resumed
            for _ in range(100):
                if srv.server.services.hibernating:
                    break
                await asyncio.sleep(0.02)
            assert srv.server.services.hibernating
        sender = await Peer().login(srv, "sender")
        for i in range(25):
            sender.send(chat(lazy.jid, f"kept {i}"))
        await sender.drain()
        if state == "connected":
            # It reads but never acknowledges: the server gives up on it.
            assert await lazy.stream_error() == "resource-constraint"
        for _ in range(100):
            if srv.server.sessions.get(lazy_jid) is None:
                break
            await asyncio.sleep(0.02)
        assert srv.server.sessions.get(lazy_jid) is None
        assert not srv.server.services.hibernating
        await assert_unaffected(a, b)
        # Nothing was lost: everything it never acknowledged waits in the offline store.
        back = await connect(srv, "lazy@localhost/back")
        got = {(await back.next_message())["body"] for _ in range(25)}
        assert got == {f"kept {i}" for i in range(25)}
        await hang_up(a, b, back)


# ---------------------------------------------------------------------- connection limits


async def test_unauthenticated_connection_times_out(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        srv.server.config.limits.unauthenticated_timeout = 0.5  # for connections from now on
        idle = Peer()
        await idle.connect(srv.port)
        await idle.start()
        assert await idle.stream_error(timeout=10) == "connection-timeout"
        assert await idle.closed()
        await asyncio.sleep(0.6)  # longer than the timeout: bound sessions are not affected
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_unauthenticated_connections_per_ip_are_capped(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"unauthenticated_per_ip": 3}) as srv:
        a, b = await neighbours(srv)  # authenticated: they do not count
        held = []
        for _ in range(3):
            p = Peer()
            await p.connect(srv.port)
            await p.start()
            held.append(p)
        extra = Peer()
        await extra.connect(srv.port)
        extra.open_stream()
        assert await extra.stream_error() == "policy-violation"
        assert await extra.closed()
        # Another address is not affected.
        other = Peer()
        await other.connect(srv.port, local_ip="127.0.0.2")
        assert (await other.start()).find(f"{{{SASL_NS}}}mechanisms") is None  # STARTTLS first
        await other.starttls()
        assert other.features is not None
        assert other.features.find(f"{{{SASL_NS}}}mechanisms") is not None
        # A slot freed is a slot available again.
        held.pop().close()
        await asyncio.sleep(0.2)
        again = Peer()
        await again.connect(srv.port)
        assert (await again.start()).tag.endswith("features")
        await assert_unaffected(a, b)
        for p in [*held, other, again]:
            p.close()
        await hang_up(a, b)


async def test_auth_failures_are_throttled_per_ip(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"auth_failures_per_ip": 3}) as srv:
        a, b = await neighbours(srv)
        srv.add_user("victim", "correct horse")
        guesser = await Peer().secure(srv.port, srv.ca)
        for guess in ("123456", "password", "qwerty"):
            assert sasl_condition(await guesser.auth_plain("victim", guess)) == "not-authorized"
        # Even the right password is refused from this address for now...
        refused = await guesser.auth_plain("victim", "correct horse")
        assert sasl_condition(refused) == "temporary-auth-failure"
        fresh = await Peer().secure(srv.port, srv.ca)
        assert sasl_condition(await fresh.auth_plain("victim", "correct horse")) == (
            "temporary-auth-failure"
        )
        # ...but not from another address.
        elsewhere = await Peer().secure(srv.port, srv.ca, local_ip="127.0.0.2")
        ok = await elsewhere.auth_plain("victim", "correct horse")
        assert ok.tag == f"{{{SASL_NS}}}success"
        await assert_unaffected(a, b)
        for p in (guesser, fresh, elsewhere):
            p.close()
        await hang_up(a, b)


async def test_auth_failures_are_throttled_per_account(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"auth_failures_per_account": 3}) as srv:
        a, b = await neighbours(srv)
        srv.add_user("carol")
        for n, guess in enumerate(("123456", "password", "qwerty"), start=2):
            p = await Peer().secure(srv.port, srv.ca, local_ip=f"127.0.0.{n}")
            assert sasl_condition(await p.auth_plain("bob", guess)) == "not-authorized"
            p.close()
        # New logins to the attacked account wait, from any address...
        late = await Peer().secure(srv.port, srv.ca, local_ip="127.0.0.9")
        assert sasl_condition(await late.auth_plain("bob", "secret")) == "temporary-auth-failure"
        # ...while other accounts log in, and bob's open session keeps working.
        carol = await Peer().secure(srv.port, srv.ca, local_ip="127.0.0.9")
        assert (await carol.auth_plain("carol", "secret")).tag == f"{{{SASL_NS}}}success"
        await assert_unaffected(a, b)
        late.close()
        carol.close()
        await hang_up(a, b)


async def test_registrations_are_throttled_per_ip(tmp_path: Path) -> None:
    async with running_server(tmp_path, registration={"open": True, "throttle_per_ip": 2}) as srv:
        a, b = await neighbours(srv)

        async def register(peer: Peer, name: str) -> str:
            reply = await peer.iq(
                f"<iq type='set'><query xmlns='{REGISTER_NS}'><username>{name}</username>"
                "<password>pw</password></query></iq>"
            )
            return "ok" if reply.get("type") == "result" else condition_of(reply)

        p = await Peer().secure(srv.port, srv.ca)
        assert await register(p, "spam1") == "ok"
        assert await register(p, "spam2") == "ok"
        refused = await p.iq(
            f"<iq type='set'><query xmlns='{REGISTER_NS}'><username>spam3</username>"
            "<password>pw</password></query></iq>"
        )
        assert condition_of(refused) == "resource-constraint"
        err = refused.find(f"{{{CLIENT}}}error")
        assert err is not None and err.get("type") == "wait"
        assert not srv.server.accounts.exists("spam3")
        other = await Peer().secure(srv.port, srv.ca, local_ip="127.0.0.2")
        assert await register(other, "fine1") == "ok"
        assert srv.server.accounts.exists("fine1")
        await assert_unaffected(a, b)
        p.close()
        other.close()
        await hang_up(a, b)


# ---------------------------------------------------------------------- account limits


async def test_resources_per_account_are_capped(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"resources_per_account": 2}) as srv:
        a, b = await neighbours(srv)  # alice/good is one resource
        second = await Peer().login(srv, "alice", resource="second")
        third = Peer()
        with pytest.raises(PermissionError, match="resource-constraint"):
            await third.login(srv, "alice", resource="third")
        assert srv.server.sessions.get(JID.parse("alice@localhost/third")) is None
        # Binding an existing resource again replaces it and is not refused.
        again = await Peer().login(srv, "alice", resource="second")
        assert again.jid == "alice@localhost/second"
        assert await second.stream_error() == "conflict"
        await assert_unaffected(a, b)
        again.close()
        await hang_up(a, b)


async def test_offline_store_is_capped_per_account(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"offline_per_account": 3}) as srv:
        a, b = await neighbours(srv)
        srv.add_user("away")
        srv.add_user("mallory")
        m = await Peer().login(srv, "mallory")
        for i in range(3):
            m.send(f"<message to='away@localhost' type='chat' id='m{i}'><body>{i}</body></message>")
        m.send("<message to='away@localhost' type='chat' id='m3'><body>3</body></message>")
        err = await m.next("message")
        assert err.get("id") == "m3" and err.get("type") == "error"
        assert condition_of(err) == "resource-constraint"
        assert srv.server.offline_store.count("away") == 3
        await assert_unaffected(a, b)
        away = await connect(srv, "away@localhost/back")
        assert {(await away.next_message())["body"] for _ in range(3)} == {"0", "1", "2"}
        m.close()
        await hang_up(a, b, away)


@pytest.mark.skipif(archive_missing(), reason="the message archive is not wired yet")
async def test_archive_page_size_is_capped(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"archive_page_size": 5}) as srv:
        a, b = await neighbours(srv)
        for i in range(12):
            a.send_message(mto=b.boundjid.full, mbody=f"history {i}", mtype="chat")
        for _ in range(12):
            await b.next_message()
        m = await Peer().login(srv, "alice", resource="reader")
        qid = "q1"
        m.send(
            f"<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='{qid}'>"
            "<set xmlns='http://jabber.org/protocol/rsm'><max>1000</max></set></query></iq>"
        )
        results = 0
        while True:
            el = await m.recv()
            if el.tag == f"{{{CLIENT}}}message":
                results += 1
            elif el.tag == f"{{{CLIENT}}}iq" and el.get("id") == "mam1":
                assert el.get("type") == "result"
                break
        assert results == 5
        await assert_unaffected(a, b)
        m.close()
        await hang_up(a, b)


async def instant_room(owner: Peer, room: str, nick: str) -> None:
    """Create ``room`` and accept the default configuration (XEP-0045 §10.1.2)."""
    joined = await join_room(owner, room, nick)
    assert joined.get("type") != "error", ET.tostring(joined)
    done = await owner.iq(
        f"<iq type='set' to='{room}'><query xmlns='{MUC_OWNER_NS}'>"
        "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
    )
    assert done.get("type") == "result", ET.tostring(done)


@pytest.mark.skipif(muc_missing(), reason="the group chat service is not wired yet")
@pytest.mark.parametrize("path", ["account-join", "direct"])
async def test_rooms_per_account_are_capped(tmp_path: Path, path: str) -> None:
    overrides: dict[str, Any] = {"limits": {"rooms_per_account": 2}}
    if path == "direct":
        overrides["account_join"] = {"enabled": False}
    async with running_server(tmp_path, **overrides) as srv:
        a, b = await neighbours(srv)
        srv.add_user("mallory")
        m = await Peer().login(srv, "mallory")
        service = muc_service_of(srv)
        for n in ("r1", "r2"):
            await instant_room(m, f"{n}@{service}", "mal")
        refused = await join_room(m, f"r3@{service}", "mal")
        assert refused.get("type") == "error"
        assert condition_of(refused) == "resource-constraint"
        assert "r3" not in srv.server.muc.rooms
        # Another client of the same account attaching to a room it is in is not a new room.
        again = await Peer().login(srv, "mallory", resource="second")
        assert (await join_room(again, f"r1@{service}", "mal")).get("type") != "error"
        # Other accounts are not limited by mallory's rooms.
        srv.add_user("carol")
        carol = await Peer().login(srv, "carol")
        await instant_room(carol, f"r3@{service}", "carol")
        await assert_unaffected(a, b)
        for p in (m, again, carol):
            p.close()
        await hang_up(a, b)


@pytest.mark.skipif(muc_missing(), reason="the group chat service is not wired yet")
@pytest.mark.parametrize("path", ["account-join", "direct"])
async def test_occupants_per_room_are_capped(tmp_path: Path, path: str) -> None:
    overrides: dict[str, Any] = {"limits": {"occupants_per_room": 2}}
    if path == "direct":
        overrides["account_join"] = {"enabled": False}
    async with running_server(tmp_path, **overrides) as srv:
        a, b = await neighbours(srv)
        room = f"full@{muc_service_of(srv)}"
        peers = []
        for name in ("o1", "o2", "o3"):
            srv.add_user(name)
            peers.append(await Peer().login(srv, name))
        await instant_room(peers[0], room, "o1")
        assert (await join_room(peers[1], room, "o2")).get("type") != "error"
        refused = await join_room(peers[2], room, "o3")
        assert refused.get("type") == "error"
        assert condition_of(refused) == "service-unavailable"
        # The occupants inside still talk.
        peers[0].send(f"<message to='{room}' type='groupchat'><body>still here</body></message>")
        heard = await peers[1].recv_until(
            lambda el: el.findtext(f"{{{CLIENT}}}body") == "still here"
        )
        assert heard.get("type") == "groupchat"
        await assert_unaffected(a, b)
        for p in peers:
            p.close()
        await hang_up(a, b)
