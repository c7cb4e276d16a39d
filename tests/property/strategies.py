"""Hypothesis strategies for XML trees and streams as XMPP carries them."""

from __future__ import annotations

import functools
import itertools
import xml.etree.ElementTree as ET

from hypothesis import strategies as st

from minimix.protocol.xml import Element

# XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
xml_chars = st.one_of(
    st.sampled_from("\t\n\r"),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),  # weighted towards the common case
    st.characters(min_codepoint=0x20, max_codepoint=0xD7FF),
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFD),
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
)
xml_text = st.text(xml_chars, max_size=16)
# Markup-looking text: the characters that need escaping, often.
tricky_text = st.text(st.one_of(xml_chars, st.sampled_from("<>&'\"]]>\r\n\t")), max_size=16)

_NAME_START = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwyz_\u00e9\u4e2d"  # no x: no "xml"
ncname = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_NAME_START),
    st.text("abcxyz0189_.-\u00e9", max_size=7),
)
namespaces = st.one_of(
    st.sampled_from(
        [
            "jabber:client",
            "urn:xmpp:sm:3",
            "http://jabber.org/protocol/muc#user",
            "urn:example:a",
            "",
        ]
    ),
    # Any URI-ish text without the characters the parser refuses in namespace names.
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="{}<&'\""),
        min_size=1,
        max_size=20,
    ).map(lambda s: "urn:" + s),
)


@st.composite
def attribute_names(draw: st.DrawFn) -> str:
    name = draw(ncname)
    if draw(st.booleans()):
        return name
    uri = draw(namespaces.filter(bool))
    return f"{{{uri}}}{name}"


_attribute_lists = st.lists(attribute_names(), max_size=2, unique=True)


@st.composite
def _elements(draw: st.DrawFn, depth: int) -> Element:
    uri = draw(namespaces)
    name = draw(ncname)
    el = Element(f"{{{uri}}}{name}" if uri else name)
    for key in draw(_attribute_lists):
        el.set(key, draw(tricky_text))
    text = draw(tricky_text)
    el.text = text or None
    if depth > 0:
        for kid in draw(_children(depth - 1)):
            kid.tail = draw(tricky_text) or None
            el.append(kid)
    return el


@functools.cache
def _children(depth: int) -> st.SearchStrategy[list[Element]]:
    return st.lists(elements(depth), max_size=2)


@functools.cache
def elements(depth: int = 3) -> st.SearchStrategy[Element]:
    """Element trees up to ``depth`` levels below the root (strategies built once per depth)."""
    return _elements(depth)


def stanza(el: Element) -> Element:
    """``el`` as a top-level stanza child of a jabber:client stream (no tail)."""
    el.tail = None
    return el


def same_tree(a: ET.Element, b: ET.Element) -> bool:
    """Equal tag, attributes, text, tails and children (``None`` and ``""`` text are equal)."""
    if a.tag != b.tag or dict(a.attrib) != dict(b.attrib):
        return False
    if (a.text or "") != (b.text or "") or (a.tail or "") != (b.tail or ""):
        return False
    return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b, strict=True))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at the given positions (any order, duplicates fine)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[i:j] for i, j in itertools.pairwise(points)]
