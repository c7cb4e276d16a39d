"""XEP-0313 on the account: stored once, stable unspoofable stanza-ids, every filter and paging."""

from __future__ import annotations

import time
from pathlib import Path

from minimix.extensions.archive.protocol import parse_stamp
from minimix.protocol.jid import JID
from minimix.protocol.xml import parse_element
from tests.e2e.account_data_helpers import (
    MAM,
    SID,
    capture_messages,
    close,
    enable_carbons,
    error_condition,
    eventually,
    forwarded,
    iq_xml,
    mam,
    send_xml,
    settle,
    stanza_ids,
)
from tests.support import connect, running_server

DELAY = "urn:xmpp:delay"


async def test_chat_is_archived_once_with_the_stanza_id_clients_saw(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await connect(srv, f"{alice}/phone")
        laptop = await connect(srv, f"{alice}/laptop")
        b = await connect(srv, f"{bob}/desk")
        await enable_carbons(phone, laptop)
        on_phone, on_laptop = capture_messages(phone), capture_messages(laptop)

        b.send_message(mto=alice, mbody="to both of you", mtype="chat")
        (got_phone,) = await on_phone.wait(1)
        (got_laptop,) = await on_laptop.wait(1)
        sid = stanza_ids(got_phone)[alice]
        assert stanza_ids(got_laptop)[alice] == sid  # forked to both: one archive id

        phone.send_message(mto=bob, mbody="from the phone", mtype="chat")
        await settle(phone, b)

        page = await mam(laptop)
        assert page.bodies == ["to both of you", "from the phone"]
        assert page.ids[0] == sid
        assert page.complete
        assert page.rsm("count") == "2"
        stored = forwarded(page.results[0])
        assert stanza_ids(stored)[alice] == sid
        assert page.results[0].find(f".//{{{DELAY}}}delay") is not None
        # Bob's archive is his own: the same conversation, his ids.
        bob_page = await mam(b)
        assert bob_page.bodies == ["to both of you", "from the phone"]
        assert set(bob_page.ids).isdisjoint(page.ids)
        # The outgoing copy to Bob carries no stanza-id of Alice's archive.
        b_in = capture_messages(b)
        phone.send_message(mto=bob, mbody="again", mtype="chat")
        (to_bob,) = await b_in.wait(1)
        assert alice not in stanza_ids(to_bob)
        assert bob in stanza_ids(to_bob)
        await close(phone, laptop, b)


async def test_a_spoofed_stanza_id_is_replaced(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/desk")
        got = capture_messages(a)
        send_xml(
            b,
            f"<message to='{alice}' type='chat' id='s1'><body>trust me</body>"
            f"<stanza-id xmlns='{SID}' by='{alice}' id='forged'/>"
            f"<stanza-id xmlns='{SID}' by='elsewhere.example' id='kept'/></message>",
        )
        (msg,) = await got.wait(1)
        ids = stanza_ids(msg)
        assert len(msg.findall(f"{{{SID}}}stanza-id")) == 2
        assert ids[alice] != "forged"
        assert ids["elsewhere.example"] == "kept"
        page = await mam(a, {"ids": ids[alice]})
        assert page.bodies == ["trust me"]
        assert (await mam(a, {"ids": "forged"})).error == "item-not-found"
        await close(a, b)


async def test_filters_and_paging(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob, carol = srv.add_user("alice"), srv.add_user("bob"), srv.add_user("carol")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/desk")
        c = await connect(srv, f"{carol}/desk")
        for i in range(10):
            sender = b if i % 3 else c
            sender.send_message(mto=alice, mbody=f"m{i}", mtype="chat")
            await settle(sender)
        everything = await mam(a)
        assert everything.bodies == [f"m{i}" for i in range(10)]
        ids = everything.ids
        stamps = [
            parse_stamp(r.find(f".//{{{DELAY}}}delay").get("stamp", ""))  # type: ignore[union-attr]
            for r in everything.results
        ]

        # with: bare JID matches every resource; a full JID only that one
        assert (await mam(a, {"with": carol})).bodies == ["m0", "m3", "m6", "m9"]
        assert (await mam(a, {"with": f"{carol}/desk"})).bodies == ["m0", "m3", "m6", "m9"]
        assert (await mam(a, {"with": f"{carol}/other"})).bodies == []
        # start / end are inclusive
        got = await mam(a, {"start": _iso(stamps[2]), "end": _iso(stamps[6])})
        assert got.ids == [
            i for i, s in zip(ids, stamps, strict=True) if stamps[2] <= s <= stamps[6]
        ]
        # before-id / after-id are exclusive; ids picks exactly those
        assert (await mam(a, {"after-id": ids[3], "before-id": ids[7]})).ids == ids[4:7]
        assert (await mam(a, {"ids": [ids[8], ids[1]]})).ids == [ids[1], ids[8]]
        for field in ("after-id", "before-id", "ids"):
            assert (await mam(a, {field: "nope"})).error == "item-not-found"

        # forwards with <after/>: every message once, then complete
        seen: list[str] = []
        after = ""
        while True:
            page = await mam(a, rsm="<max>4</max>" + (f"<after>{after}</after>" if after else ""))
            seen += page.ids
            assert page.rsm("count") == "10"
            if page.complete:
                break
            after = page.rsm("last") or ""
        assert seen == ids
        # backwards from the last page with <before/>
        last = await mam(a, rsm="<max>4</max><before/>")
        assert last.ids == ids[6:] and not last.complete
        prev = await mam(a, rsm=f"<max>4</max><before>{last.rsm('first')}</before>")
        assert prev.ids == ids[2:6]
        first = await mam(a, rsm=f"<max>4</max><before>{prev.rsm('first')}</before>")
        assert first.ids == ids[:2] and first.complete
        # flip-page: the same page, newest first
        flipped = await mam(a, rsm="<max>4</max><before/>", flip=True)
        assert flipped.ids == list(reversed(ids[6:]))
        # paging combined with a filter
        bob_last = await mam(a, {"with": bob}, rsm="<max>2</max><before/>")
        assert bob_last.bodies == ["m7", "m8"]
        # unknown RSM ids, counting only
        assert (await mam(a, rsm="<after>nope</after>")).error == "item-not-found"
        count_only = await mam(a, rsm="<max>0</max>")
        assert count_only.results == [] and count_only.rsm("count") == "10"
        # an unknown field is refused
        assert (await mam(a, {"{urn:example}x": "1"})).error == "feature-not-implemented"
        await close(a, b, c)


def _iso(t: float) -> str:
    from minimix.extensions.archive.protocol import format_stamp

    return format_stamp(t)


async def test_group_chat_in_the_user_archive(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/desk")
        b.send_message(mto=alice, mbody="direct", mtype="chat")
        await settle(b, a)
        room = "lounge@conference.localhost"
        archive = srv.server.archive
        for i in range(2):
            stanza = parse_element(
                f"<message from='{room}/bob' to='{alice}' type='groupchat' id='g{i}'>"
                f"<body>group {i}</body><stanza-id xmlns='{SID}' by='{room}' id='r{i}'/></message>"
            )
            stored = archive.store_message(
                JID.parse(alice),
                stanza,
                with_jid=JID.parse(room),
                kind="groupchat",
                room_stanza_id=f"r{i}",
            )
            assert stored is not None
            assert stored.find(f"{{{SID}}}stanza-id[@by='{alice}']") is not None
        assert (await mam(a)).bodies == ["direct"]
        assert (await mam(a, {"include-groupchat": "true"})).bodies == [
            "direct",
            "group 0",
            "group 1",
        ]
        assert (await mam(a, {"with": room})).bodies == ["group 0", "group 1"]
        assert (await mam(a, {"include-groupchat": "false", "with": room})).bodies == []
        assert srv.server.archive_store.last_room_stanza(alice, room) is not None

        info = await iq_xml(
            a, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=alice
        )
        features = {f.get("var") for f in info.findall("{*}feature")}
        assert {
            MAM,
            f"{MAM}#extended",
            f"{MAM}#groupchat-field",
            f"{MAM}#groupchat-available",
        } <= features
        form = await iq_xml(a, "get", f"<query xmlns='{MAM}'/>")
        fields = {f.get("var") for f in form.iter("{jabber:x:data}field")}
        assert {
            "with",
            "start",
            "end",
            "before-id",
            "after-id",
            "ids",
            "include-groupchat",
        } <= fields
        md = await iq_xml(a, "get", f"<metadata xmlns='{MAM}'/>")
        assert md.find(f"{{{MAM}}}start") is not None and md.find(f"{{{MAM}}}end") is not None
        await close(a, b)


async def test_preferences_and_privacy(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob, carol = srv.add_user("alice"), srv.add_user("bob"), srv.add_user("carol")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/desk")
        c = await connect(srv, f"{carol}/desk")
        prefs = await iq_xml(
            a,
            "set",
            f"<prefs xmlns='{MAM}' default='never'><always><jid>{bob}</jid></always>"
            "<never/></prefs>",
        )
        assert prefs.get("default") == "never"
        got = await iq_xml(a, "get", f"<prefs xmlns='{MAM}'/>")
        assert [j.text for j in got.iter(f"{{{MAM}}}jid")] == [bob]
        b.send_message(mto=alice, mbody="kept", mtype="chat")
        c.send_message(mto=alice, mbody="not kept", mtype="chat")
        a.send_message(mto=carol, mbody="not kept either", mtype="chat")
        await settle(b, c, a)
        assert (await mam(a)).bodies == ["kept"]
        # Nobody reads another account's archive.
        assert (await mam(b, to=alice)).error == "forbidden"
        await close(a, b, c)


async def test_offline_messages_carry_their_archive_id(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        b = await connect(srv, f"{bob}/desk")
        b.send_message(mto=alice, mbody="while you were out", mtype="chat")
        await settle(b)
        a = await connect(srv, f"{alice}/phone", presence=False)
        got = capture_messages(a)
        a.send_presence()
        (msg,) = await got.wait(1)
        page = await mam(a)
        assert page.bodies == ["while you were out"]
        assert stanza_ids(msg)[alice] == page.ids[0]
        await close(a, b)


async def test_retention_drops_old_messages(tmp_path: Path) -> None:
    async with running_server(tmp_path, archive={"retention": "1d"}) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        store = srv.server.archive_store
        store.append(
            alice,
            bob,
            "<message type='chat'><body>ancient</body></message>",
            "chat",
            stamp=time.time() - 3 * 86400,
        )
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/desk")
        b.send_message(mto=alice, mbody="fresh", mtype="chat")
        await settle(b, a)
        await eventually(lambda: srv.server.archive.expire_now() == 0)
        assert (await mam(a)).bodies == ["fresh"]
        await close(a, b)


async def test_archiving_can_be_switched_off(tmp_path: Path) -> None:
    async with running_server(tmp_path, archive={"enabled": False}) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/desk")
        got = capture_messages(a)
        send_xml(
            b,
            f"<message to='{alice}' type='chat'><body>hi</body>"
            f"<stanza-id xmlns='{SID}' by='{alice}' id='forged'/></message>",
        )
        (msg,) = await got.wait(1)
        assert stanza_ids(msg) == {}
        page = await mam(a)
        assert page.error == "service-unavailable"
        info = await iq_xml(
            a, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=alice
        )
        assert MAM not in {f.get("var") for f in info.findall("{*}feature")}
        err = await iq_xml(a, "get", f"<prefs xmlns='{MAM}'/>")
        assert error_condition(err) == "service-unavailable"
        await close(a, b)


async def test_a_removed_account_leaves_no_archive_or_pep_data(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/desk")
        b.send_message(mto=alice, mbody="remember me", mtype="chat")
        await settle(b, a)
        await iq_xml(
            a,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:example:n'>"
            "<item id='1'><x xmlns='urn:example:n'/></item></publish></pubsub>",
        )
        assert srv.server.archive_store.bounds(alice) is not None
        assert srv.server.pubsub_store.nodes(alice) != []
        send_xml(
            a, "<iq type='set' id='bye'><query xmlns='jabber:iq:register'><remove/></query></iq>"
        )
        await eventually(lambda: not srv.server.accounts.exists("alice"))
        await eventually(lambda: srv.server.archive_store.bounds(alice) is None)
        assert srv.server.pubsub_store.nodes(alice) == []
        assert srv.server.archive_store.bounds(bob) is not None  # Bob keeps his own copy
        await close(a, b)
