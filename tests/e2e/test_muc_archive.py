"""Group chat service, end to end: the room archive (XEP-0313 on the room JID) and disco."""

from __future__ import annotations

import signal
from pathlib import Path
from xml.etree import ElementTree as ET

from minimix.protocol import ns
from tests.e2e.muc_helpers import (
    SERVICE,
    Recorder,
    admin_item,
    body,
    close,
    create,
    error_condition,
    join,
    send_groupchat,
    send_iq,
)
from tests.e2e.muc_helpers import client as muc_client
from tests.support import ServerProcess, connect, running_server, write_config

ROOM = f"coven@{SERVICE}"
NO_AUTO_JOIN = {"enabled": False}


def mam_query(queryid: str, rsm: str = "", fields: str = "") -> str:
    form = ""
    if fields:
        form = (
            f"<x xmlns='{ns.DATA}' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{ns.MAM}</value></field>{fields}</x>"
        )
    rsm_el = f"<set xmlns='{ns.RSM}'>{rsm}</set>" if rsm else ""
    return f"<query xmlns='{ns.MAM}' queryid='{queryid}'>{form}{rsm_el}</query>"


def results(rec: Recorder, queryid: str) -> list[ET.Element]:
    out = []
    for el in rec.pending():
        r = el.find(f"{{{ns.MAM}}}result")
        if r is not None and r.get("queryid") == queryid:
            out.append(el)
    return out


def forwarded(el: ET.Element) -> ET.Element:
    m = el.find(f"{{{ns.MAM}}}result/{{{ns.FORWARD}}}forwarded/{{jabber:client}}message")
    assert m is not None
    return m


def rsm(fin_iq: ET.Element) -> dict[str, str]:
    s = fin_iq.find(f"{{{ns.MAM}}}fin/{{{ns.RSM}}}set")
    assert s is not None
    return {c.tag.rsplit("}", 1)[1]: c.text or "" for c in s}


