"""The fuzz target for the XMPP stream parser, shared by the atheris entry point and the tests.

:func:`check` feeds one input to a fresh :class:`~minimix.stream.machine.XmppStream`, cut into
reads of a size chosen by the input's first byte, once as it is and once after a valid stream
header (so inputs without a header still reach stanza parsing). It fails (raises) when:

- ``receive`` raises anything at all: bad input must become one ``ProtocolViolation`` event;
- more than one violation is reported, or events follow it;
- a parsed stanza, written out again by the server, does not parse back to the same tree, or
  the standard library's parser reads that output differently (a parser differential: what the
  server routes must mean the same thing to every recipient).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from minimix.protocol import ns
from minimix.protocol.xml import Element, parse_element
from minimix.stream.machine import ElementReceived, ProtocolViolation, XmppStream

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
_RENAMED = (f"{{{ns.SERVER}}}", f"{{{ns.COMPONENT}}}")


def same_tree(a: Element, b: Element) -> bool:
    if a.tag != b.tag or dict(a.attrib) != dict(b.attrib):
        return False
    if (a.text or "") != (b.text or "") or (a.tail or "") != (b.tail or ""):
        return False
    return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b, strict=True))


def _expected(el: Element) -> Element:
    """Top-level stanzas of the server and component namespaces are written in the client's."""
    if el.tag.startswith(_RENAMED):
        out = Element(f"{{{ns.CLIENT}}}{el.tag.split('}', 1)[1]}", el.attrib)
        out.text = el.text
        out.extend(list(el))
        return out
    return el


def run(data: bytes, step: int) -> None:
    stream = XmppStream(max_stanza_size=4096, max_depth=16)
    events = []
    for i in range(0, len(data), step):
        events += stream.receive(data[i : i + step])
    violations = [i for i, e in enumerate(events) if isinstance(e, ProtocolViolation)]
    if violations:
        assert violations == [len(events) - 1], "events after a protocol violation"
        assert stream.closed
    for ev in events:
        if not isinstance(ev, ElementReceived):
            continue
        el = ev.element
        el.tail = None
        text = stream.serialize(el)
        again = parse_element(text)
        assert same_tree(again, _expected(el)), f"round trip changed {text!r}"
        independent = ET.fromstring(f"<s xmlns='jabber:client'>{text}</s>")
        assert len(independent) == 1 and same_tree(independent[0], again), (
            f"the standard library reads {text!r} differently"
        )


def check(data: bytes) -> None:
    """One fuzz input (see the module docstring)."""
    if not data:
        return
    step = data[0] % 97 + 1
    body = data[1:]
    run(body, step)
    if not body.startswith(b"<?xml") and not body.startswith(b"<stream"):
        run(HEADER + body, step)
