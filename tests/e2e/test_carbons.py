"""XEP-0280: copies reach the other enabled clients, never the sender, never group chat."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.account_data_helpers import (
    CARBONS,
    Capture,
    body,
    capture_messages,
    close,
    enable_carbons,
    forwarded,
    iq_xml,
    send_xml,
    settle,
    stanza_ids,
)
from tests.support import Client, connect, running_server

RECEIVED = f"{{{CARBONS}}}received"
SENT = f"{{{CARBONS}}}sent"


def carbons(client: Client) -> Capture:
    return Capture(
        client,
        "{jabber:client}message",
        lambda m: m.find(RECEIVED) is not None or m.find(SENT) is not None,
    )


async def test_received_and_sent_copies(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await connect(srv, f"{alice}/phone")
        laptop = await connect(srv, f"{alice}/laptop")
        tablet = await connect(srv, f"{alice}/tablet")  # never enables carbons
        b = await connect(srv, f"{bob}/desk")
        await enable_carbons(phone, laptop)
        copies = {c: carbons(c) for c in (phone, laptop, tablet)}
        direct = {c: capture_messages(c) for c in (phone, laptop, tablet)}

        b.send_message(mto=f"{alice}/phone", mbody="for the phone", mtype="chat")
        (original,) = await direct[phone].wait(1)
        (copy,) = await copies[laptop].wait(1)
        assert copy.get("from") == alice and copy.get("to") == f"{alice}/laptop"
        assert copy.get("type") == "chat"
        assert copy[0].tag == RECEIVED
        inner = forwarded(copy)
        assert body(inner) == "for the phone" and inner.get("from") == f"{bob}/desk"
        assert stanza_ids(inner)[alice] == stanza_ids(original)[alice]

        phone.send_message(mto=bob, mbody="from the phone", mtype="chat")
        copy2 = (await copies[laptop].wait(2))[1]
        assert copy2[0].tag == SENT
        sent = forwarded(copy2)
        assert body(sent) == "from the phone" and sent.get("from") == f"{alice}/phone"
        assert sent.get("to") == bob
        assert alice in stanza_ids(sent)  # where the archive keeps it

        await settle(b, phone, laptop, tablet)
        assert copies[phone].items == []  # the sender never gets its own copy
        assert copies[tablet].items == []  # not enabled: nothing
        assert direct[laptop].items == [] and direct[tablet].items == []
        await close(phone, laptop, tablet, b)


async def test_bare_jid_delivery_copies_only_to_clients_it_missed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await connect(srv, f"{alice}/phone", presence=False)
        laptop = await connect(srv, f"{alice}/laptop")
        phone.send_presence(ppriority=10)
        b = await connect(srv, f"{bob}/desk")
        await enable_carbons(phone, laptop)
        await settle(phone)
        copies = {c: carbons(c) for c in (phone, laptop)}
        direct = {c: capture_messages(c) for c in (phone, laptop)}
        b.send_message(mto=alice, mbody="hello", mtype="chat")
        await direct[phone].wait(1)
        (copy,) = await copies[laptop].wait(1)
        assert body(forwarded(copy)) == "hello"
        # equal priority: both get the message itself, nobody a copy
        laptop.send_presence(ppriority=10)
        await settle(laptop)
        b.send_message(mto=alice, mbody="both", mtype="chat")
        await direct[laptop].wait(1)
        await direct[phone].wait(2)
        await settle(b, phone, laptop)
        assert len(copies[laptop].items) == 1 and copies[phone].items == []
        await close(phone, laptop, b)


async def test_what_is_not_copied(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await connect(srv, f"{alice}/phone")
        laptop = await connect(srv, f"{alice}/laptop")
        b = await connect(srv, f"{bob}/desk")
        await enable_carbons(phone, laptop)
        copies = carbons(laptop)
        room = "room@conference.localhost"
        # group chat (here sent straight to the client, as a room would)
        send_xml(b, f"<message to='{alice}/phone' type='groupchat'><body>group</body></message>")
        # a private message from a room occupant
        send_xml(
            b,
            f"<message to='{alice}/phone' type='chat'><body>pm</body>"
            "<x xmlns='http://jabber.org/protocol/muc#user'/></message>",
        )
        # <private/> and the no-copy hint
        send_xml(
            b,
            f"<message to='{alice}/phone' type='chat'><body>secret</body>"
            f"<private xmlns='{CARBONS}'/></message>",
        )
        send_xml(
            phone,
            f"<message to='{bob}' type='chat'><body>secret too</body>"
            "<no-copy xmlns='urn:xmpp:hints'/></message>",
        )
        # headline
        send_xml(b, f"<message to='{alice}/phone' type='headline'><body>news</body></message>")
        # a private message to an occupant *is* copied to the sender's other clients
        send_xml(
            phone,
            f"<message to='{room}/bob' type='chat'><body>pm out</body>"
            "<x xmlns='http://jabber.org/protocol/muc#user'/></message>",
        )
        (copy,) = await copies.wait(1)
        assert copy[0].tag == SENT and body(forwarded(copy)) == "pm out"
        await settle(b, phone, laptop)
        assert len(copies.items) == 1
        await close(phone, laptop, b)


async def test_disable_stops_copies_and_chat_states_are_copied(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice, bob = srv.add_user("alice"), srv.add_user("bob")
        phone = await connect(srv, f"{alice}/phone")
        laptop = await connect(srv, f"{alice}/laptop")
        b = await connect(srv, f"{bob}/desk")
        await enable_carbons(laptop)
        await enable_carbons(laptop)  # twice is fine
        copies = carbons(laptop)
        send_xml(
            b,
            f"<message to='{alice}/phone' type='chat'>"
            "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        )
        (copy,) = await copies.wait(1)
        assert forwarded(copy).find("{http://jabber.org/protocol/chatstates}composing") is not None
        reply = await iq_xml(laptop, "set", f"<disable xmlns='{CARBONS}'/>")
        assert reply.tag != "{jabber:client}error"
        b.send_message(mto=f"{alice}/phone", mbody="after", mtype="chat")
        await settle(b, phone, laptop)
        assert len(copies.items) == 1
        info = await iq_xml(
            phone, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to="localhost"
        )
        assert CARBONS in {f.get("var") for f in info.findall("{*}feature")}
        await close(phone, laptop, b)