async def test_room_archive_paging_filters_and_access(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, rb = await muc_client(srv, "bob")
        c, _ = await muc_client(srv, "carol")
        await create(a, ra, ROOM, "Alice")
        await join(b, rb, ROOM, "Bob")
        live_ids = []
        for i in range(12):
            sender = a if i % 3 else b
            send_groupchat(sender, ROOM, f"msg {i}")
            got = await rb.take(lambda el, i=i: body(el) == f"msg {i}")  # type: ignore[misc]
            sid = got.find(f"{{{ns.SID}}}stanza-id")
            assert sid is not None
            live_ids.append(sid.get("id"))
        # Chat states are not archived.
        b.send_raw(
            f"<message to='{ROOM}' type='groupchat'><composing xmlns='{ns.CHATSTATES}'/></message>"
        )

        # The room advertises MAM.
        info = await send_iq(c, f"<query xmlns='{ns.DISCO_INFO}'/>", ROOM)
        assert ns.MAM in {f.get("var") for f in info.iter(f"{{{ns.DISCO_INFO}}}feature")}

        # First page of 5, in order, with the room's stanza-ids as archive ids.
        fin = await send_iq(b, mam_query("q1", "<max>5</max>"), ROOM, "set")
        assert fin.get("type") == "result"
        page = results(rb, "q1")
        assert [body(forwarded(el)) for el in page] == [f"msg {i}" for i in range(5)]
        assert [el.find(f"{{{ns.MAM}}}result").get("id") for el in page] == live_ids[:5]  # type: ignore[union-attr]
        assert all(el.get("from") == ROOM for el in page)
        info_rsm = rsm(fin)
        assert info_rsm["count"] == "12" and info_rsm["last"] == live_ids[4]
        assert fin.find(f"{{{ns.MAM}}}fin").get("complete") is None  # type: ignore[union-attr]
        # Next page, then the last page.
        fin = await send_iq(
            b, mam_query("q2", f"<max>5</max><after>{live_ids[4]}</after>"), ROOM, "set"
        )
        assert [body(forwarded(el)) for el in results(rb, "q2")] == [
            f"msg {i}" for i in range(5, 10)
        ]
        fin = await send_iq(b, mam_query("q3", "<max>5</max><before/>"), ROOM, "set")
        assert [body(forwarded(el)) for el in results(rb, "q3")] == [
            f"msg {i}" for i in range(7, 12)
        ]
        # Filter by occupant: Bob sent messages 0, 3, 6, 9.
        with_bob = f"<field var='with'><value>{ROOM}/Bob</value></field>"
        await send_iq(b, mam_query("q4", fields=with_bob), ROOM, "set")
        assert [body(forwarded(el)) for el in results(rb, "q4")] == [
            "msg 0",
            "msg 3",
            "msg 6",
            "msg 9",
        ]
        # Semi-anonymous: a participant does not learn real JIDs, a moderator does.
        assert all(forwarded(el).find(f"{{{ns.MUC_USER}}}x") is None for el in results(rb, "q1"))
        await send_iq(a, mam_query("q5", "<max>1</max>"), ROOM, "set")
        (first,) = results(ra, "q5")
        real = forwarded(first).find(f"{{{ns.MUC_USER}}}x/{{{ns.MUC_USER}}}item")
        assert real is not None and real.get("jid") == "bob@localhost/r"
        # The archive's bounds and its query form.
        meta = await send_iq(b, f"<metadata xmlns='{ns.MAM}'/>", ROOM, "get")
        start = meta.find(f"{{{ns.MAM}}}metadata/{{{ns.MAM}}}start")
        end = meta.find(f"{{{ns.MAM}}}metadata/{{{ns.MAM}}}end")
        assert start is not None and start.get("id") == live_ids[0]
        assert end is not None and end.get("id") == live_ids[-1]
        form = await send_iq(b, f"<query xmlns='{ns.MAM}'/>", ROOM, "get")
        assert form.find(f"{{{ns.MAM}}}query/{{{ns.DATA}}}x") is not None
        # An unknown id is item-not-found.
        bad = await send_iq(b, mam_query("q6", "<after>nope</after>"), ROOM, "set")
        assert error_condition(bad) == "item-not-found"

        # Members-only: only members may read; outcasts never.
        assert (
            await send_iq(a, admin_item(affiliation="member", jid="bob@localhost"), ROOM, "set")
        ).get("type") == "result"
        form = (
            f"<query xmlns='{ns.MUC_OWNER}'><x xmlns='{ns.DATA}' type='submit'>"
            "<field var='muc#roomconfig_membersonly'><value>1</value></field></x></query>"
        )
        assert (await send_iq(a, form, ROOM, "set")).get("type") == "result"
        denied = await send_iq(c, mam_query("q7"), ROOM, "set")
        assert error_condition(denied) == "forbidden"
        assert (await send_iq(b, mam_query("q8", "<max>1</max>"), ROOM, "set")).get(
            "type"
        ) == "result"
        await close(a, b, c)


async def test_service_and_room_disco(tmp_path: Path) -> None:
    async with running_server(tmp_path, account_join=NO_AUTO_JOIN) as srv:
        a, ra = await muc_client(srv, "alice")
        b, _ = await muc_client(srv, "bob")
        info = await send_iq(a, f"<query xmlns='{ns.DISCO_INFO}'/>", SERVICE)
        identity = info.find(f".//{{{ns.DISCO_INFO}}}identity")
        assert identity is not None and identity.get("category") == "conference"
        features = {f.get("var") for f in info.iter(f"{{{ns.DISCO_INFO}}}feature")}
        assert {ns.MUC, ns.MUC_STABLE_ID} <= features
        server_items = await send_iq(a, f"<query xmlns='{ns.DISCO_ITEMS}'/>", "localhost")
        assert SERVICE in {i.get("jid") for i in server_items.iter(f"{{{ns.DISCO_ITEMS}}}item")}

        await create(
            a,
            ra,
            ROOM,
            "Alice",
            {"muc#roomconfig_roomname": "A Dark Cave", "muc#roomconfig_roomdesc": "Witches"},
        )
        await create(a, ra, f"hidden@{SERVICE}", "Alice", {"muc#roomconfig_publicroom": "0"})
        await join(a, ra, f"locked@{SERVICE}", "Alice")  # created, never configured
        items = await send_iq(b, f"<query xmlns='{ns.DISCO_ITEMS}'/>", SERVICE)
        listed = {(i.get("jid"), i.get("name")) for i in items.iter(f"{{{ns.DISCO_ITEMS}}}item")}
        assert listed == {(ROOM, "A Dark Cave")}

        info = await send_iq(b, f"<query xmlns='{ns.DISCO_INFO}'/>", ROOM)
        features = {f.get("var") for f in info.iter(f"{{{ns.DISCO_INFO}}}feature")}
        assert {
            ns.MUC,
            ns.MUC_STABLE_ID,
            ns.MUC_SELF_PING,
            ns.OCCUPANT_ID,
            "muc_public",
            "muc_open",
            "muc_semianonymous",
            "muc_unmoderated",
            "muc_temporary",
            "muc_unsecured",
        } <= features
        form = {
            f.get("var"): [v.text for v in f.findall(f"{{{ns.DATA}}}value")]
            for f in info.iter(f"{{{ns.DATA}}}field")
        }
        assert form["FORM_TYPE"] == [ns.MUC_ROOMINFO]
        assert form["muc#roominfo_description"] == ["Witches"]
        assert form["muc#roominfo_occupants"] == ["1"]
        # Occupants are not listed to non-occupants, but are to occupants.
        empty = await send_iq(b, f"<query xmlns='{ns.DISCO_ITEMS}'/>", ROOM)
        assert not list(empty.iter(f"{{{ns.DISCO_ITEMS}}}item"))
        listed_to_owner = await send_iq(a, f"<query xmlns='{ns.DISCO_ITEMS}'/>", ROOM)
        assert [i.get("jid") for i in listed_to_owner.iter(f"{{{ns.DISCO_ITEMS}}}item")] == [
            f"{ROOM}/Alice"
        ]
        # The reserved nick (x-roomuser-item).
        member = admin_item(affiliation="member", jid="bob@localhost", nick="Robert")
        assert (await send_iq(a, member, ROOM, "set")).get("type") == "result"
        nick = await send_iq(b, f"<query xmlns='{ns.DISCO_INFO}' node='x-roomuser-item'/>", ROOM)
        reserved = nick.find(f".//{{{ns.DISCO_INFO}}}identity")
        assert reserved is not None and reserved.get("name") == "Robert"
        await close(a, b)


async def test_history_survives_a_crash(tmp_path: Path) -> None:
    """Room state is written as it changes: a killed server loses nothing."""
    config = write_config(tmp_path / "minimix.toml", tmp_path, account_join=NO_AUTO_JOIN)
    proc = ServerProcess(config, tmp_path)
    proc.start()
    try:

        class _Running:
            port = proc.ports["c2s"]
            ca = tmp_path / "tls" / "self-signed.crt"

        from minimix.storage.database import Database
        from minimix.storage.stores import AccountStore

        db = Database(tmp_path / "minimix.sqlite3")
        AccountStore(db).create("alice", "secret")
        db.close()
        a = await connect(_Running(), "alice@localhost/r")  # type: ignore[arg-type]
        ra = Recorder(a)
        await create(a, ra, ROOM, "Alice", {"muc#roomconfig_persistentroom": "1"})
        for i in range(3):
            send_groupchat(a, ROOM, f"kept {i}")
        await ra.take(lambda el: body(el) == "kept 2")
        proc.stop(signal.SIGKILL)
        a.abort()
        proc.start()
        _Running.port = proc.ports["c2s"]
        a = await connect(_Running(), "alice@localhost/r")  # type: ignore[arg-type]
        ra = Recorder(a)
        seq = await join(a, ra, ROOM, "Alice")
        assert [body(el) for el in seq if body(el)] == ["kept 0", "kept 1", "kept 2"]
        await close(a)
    finally:
        proc.stop()
