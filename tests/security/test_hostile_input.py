"""Hostile XML over real sockets: refused with the standard stream error, never smuggled, never
harmful to the well-behaved clients connected at the same time."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.security.hostile import (
    CLIENT,
    STREAM,
    Peer,
    assert_unaffected,
    hang_up,
    neighbours,
)
from tests.support import Running, running_server

HEADER = (
    f"<stream:stream xmlns='jabber:client' xmlns:stream='{STREAM}' to='localhost' version='1.0'>"
)
LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz ["
    '<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)


async def attacker_and_target(srv: Running) -> tuple[Peer, Peer]:
    srv.add_user("mallory")
    srv.add_user("target")
    target = await Peer().login(srv, "target")
    mallory = await Peer().login(srv, "mallory")
    return mallory, target


async def no_message_for(peer: Peer, sender: Peer) -> None:
    """Nothing reached ``peer`` from the attacker: a sentinel from a fresh client comes first."""
    sender.send(f"<message to='{peer.jid}' type='chat'><body>sentinel</body></message>")
    el = await peer.next("message")
    assert el.findtext(f"{{{CLIENT}}}body") == "sentinel"


# ---------------------------------------------------------------------- DTDs and entities


@pytest.mark.parametrize(
    ("where", "condition"),
    [("prologue", "restricted-xml"), ("inside the stream", "not-well-formed")],
)
async def test_billion_laughs_is_refused(tmp_path: Path, where: str, condition: str) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        p = Peer()
        await p.connect(srv.port)
        if where == "prologue":
            p._new_stream()
            p.send(LAUGHS + HEADER)
        else:
            await p.start()
            p.send(LAUGHS.removeprefix("<?xml version='1.0'?>") + "<message>&lol9;</message>")
        assert await p.stream_error() == condition
        assert await p.closed()
        # An entity reference without any DTD is refused as well.
        q = Peer()
        await q.connect(srv.port)
        await q.start()
        q.send("<message><body>&lol9;</body></message>")
        assert await q.stream_error() == "restricted-xml"
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_external_entity_is_refused(tmp_path: Path) -> None:
    fetched: list[bytes] = []

    async def bait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fetched.append(await reader.read(100))
        writer.close()

    trap = await asyncio.start_server(bait, "127.0.0.1", 0)
    trap_port = trap.sockets[0].getsockname()[1]
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        for dtd in (
            '<!DOCTYPE s [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
            f'<!DOCTYPE stream:stream SYSTEM "http://127.0.0.1:{trap_port}/evil.dtd">',
            f'<!DOCTYPE s [<!ENTITY % p SYSTEM "http://127.0.0.1:{trap_port}/p">%p;]>',
        ):
            p = Peer()
            await p.connect(srv.port)
            p._new_stream()
            p.send("<?xml version='1.0'?>" + dtd + HEADER + "<message>&xxe;</message>")
            assert await p.stream_error() == "restricted-xml"
            assert await p.closed()
        await asyncio.sleep(0.2)
        assert fetched == []  # nothing was fetched
        await assert_unaffected(a, b)
        await hang_up(a, b)
    trap.close()


@pytest.mark.parametrize(
    "markup", ["<!-- a comment -->", "<?xml-stylesheet href='x'?>", "<?php system('id'); ?>"]
)
async def test_comment_and_processing_instruction_are_refused(tmp_path: Path, markup: str) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        mallory.send(f"<message to='{target.jid}'><body>hi</body>{markup}</message>")
        assert await mallory.stream_error() == "restricted-xml"
        assert await mallory.closed()
        await no_message_for(target, await Peer().login(srv, "mallory", resource="clean"))
        await assert_unaffected(a, b)
        await hang_up(a, b)


# ---------------------------------------------------------------------- encoding


async def test_utf8_split_across_reads_is_reassembled(tmp_path: Path) -> None:
    text = "h\u00e9llo \u4e2d\u6587 \U0001d11e \U0001f642 \u00e9\u0301"
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        data = f"<message to='{target.jid}' type='chat'><body>{text}</body></message>".encode()
        start = data.index(b"<body>")
        mallory.send(data[:start])
        # Byte by byte, each in its own TLS record and (with the pauses) its own read.
        for i in range(start, len(data)):
            mallory.send(data[i : i + 1])
            await mallory.drain()
            await asyncio.sleep(0.002)
        el = await target.next("message")
        assert el.findtext(f"{{{CLIENT}}}body") == text
        assert el.get("from") == mallory.jid
        await assert_unaffected(a, b)
        await hang_up(a, b)


INVALID_UTF8 = {
    "overlong slash": b"\xc0\xaf",
    "overlong NUL": b"\xc0\x80",
    "surrogate": b"\xed\xa0\x80",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
    "stray continuation": b"\x80",
    "truncated sequence": b"\xe4\xb8x",
    "invalid first byte": b"\xff",
}


@pytest.mark.parametrize("raw", INVALID_UTF8.values(), ids=list(INVALID_UTF8))
async def test_invalid_utf8_is_refused(tmp_path: Path, raw: bytes) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        mallory.send(f"<message to='{target.jid}'><body>a".encode() + raw + b"b</body></message>")
        assert await mallory.stream_error() == "not-well-formed"
        assert await mallory.closed()
        await no_message_for(target, await Peer().login(srv, "mallory", resource="clean"))
        await assert_unaffected(a, b)
        await hang_up(a, b)


FORBIDDEN_CHARACTERS = {
    "NUL": b"\x00",
    "bell": b"\x07",
    "escape": b"\x1b",
    "reference to NUL": b"&#0;",
    "reference to a control": b"&#x1;",
    "reference to U+FFFE": b"&#xFFFE;",
    "reference to a surrogate": b"&#xD800;",
}


@pytest.mark.parametrize("raw", FORBIDDEN_CHARACTERS.values(), ids=list(FORBIDDEN_CHARACTERS))
async def test_nul_and_control_characters_are_refused(tmp_path: Path, raw: bytes) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        mallory.send(f"<message to='{target.jid}'><body>x".encode() + raw + b"y</body></message>")
        assert await mallory.stream_error() == "not-well-formed"
        assert await mallory.closed()
        await no_message_for(target, await Peer().login(srv, "mallory", resource="clean"))
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_unusual_but_valid_characters_arrive_intact(tmp_path: Path) -> None:
    """Tabs, newlines, carriage returns written as references, C1 controls, U+FFFD, U+10FFFF:
    valid XML, delivered exactly (an over-eager filter is a denial of service too)."""
    async with running_server(tmp_path) as srv:
        mallory, target = await attacker_and_target(srv)
        sent = "a\tb\nc&#13;d\u0085e\ufffdf\U0010ffffg&amp;&lt;&gt;\"'"
        attr = "x&#9;y&#10;z&#13;"
        mallory.send(
            f"<message to='{target.jid}' id='{attr}' type='chat'><body>{sent}</body></message>"
        )
        el = await target.next("message")
        assert el.findtext(f"{{{CLIENT}}}body") == "a\tb\nc\rd\u0085e\ufffdf\U0010ffffg&<>\"'"
        assert el.get("id") == "x\ty\nz\r"


# ---------------------------------------------------------------------- smuggling


async def test_escaped_markup_is_not_smuggled(tmp_path: Path) -> None:
    forged = (
        "<message from='admin@localhost' to='target@localhost/raw'><body>pwned</body></message>"
    )
    escaped = forged.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        mallory.send(
            f"<message to='{target.jid}' type='chat' id='&quot;/&gt;&lt;iq type=&apos;set&apos;'>"
            f"<body>&lt;/body&gt;&lt;/message&gt;{escaped}<![CDATA[</body></message>{forged}]]>"
            "</body></message>"
        )
        el = await target.next("message")
        assert el.get("from") == mallory.jid
        assert el.get("id") == "\"/><iq type='set'"
        assert el.findtext(f"{{{CLIENT}}}body") == ("</body></message>" + forged) * 2
        # Exactly one stanza arrived: the next one is the sentinel, and the forged markup never
        # appeared as markup on the wire.
        await no_message_for(target, await Peer().login(srv, "mallory", resource="clean"))
        assert b"<message from='admin@localhost'" not in target.received
        assert b'<message from="admin@localhost"' not in target.received
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_prefixes_and_namespaced_attributes_do_not_smuggle_addresses(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        # A prefixed stanza is the same stanza; it is written out afresh, without the prefix.
        mallory.send(
            f"<c:message xmlns:c='jabber:client' to='{target.jid}' type='chat'>"
            "<c:body>prefixed</c:body></c:message>"
        )
        el = await target.next("message")
        assert el.findtext(f"{{{CLIENT}}}body") == "prefixed"
        assert el.get("from") == mallory.jid
        assert b"c:message" not in target.received
        # A namespaced "from" attribute is not the from attribute.
        mallory.send(
            f"<message xmlns:x='jabber:client' x:from='admin@localhost' to='{target.jid}' "
            "type='chat'><body>namespaced</body></message>"
        )
        el = await target.next("message")
        assert el.get("from") == mallory.jid
        assert el.findtext(f"{{{CLIENT}}}body") == "namespaced"
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.parametrize(
    ("payload", "condition"),
    [
        # "}" would end the namespace early when written out again: the target would read XML
        # that differs from what the server parsed (or none at all), so it is refused here.
        ("<x xmlns='urn:a}b'/>", "not-well-formed"),
        ("<x xmlns='urn:a&#9;b'/>", "not-well-formed"),
        ("<x xmlns:p='urn:a}b' p:y='1'/>", "not-well-formed"),
        ("<body>one</body><body xml:lang='en' xml:lang='fr'>two</body>", "not-well-formed"),
        ("<p:x/>", "not-well-formed"),  # unbound prefix
    ],
    ids=[
        "brace in namespace",
        "tab in namespace",
        "brace in prefixed namespace",
        "duplicate attribute",
        "unbound prefix",
    ],
)
async def test_xml_other_parsers_read_differently_is_refused(
    tmp_path: Path, payload: str, condition: str
) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        mallory.send(f"<message to='{target.jid}' type='chat'>{payload}</message>")
        assert await mallory.stream_error() == condition
        assert await mallory.closed()
        # The target's stream is intact: it still parses what it gets.
        await no_message_for(target, await Peer().login(srv, "mallory", resource="clean"))
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        ("<message xmlns='jabber:server' to='target@localhost'/>", "unsupported-stanza-type"),
        ("<iq xmlns='jabber:component:accept' type='get'/>", "unsupported-stanza-type"),
        (HEADER[:-1] + "/>", "unsupported-stanza-type"),
        ("plain text at the stream level", "bad-format"),
    ],
    ids=["jabber:server", "jabber:component:accept", "second header", "text"],
)
async def test_stanza_in_foreign_namespace_is_refused(
    tmp_path: Path, data: str, condition: str
) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        mallory, target = await attacker_and_target(srv)
        mallory.send(data)
        assert await mallory.stream_error() == condition
        assert await mallory.closed()
        await no_message_for(target, await Peer().login(srv, "mallory", resource="clean"))
        await assert_unaffected(a, b)
        await hang_up(a, b)


def test_laughs_fixture_is_a_real_billion_laughs() -> None:
    """The DTD above really expands to 10^9 "lol"s for a parser that allows it."""
    parser = ET.XMLParser()
    parser.feed(LAUGHS + "<r>&lol2;</r>")
    assert parser.close().text == "lol" * 100
