"""The restricted incremental parser and the serializer (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minimix.protocol import ns
from minimix.protocol.xml import (
    Element,
    ParseError,
    StreamHeader,
    StreamParser,
    SubElement,
    element,
    escape_attr,
    escape_text,
    inner_xml,
    parse_element,
    renamespace,
    serialize,
)

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"
)


def events(parser: StreamParser, *chunks: bytes) -> list[StreamHeader | Element | None]:
    out: list[StreamHeader | Element | None] = []
    for c in chunks:
        out.extend(parser.feed(c))
    return out


def test_header_then_stanzas_then_close() -> None:
    p = StreamParser()
    evs = events(
        p, HEADER, b"<message to='a@b'><body>hi</body></message>", b"<presence/></stream:stream>"
    )
    assert isinstance(evs[0], StreamHeader)
    assert evs[0].tag == f"{{{ns.STREAM}}}stream"
    assert evs[0].attrs["to"] == "example.com"
    assert evs[0].attrs["xmlns"] == "jabber:client"
    msg = evs[1]
    assert isinstance(msg, Element)
    assert msg.tag == "{jabber:client}message" and msg.get("to") == "a@b"
    assert msg.findtext("{jabber:client}body") == "hi"
    assert isinstance(evs[2], Element) and evs[2].tag == "{jabber:client}presence"
    assert evs[3] is None


def test_released_parser_is_made_again_in_the_same_namespace_context() -> None:
    p = StreamParser()
    header = (
        b"<?xml version='1.0'?><s:stream xmlns='jabber:client' xmlns:x='urn:example:x' "
        b"xmlns:s='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"
    )
    assert p.release()  # nothing read yet: nothing held
    assert isinstance(events(p, header)[0], StreamHeader)
    assert p.release()
    evs = events(p, b"<message><x:y/></message>  ")
    assert isinstance(evs[0], Element)
    assert evs[0].tag == "{jabber:client}message" and evs[0][0].tag == "{urn:example:x}y"
    assert p.release()
    # The end tag of the stream matches the root as the client wrote it.
    assert events(p, b"<presence/></s:stream>")[1] is None


def test_parser_is_kept_in_the_middle_of_something() -> None:
    p = StreamParser(max_stanza_size=200)
    events(p, HEADER)
    events(p, b"<message><body>hi")
    assert not p.release()  # inside a stanza
    events(p, b"</body></message><presence a='>")
    assert not p.release()  # inside a tag
    events(p, b"'/><message><body>\xc3")
    assert not p.release()
    evs = events(p, b"\xa9</body></message>")
    assert [e.findtext("{jabber:client}body") for e in evs if isinstance(e, Element)] == ["\u00e9"]
    assert p.release()
    # The size limit still counts from the last stanza's end.
    with pytest.raises(ParseError) as err:
        events(p, b"<message><body>" + b"a" * 300)
    assert err.value.condition == "policy-violation"


def test_text_at_stream_level_is_refused_after_a_release_too() -> None:
    p = StreamParser()
    events(p, HEADER, b"<presence/> ")
    assert p.release()
    with pytest.raises(ParseError) as err:
        events(p, b"<presence/>hello")
    assert err.value.condition == "bad-format"


def test_fed_one_byte_at_a_time() -> None:
    p = StreamParser()
    data = HEADER + "<message><body>héllo ☃ 𝄞</body></message>".encode()
    evs = events(p, *(data[i : i + 1] for i in range(len(data))))
    assert len(evs) == 2
    msg = evs[1]
    assert isinstance(msg, Element)
    assert msg.findtext("{jabber:client}body") == "héllo ☃ 𝄞"


def test_utf8_split_inside_a_character_in_an_attribute() -> None:
    p = StreamParser()
    events(p, HEADER)
    data = "<message to='π@example.com' id='☃'/>".encode()
    cut = data.index("☃".encode()) + 1
    assert events(p, data[:cut]) == []
    (msg,) = events(p, data[cut:])
    assert isinstance(msg, Element) and msg.get("id") == "☃" and msg.get("to") == "π@example.com"


def test_a_stanza_is_yielded_as_soon_as_it_is_complete() -> None:
    p = StreamParser()
    events(p, HEADER)
    assert events(p, b"<message><body>x</body>") == []
    assert len(events(p, b"</message>")) == 1


def test_predefined_entities_and_character_references() -> None:
    p = StreamParser()
    events(p, HEADER)
    (msg,) = events(p, b"<message><body>&lt;&amp;&gt;&quot;&apos;&#65;&#x263A;</body></message>")
    assert isinstance(msg, Element)
    assert msg.findtext("{jabber:client}body") == "<&>\"'A☺"


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<!DOCTYPE x>", "restricted-xml"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]>', "restricted-xml"),
        (b"<!-- c -->", "restricted-xml"),
        (b"<?pi x?>", "restricted-xml"),
    ],
)
def test_restricted_before_the_root(data: bytes, condition: str) -> None:
    p = StreamParser()
    with pytest.raises(ParseError) as err:
        events(p, b"<?xml version='1.0'?>" + data)
    assert err.value.condition == condition


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<message><!-- c --></message>", "restricted-xml"),
        (b"<message><?pi x?></message>", "restricted-xml"),
        (b"<message>&ent;</message>", "restricted-xml"),
        (b"<message><body></message>", "not-well-formed"),
        (b"<message a='1' a='2'/>", "not-well-formed"),
        (b"<message>\xff</message>", "not-well-formed"),
        (b"<message>\x00</message>", "not-well-formed"),
        (b"<x:message/>", "not-well-formed"),
        (b"hello", "bad-format"),
    ],
)
def test_restricted_or_broken_inside_the_stream(data: bytes, condition: str) -> None:
    p = StreamParser()
    events(p, HEADER)
    with pytest.raises(ParseError) as err:
        events(p, data)
    assert err.value.condition == condition


def test_stanza_size_limit_counts_bytes_since_the_last_stanza() -> None:
    p = StreamParser(max_stanza_size=1024)
    events(p, HEADER)
    for _ in range(10):  # many stanzas below the limit are fine
        events(p, b"<message><body>" + b"a" * 800 + b"</body></message>")
    with pytest.raises(ParseError) as err:
        events(p, b"<message><body>" + b"a" * 600)
        events(p, b"a" * 600)
    assert err.value.condition == "policy-violation"


def test_depth_limit() -> None:
    p = StreamParser(max_depth=10)
    events(p, HEADER)
    events(p, b"<a>" * 8 + b"</a>" * 8)
    p2 = StreamParser(max_depth=10)
    events(p2, HEADER)
    with pytest.raises(ParseError) as err:
        events(p2, b"<a>" * 20)
    assert err.value.condition == "policy-violation"


def test_data_after_stream_end() -> None:
    p = StreamParser()
    events(p, HEADER, b"</stream:stream>")
    assert events(p, b"  ") == []
    with pytest.raises(ParseError):
        events(p, b"<message/>")


def test_reset_starts_a_new_document() -> None:
    p = StreamParser()
    events(p, HEADER)
    p.reset()
    evs = events(p, HEADER, b"<iq/>")
    assert isinstance(evs[0], StreamHeader) and isinstance(evs[1], Element)


def test_frame_parsing() -> None:
    p = StreamParser(framed=True)
    el = p.feed_frame(b"<message xmlns='jabber:client'><body>x</body></message>")
    assert el.tag == "{jabber:client}message"
    with pytest.raises(ParseError):
        p.feed_frame(b"<a/><b/>")


def test_parse_element_reads_unqualified_stanzas_as_client() -> None:
    el = parse_element("<message to='x@y'><body>b</body></message>")
    assert el.tag == "{jabber:client}message"
    assert el.findtext("{jabber:client}body") == "b"


# --------------------------------------------------------------------------- serializer


def test_escaping() -> None:
    assert escape_text("<a&b>'\"") == "&lt;a&amp;b&gt;'\""
    assert escape_attr("<a&b>'\"\n") == "&lt;a&amp;b&gt;&apos;&quot;&#10;"
    msg = element(ns.CLIENT, "message", {"to": "a'b\"c<d>&"}, kids=[])
    SubElement(msg, "{jabber:client}body").text = "1 < 2 & 3 > 2 ]]>"
    text = serialize(msg)
    assert text == (
        '<message to="a&apos;b&quot;c&lt;d&gt;&amp;">'
        "<body>1 &lt; 2 &amp; 3 &gt; 2 ]]&gt;</body></message>"
    )
    assert parse_element(text).get("to") == "a'b\"c<d>&"


def test_namespaces_are_declared_only_when_they_change() -> None:
    iq = element(ns.CLIENT, "iq", {"type": "get"})
    q = SubElement(iq, "{jabber:iq:roster}query")
    SubElement(q, "{jabber:iq:roster}item", {"jid": "a@b"})
    assert serialize(iq) == (
        '<iq type="get"><query xmlns="jabber:iq:roster"><item jid="a@b"/></query></iq>'
    )
    assert serialize(iq, "").startswith('<iq xmlns="jabber:client"')


def test_prefixed_attributes_and_xml_lang() -> None:
    el = Element("{jabber:client}message", {f"{{{ns.XML}}}lang": "en", "{urn:x}attr": "v"})
    text = serialize(el)
    assert 'xml:lang="en"' in text
    assert 'xmlns:ns1="urn:x"' in text and 'ns1:attr="v"' in text
    back = parse_element(text)
    assert back.get("{urn:x}attr") == "v"
    assert back.get(f"{{{ns.XML}}}lang") == "en"


def test_stanza_crossing_stream_kinds_keeps_children_in_the_stream_namespace() -> None:
    msg = element(ns.CLIENT, "message", {"to": "gw.example"})
    SubElement(msg, "{jabber:client}body").text = "hi"
    SubElement(msg, "{urn:x}payload")
    text = serialize(msg, ns.COMPONENT)
    assert text == '<message to="gw.example"><body>hi</body><payload xmlns="urn:x"/></message>'
    # The other way: a component stanza becomes a client stanza with all its children.
    incoming = parse_element(text.replace("<message", "<message xmlns='jabber:component:accept'"))
    renamespace(incoming, ns.COMPONENT, ns.CLIENT)
    assert incoming.tag == "{jabber:client}message"
    assert incoming.findtext("{jabber:client}body") == "hi"
    assert serialize(incoming) == text


def test_inner_xml() -> None:
    el = parse_element("<message><body>a</body>tail<x xmlns='urn:y'/></message>")
    assert inner_xml(el) == '<body>a</body>tail<x xmlns="urn:y"/>'


XML_CHARS = st.characters(
    blacklist_categories=("Cs",),
    blacklist_characters="\x00\ufffe\uffff",
    min_codepoint=0x20,
)


@given(
    body=st.text(XML_CHARS, max_size=50),
    attr=st.text(XML_CHARS, max_size=20),
)
def test_round_trip(body: str, attr: str) -> None:
    msg = element(ns.CLIENT, "message", {"id": attr})
    SubElement(msg, "{jabber:client}body").text = body
    back = parse_element(serialize(msg))
    assert back.get("id") == attr
    assert (back.findtext("{jabber:client}body") or "") == body


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    p = StreamParser(max_stanza_size=4096, max_depth=16)
    events(p, HEADER)
    try:
        events(p, data)
    except ParseError as exc:
        assert exc.condition in ("not-well-formed", "restricted-xml", "policy-violation",
                                 "bad-format")  # fmt: skip
