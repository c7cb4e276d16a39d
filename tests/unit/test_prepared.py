"""Serialize once, splice the recipient: ``serialize_split`` and ``Prepared``."""

from __future__ import annotations

from minimix.core.session import Prepared
from minimix.protocol import ns
from minimix.protocol.stanza import copy_shallow
from minimix.protocol.xml import (
    Element,
    SubElement,
    parse_element,
    serialize,
    serialize_content,
    serialize_split,
)


def groupchat(body: str, to: str = "a@example.org") -> Element:
    m = Element(
        "{jabber:client}message",
        {"to": to, "from": "room@muc.example.org/nick", "type": "groupchat", "id": "x&'1"},
    )
    SubElement(m, "{jabber:client}body").text = body
    SubElement(m, f"{{{ns.SID}}}stanza-id", {"id": "s1", "by": "room@muc.example.org"})
    return m


def test_split_parts_rebuild_the_element_with_the_attribute_spliced() -> None:
    m = groupchat("<hi> & bye")
    name, attrs, rest = serialize_split(m, omit="to")
    assert name == "<message"
    assert "to=" not in attrs
    spliced = f'{name} to="b@example.org"{attrs}{rest}'
    expected = serialize(copy_shallow(m, to="b@example.org"))
    assert parse_element(spliced).attrib == parse_element(expected).attrib
    assert serialize(parse_element(spliced)) == spliced
    assert rest == ">" + serialize_content(m) + "</message>"


def test_split_of_an_empty_element_closes_it() -> None:
    p = Element("{jabber:client}presence", {"to": "a@example.org", "type": "unavailable"})
    name, attrs, rest = serialize_split(p, omit="to")
    assert (name, attrs, rest) == ("<presence", ' type="unavailable"', "/>")


def test_split_of_a_component_stanza_is_written_in_the_client_namespace() -> None:
    m = parse_element(
        "<message xmlns='jabber:component:accept' to='a@x' from='b@y'><body>hi</body></message>"
    )
    name, attrs, rest = serialize_split(m, omit="to")
    assert f"{name}{attrs}{rest}" == serialize(copy_shallow(m, to=None))
    assert "jabber:component:accept" not in attrs + rest


def test_prepared_copies_sharing_children_reuse_one_serialization() -> None:
    m = groupchat("shared")
    first = Prepared(copy_shallow(m, to="a@example.org"))
    second = Prepared(copy_shallow(m, to="b@example.org"))
    for p, to in ((first, "c@example.org/1"), (second, "d@example.org/2")):
        text = p.for_recipient(to)
        el = parse_element(text)
        assert el.get("to") == to
        assert el.findtext("{jabber:client}body") == "shared"
        assert el.get("id") == "x&'1"


def test_prepared_with_other_children_or_attributes_is_not_stale() -> None:
    Prepared(groupchat("one"))
    other = groupchat("two")
    assert (
        parse_element(Prepared(other).for_recipient("a@b")).findtext("{jabber:client}body") == "two"
    )
    # Same children, another sender: the start tag is always written afresh.
    moved = copy_shallow(other, from_="room@muc.example.org/else")
    assert parse_element(Prepared(moved).for_recipient("a@b")).get("from") == (
        "room@muc.example.org/else"
    )
    # One more child (an archive's stanza-id): not the same children.
    extended = copy_shallow(other)
    SubElement(extended, f"{{{ns.SID}}}stanza-id", {"id": "mine", "by": "a@b"})
    ids = [
        s.get("id")
        for s in parse_element(Prepared(extended).for_recipient("a@b")).findall(
            f"{{{ns.SID}}}stanza-id"
        )
    ]
    assert ids == ["s1", "mine"]


def test_prepared_framed_declares_the_namespace() -> None:
    text = Prepared(groupchat("ws")).for_recipient("a@b/c", framed=True)
    assert text.startswith('<message xmlns="jabber:client" to="a@b/c" ')
    assert parse_element(text).get("to") == "a@b/c"


def test_prepared_copies_differing_in_their_last_child_each_get_their_own() -> None:
    m = groupchat("archived")
    texts = []
    for n in range(3):
        copy = copy_shallow(m, to=f"u{n}@example.org")
        SubElement(copy, f"{{{ns.SID}}}stanza-id", {"id": f"own{n}", "by": f"u{n}@example.org"})
        texts.append(Prepared(copy).for_recipient(f"u{n}@example.org/d"))
    for n, text in enumerate(texts):
        el = parse_element(text)
        assert [s.get("id") for s in el.findall(f"{{{ns.SID}}}stanza-id")] == ["s1", f"own{n}"]
        assert el.findtext("{jabber:client}body") == "archived"
        assert serialize(el) == text
