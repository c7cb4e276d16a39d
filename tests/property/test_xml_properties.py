"""Properties of the XML layer: serialize-then-parse is the identity (for our parser and an
independent one), escaping is exact, any split of a stream yields the same stanzas, limits hold
for any split, and no input makes the parser raise anything but ParseError."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimix.protocol.xml import (
    Element,
    ParseError,
    StreamParser,
    escape_attr,
    escape_text,
    parse_element,
    serialize,
)
from minimix.stream.machine import ElementReceived, ProtocolViolation, XmppStream
from tests.property.strategies import (
    chunked,
    elements,
    same_tree,
    stanza,
    tricky_text,
    xml_text,
)

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed_all(parser: StreamParser, chunks: list[bytes]) -> list[Element]:
    out: list[Element] = []
    for chunk in chunks:
        out += [ev for ev in parser.feed(chunk) if isinstance(ev, Element)]
    return out


@FAST
@given(elements())
def test_serialize_then_parse_is_identity(el: Element) -> None:
    el = stanza(el)
    text = serialize(el)
    assert same_tree(parse_element(text), el)
    # An independent parser (the standard library's) reads exactly the same tree: what the
    # server writes means the same thing to every recipient.
    wrapped = ET.fromstring(f"<s xmlns='jabber:client'>{text}</s>")
    assert len(wrapped) == 1
    assert same_tree(wrapped[0], el)


@FAST
@given(tricky_text)
def test_escaping_is_exact(s: str) -> None:
    doc = f"<a x=\"{escape_attr(s)}\" y='{escape_attr(s)}'>{escape_text(s)}</a>"
    parsed = ET.fromstring(doc)
    assert parsed.get("x") == s
    assert parsed.get("y") == s
    assert (parsed.text or "") == s
    assert "<" not in escape_text(s) and "<" not in escape_attr(s)
    assert '"' not in escape_attr(s) and "'" not in escape_attr(s)


@FAST
@given(st.lists(elements(depth=2), min_size=1, max_size=4), st.lists(st.integers(0, 10**6)))
def test_any_split_yields_the_same_stanzas(els: list[Element], cuts: list[int]) -> None:
    body = "\n ".join(serialize(stanza(e)) for e in els).encode()
    whole = feed_all(StreamParser(), [HEADER + body])
    assert len(whole) == len(els)
    # Any split, including inside multi-byte UTF-8 sequences and inside tags.
    pieces = feed_all(StreamParser(), chunked(HEADER + body, cuts))
    assert len(pieces) == len(els)
    for x, y, z in zip(whole, pieces, els, strict=True):
        assert same_tree(x, z) and same_tree(y, z)


def feed_releasing(parser: StreamParser, chunks: list[bytes]) -> list[Element]:
    """Like feed_all, but the parser is offered a release after every chunk."""
    out: list[Element] = []
    for chunk in chunks:
        out += [ev for ev in parser.feed(chunk) if isinstance(ev, Element)]
        parser.release()
    return out


@FAST
@given(st.lists(elements(depth=2), min_size=1, max_size=4), st.lists(st.integers(0, 10**6)))
def test_releasing_the_parser_between_chunks_changes_nothing(
    els: list[Element], cuts: list[int]
) -> None:
    body = "\n ".join(serialize(stanza(e)) for e in els).encode()
    parser = StreamParser()
    pieces = feed_releasing(parser, chunked(HEADER + body, cuts))
    assert len(pieces) == len(els)
    for y, z in zip(pieces, els, strict=True):
        assert same_tree(y, z)
    assert list(parser.feed(b"</stream:stream>")) == [None]


@FAST
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=5))
def test_releasing_the_parser_refuses_the_same_bytes(data: bytes, cuts: list[int]) -> None:
    """Bad input is refused with the same condition whether or not the parser was released."""

    def outcome(release: bool) -> tuple[list[str], str | None]:
        parser = StreamParser(max_stanza_size=1024, max_depth=16)
        got: list[str] = []
        try:
            for chunk in chunked(HEADER + data, cuts):
                got += [serialize(ev) for ev in parser.feed(chunk) if isinstance(ev, Element)]
                if release:
                    parser.release()
        except ParseError as exc:
            return got, exc.condition
        return got, None

    assert outcome(True) == outcome(False)


@FAST
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=5), st.booleans())
def test_arbitrary_bytes_never_crash_the_parser(data: bytes, cuts: list[int], head: bool) -> None:
    parser = StreamParser(max_stanza_size=1024, max_depth=16)
    try:
        for chunk in chunked((HEADER if head else b"") + data, cuts):
            for ev in parser.feed(chunk):
                if isinstance(ev, Element):
                    serialize(ev)
    except ParseError as exc:
        assert exc.condition in {
            "not-well-formed",
            "restricted-xml",
            "policy-violation",
            "bad-format",
        }


@FAST
@given(st.binary(max_size=300), st.lists(st.integers(0, 1000), max_size=4))
def test_the_stream_machine_turns_any_bytes_into_events(data: bytes, cuts: list[int]) -> None:
    """The sans-I/O stream never raises: bad input becomes one ProtocolViolation event."""
    stream = XmppStream(max_stanza_size=1024, max_depth=16)
    events = []
    for chunk in chunked(HEADER + data, cuts):
        events += stream.receive(chunk)
    violations = [e for e in events if isinstance(e, ProtocolViolation)]
    assert len(violations) <= 1
    if violations:
        assert events[-1] is violations[0]
        assert stream.closed
        assert b"<stream:error>" in stream.data_to_send()
    for e in events:
        if isinstance(e, ElementReceived):
            assert same_tree(parse_element(stream.serialize(e.element)), e.element)


@FAST
@given(st.integers(0, 3000), st.lists(st.integers(0, 4000), max_size=6))
def test_size_limit_holds_for_any_split(size: int, cuts: list[int]) -> None:
    limit = 1024
    msg = f"<message to='a@b'><body>{'x' * size}</body></message>".encode()
    parser = StreamParser(max_stanza_size=limit)
    list(parser.feed(HEADER))  # the size is counted from the stanza on
    try:
        got = feed_all(parser, chunked(msg, cuts))
    except ParseError as exc:
        assert exc.condition == "policy-violation"
        assert len(msg) > limit
        return
    assert len(got) == 1
    assert len(msg) <= limit + len(b"</message>")


@FAST
@given(st.integers(1, 40))
def test_depth_limit_is_enforced(depth: int) -> None:
    limit = 16
    data = HEADER + b"<message>" + b"<x xmlns='urn:x'>" * depth + b"</x>" * depth + b"</message>"
    parser = StreamParser(max_depth=limit)
    try:
        got = feed_all(parser, [data])
    except ParseError as exc:
        assert exc.condition == "policy-violation"
        assert depth + 2 > limit  # the stream root and the stanza count too
        return
    assert len(got) == 1
    assert depth + 2 <= limit


@FAST
@given(
    elements(depth=2),
    st.sampled_from(
        ["<!-- c -->", "<?pi x?>", "<!DOCTYPE x>", "&ent;", "<!ENTITY e 'x'>", "\x00", "\x0b"]
    ),
    st.integers(0, 10**6),
)
def test_restricted_markup_never_reaches_a_stanza(el: Element, bad: str, at: int) -> None:
    """Forbidden markup anywhere inside a stanza fails the stream; it is never part of one."""
    text = serialize(stanza(el))
    gaps = [i + 1 for i, ch in enumerate(text) if ch == ">"][:-1]  # between markup
    if not gaps:
        return
    spot = gaps[at % len(gaps)]
    data = HEADER + (text[:spot] + bad + text[spot:]).encode()
    parser = StreamParser()
    try:
        feed_all(parser, [data])
    except ParseError as exc:
        assert exc.condition in ("restricted-xml", "not-well-formed")
        return
    raise AssertionError(f"accepted {bad!r} inside {text!r}")


@FAST
@given(xml_text)
def test_cdata_is_text(s: str) -> None:
    if "]]>" in s:
        return
    el = parse_element(f"<message><body><![CDATA[{s}]]></body></message>")
    # Line ends are normalized inside CDATA like anywhere else (XML 1.0 §2.11).
    assert el.findtext("{jabber:client}body") == s.replace("\r\n", "\n").replace("\r", "\n")
