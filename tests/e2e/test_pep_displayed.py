"""XEP-0490: the displayed state is a private PEP node that follows the account's clients."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.account_data_helpers import (
    EVENT,
    PUBSUB,
    capture_messages,
    close,
    error_condition,
    events,
    friends,
    iq_xml,
    item_ids,
    items,
    option,
    pep_client,
    publish,
    send_xml,
    settle,
)
from tests.support import running_server

MDS = "urn:xmpp:mds:displayed:0"
SID = "urn:xmpp:sid:0"
MDS_OPTIONS = (
    option("persist_items", "true")
    + option("max_items", "max")
    + option("send_last_published_item", "never")
    + option("access_model", "whitelist")
)


def displayed(by: str, sid: str) -> str:
    return f"<displayed xmlns='{MDS}'><stanza-id xmlns='{SID}' by='{by}' id='{sid}'/></displayed>"


async def test_read_state_reaches_the_other_clients_only(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        friends(srv, "alice", "bob")
        phone = await pep_client(srv, f"{alice}/phone", MDS)
        laptop = await pep_client(srv, f"{alice}/laptop", MDS)
        b = await pep_client(srv, f"{bob}/desk", MDS)
        on_laptop, on_bob = events(laptop), events(b)
        await publish(phone, MDS, displayed(alice, "abc"), bob, MDS_OPTIONS)
        (ev,) = await on_laptop.wait(1)
        item = ev.find(f".//{{{EVENT}}}item")
        assert item is not None and item.get("id") == bob
        assert item.find(f"{{{MDS}}}displayed/{{{SID}}}stanza-id").get("id") == "abc"  # type: ignore[union-attr]
        await settle(b, phone)
        assert on_bob.items == []  # a contact with +notify still gets nothing: whitelist
        assert error_condition(await items(b, alice, MDS)) == "not-allowed"
        # A client that was away reads every chat's state at once.
        await publish(phone, MDS, displayed(alice, "def"), "room@conference.localhost")
        assert item_ids(await items(laptop, alice, MDS)) == [bob, "room@conference.localhost"]
        await close(phone, laptop, b)


async def test_server_assisted_update(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await pep_client(srv, f"{alice}/phone", MDS)
        laptop = await pep_client(srv, f"{alice}/laptop", MDS)
        b = await pep_client(srv, f"{bob}/desk")
        info = await iq_xml(
            phone, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=alice
        )
        assert "urn:xmpp:mds:server-assist:0" in {f.get("var") for f in info.findall("{*}feature")}
        on_laptop = events(laptop)
        markers = capture_messages(b, "{urn:xmpp:chat-markers:0}displayed")
        send_xml(
            phone,
            f"<message to='{bob}/desk' type='chat'>"
            "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>"
            f"{displayed(alice, 'xyz')}</message>",
        )
        (marker,) = await markers.wait(1)
        assert marker.find(f"{{{MDS}}}displayed") is None  # for the server only
        (ev,) = await on_laptop.wait(1)
        item = ev.find(f".//{{{EVENT}}}item")
        assert item is not None and item.get("id") == bob  # the chat, as a bare JID
        stored = await items(laptop, alice, MDS)
        sid = stored.find(f".//{{{PUBSUB}}}item/{{{MDS}}}displayed/{{{SID}}}stanza-id")
        assert sid is not None and sid.get("id") == "xyz"
        await close(phone, laptop, b)
