"""XEP-0198: a dropped client resumes and gets exactly what it missed; after the window, the
messages it never acknowledged reach the account again (another client or offline storage)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.account_data_helpers import (
    SM,
    SmClient,
    body,
    capture_messages,
    close,
    eventually,
    mam,
    settle,
)
from tests.e2e.raw_client import CLIENT, RawClient
from tests.support import connect, running_server


async def test_killed_client_resumes_and_gets_exactly_what_it_missed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await SmClient.login(srv, "alice", "phone")
        b = await connect(srv, f"{bob}/desk")
        for i in range(3):
            b.send_message(mto=f"{alice}/phone", mbody=f"m{i}", mtype="chat")
        assert await phone.read_bodies(2) == ["m0", "m1"]
        phone.ack()  # m0, m1 acknowledged; m2 is on the wire, read or not
        await settle(b)
        phone.kill()
        (session,) = srv.server.sessions.of_account(_bare(alice))
        await eventually(lambda: session.hibernating)
        # While away: the session stays, still available, and collects what arrives.
        for i in range(3, 6):
            b.send_message(mto=alice, mbody=f"m{i}", mtype="chat")
        await settle(b)
        assert srv.server.sessions.of_account(_bare(alice)) == [session]
        assert session.available

        raw, resumed = await phone.resume(srv, "alice")
        assert resumed.tag == f"{{{SM}}}resumed"
        again = SmClient(raw)
        again.sm_id, again.h = phone.sm_id, phone.h
        got = await again.read_bodies(4)
        assert got == ["m2", "m3", "m4", "m5"]
        # Nothing more comes: not m0/m1 again, not a second copy of anything.
        b.send_message(mto=alice, mbody="after", mtype="chat")
        assert await again.read_bodies(1) == ["after"]
        # The stream works both ways after resumption, under the same full JID.
        raw.send_raw(f"<message to='{bob}' type='chat'><body>back</body></message>")
        got_b = capture_messages(b)
        (back,) = await got_b.wait(1)
        assert back.get("from") == f"{alice}/phone"
        assert (await mam(b)).bodies.count("m3") == 1
        raw.close()
        await close(b)


async def test_slixmpp_resumes_after_a_dropped_connection(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone", plugins=("xep_0030", "xep_0199", "xep_0198"))
        b = await connect(srv, f"{bob}/desk")
        got = capture_messages(a)
        b.send_message(mto=alice, mbody="before", mtype="chat")
        await got.wait(1)
        await settle(a)
        assert a.plugin["xep_0198"].sm_id
        resumed = asyncio.Event()
        a.add_event_handler("session_resumed", lambda *_: resumed.set())
        a.transport.abort()
        session = srv.server.sessions.of_account(_bare(alice))[0]
        await eventually(lambda: session.hibernating)
        for i in range(3):
            b.send_message(mto=alice, mbody=f"away {i}", mtype="chat")
        await settle(b)
        a.connect("127.0.0.1", srv.port)
        await asyncio.wait_for(resumed.wait(), 10)
        await got.wait(4)
        await settle(a, b)
        assert [body(m) for m in got.items] == ["before", "away 0", "away 1", "away 2"]
        await close(a, b)


async def test_after_the_window_nothing_is_lost(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"sm_resume_timeout": 0.3}) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await SmClient.login(srv, "alice", "phone")
        b = await connect(srv, f"{bob}/desk")
        b.send_message(mto=f"{alice}/phone", mbody="seen", mtype="chat")
        assert await phone.read_bodies(1) == ["seen"]
        phone.ack()
        b.send_message(mto=f"{alice}/phone", mbody="on the wire", mtype="chat")
        await settle(b)
        phone.kill()
        b.send_message(mto=alice, mbody="while away", mtype="chat")
        await settle(b)
        await eventually(lambda: not srv.server.sessions.of_account(_bare(alice)), 10)

        raw, failed = await phone.resume(srv, "alice")
        assert failed.tag == f"{{{SM}}}failed"
        assert failed.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
        raw.close()

        a = await connect(srv, f"{alice}/again", presence=False)
        got = capture_messages(a)
        a.send_presence()
        await got.wait(2)
        await settle(a)
        assert sorted(body(m) or "" for m in got.items) == ["on the wire", "while away"]
        # The archive holds each one once.
        assert (await mam(a)).bodies == ["seen", "on the wire", "while away"]
        await close(a, b)


async def test_after_the_window_another_client_gets_the_missed_messages(tmp_path: Path) -> None:
    async with running_server(tmp_path, limits={"sm_resume_timeout": 0.3}) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await SmClient.login(srv, "alice", "phone")
        desk = await connect(srv, f"{alice}/desk")
        b = await connect(srv, f"{bob}/desk")
        on_desk = capture_messages(desk)
        for i in range(2):
            b.send_message(mto=f"{alice}/phone", mbody=f"p{i}", mtype="chat")
        b.send_message(mto=alice, mbody="to both", mtype="chat")
        await on_desk.wait(1)  # "to both" reached the desk at once
        phone.kill()
        await eventually(lambda: len(srv.server.sessions.of_account(_bare(alice))) == 1, 10)
        await on_desk.wait(3)
        await settle(b, desk)
        # p0 and p1 were never acknowledged by the phone: the desk gets them now; "to both"
        # it had already, so it does not come twice.
        assert [body(m) for m in on_desk.items] == ["to both", "p0", "p1"]
        assert srv.server.offline_store.count("alice") == 0
        await close(desk, b)


async def test_resume_is_refused_for_unknown_or_foreign_streams(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("mallory")
        phone = await SmClient.login(srv, "alice", "phone")
        mallory = RawClient()
        await mallory.connect(srv.port, srv.ca)
        await mallory.start()
        await mallory.starttls()
        await mallory.authenticate("mallory", "secret", "SCRAM-SHA-256")
        await mallory.start()
        mallory.send_raw(f"<resume xmlns='{SM}' previd='{phone.sm_id}' h='0'/>")
        failed = await mallory.recv_until(f"{{{SM}}}failed")
        assert failed.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
        mallory.send_raw(f"<resume xmlns='{SM}' previd='nope' h='0'/>")
        failed = await mallory.recv_until(f"{{{SM}}}failed")
        assert failed.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
        mallory.close()
        # Alice's connection was left alone; her own resume still works.
        phone.raw.send_raw("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = await phone.raw.recv_until(f"{{{CLIENT}}}iq")
        assert pong.get("type") == "result"
        phone.kill()
        raw2, resumed = await phone.resume(srv, "alice")
        assert resumed.tag == f"{{{SM}}}resumed"
        raw2.close()


def _bare(jid: str) -> object:
    from minimix.protocol.jid import JID

    return JID.parse(jid).bare


async def test_resume_takes_over_a_connection_the_server_still_thinks_alive(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await SmClient.login(srv, "alice", "phone")
        b = await connect(srv, f"{bob}/desk")
        b.send_message(mto=f"{alice}/phone", mbody="one", mtype="chat")
        assert await phone.read_bodies(1) == ["one"]
        b.send_message(mto=f"{alice}/phone", mbody="two", mtype="chat")
        await settle(b)
        # The old socket is still open (its network is silently gone); a new one resumes.
        raw, resumed = await phone.resume(srv, "alice")
        assert resumed.tag == f"{{{SM}}}resumed"
        assert await phone.raw.closed()  # the server let go of the old connection
        again = SmClient(raw)
        assert await again.read_bodies(1) == ["two"]
        b.send_message(mto=f"{alice}/phone", mbody="three", mtype="chat")
        assert await again.read_bodies(1) == ["three"]
        assert len(srv.server.services.connections) == 2  # the new one and Bob's
        raw.close()
        await close(b)
