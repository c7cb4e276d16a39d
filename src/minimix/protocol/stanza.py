"""Stanza helpers: addressing, replies and error replies (RFC 6120 §8), stream errors (§4.9)."""

from __future__ import annotations

import itertools
import os

from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.xml import Element, SubElement, local_name, tag

MESSAGE = tag(ns.CLIENT, "message")
PRESENCE = tag(ns.CLIENT, "presence")
IQ = tag(ns.CLIENT, "iq")
STANZA_TAGS = frozenset((MESSAGE, PRESENCE, IQ))

_ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

_counter = itertools.count(1)
_prefix = os.urandom(4).hex()


def new_id() -> str:
    """A short id unique within this process, for stanzas the server originates."""
    return f"{_prefix}{next(_counter):x}"


class StanzaError(Exception):
    """A stanza-level error (RFC 6120 §8.3). Raise it from a handler to refuse a stanza."""

    def __init__(
        self,
        condition: str,
        text: str | None = None,
        error_type: str | None = None,
        app_error: Element | None = None,
        by: str | None = None,
    ) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = error_type or _ERROR_TYPES.get(condition, "cancel")
        self.app_error = app_error
        self.by = by

    def to_element(self) -> Element:
        err = Element("{jabber:client}error", {"type": self.type})
        if self.by:
            err.set("by", self.by)
        SubElement(err, tag(ns.STANZAS, self.condition))
        if self.text:
            t = SubElement(err, tag(ns.STANZAS, "text"))
            t.text = self.text
        if self.app_error is not None:
            err.append(self.app_error)
        return err

    @staticmethod
    def from_stanza(stanza: Element) -> StanzaError | None:
        err = stanza.find("{jabber:client}error")
        if err is None:
            return None
        condition = "undefined-condition"
        text = None
        app = None
        for c in err:
            if c.tag.startswith("{" + ns.STANZAS + "}"):
                name = local_name(c)
                if name == "text":
                    text = c.text
                else:
                    condition = name
            else:
                app = c
        return StanzaError(condition, text, err.get("type"), app, err.get("by"))


class StreamError(Exception):
    """A stream-level error (RFC 6120 §4.9): the stream is closed after sending it."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text

    def to_element(self) -> Element:
        err = Element(tag(ns.STREAM, "error"))
        SubElement(err, tag(ns.STREAMS, self.condition))
        if self.text:
            t = SubElement(err, tag(ns.STREAMS, "text"))
            t.text = self.text
        return err


def kind(stanza: Element) -> str:
    """``message``, ``presence`` or ``iq`` (the local name of a stanza)."""
    return local_name(stanza)


def stanza_type(stanza: Element) -> str:
    """The type attribute with RFC 6121 defaults (``normal`` for messages, ``available``)."""
    t = stanza.get("type")
    if t:
        return t
    k = local_name(stanza)
    return "normal" if k == "message" else "available" if k == "presence" else ""


def jid_to(stanza: Element) -> JID | None:
    return try_parse(stanza.get("to"))


def jid_from(stanza: Element) -> JID | None:
    return try_parse(stanza.get("from"))


def make(
    name: str,
    to: JID | str | None = None,
    from_: JID | str | None = None,
    type_: str | None = None,
    id_: str | None = None,
) -> Element:
    attrs: dict[str, str] = {}
    if to is not None:
        attrs["to"] = str(to)
    if from_ is not None:
        attrs["from"] = str(from_)
    if type_ is not None:
        attrs["type"] = type_
    if id_ is not None:
        attrs["id"] = id_
    return Element(f"{{jabber:client}}{name}", attrs)


def iq_result(iq: Element, payload: Element | None = None) -> Element:
    """The result for ``iq``, addressed back to its sender."""
    attrs = {"type": "result"}
    if "id" in iq.attrib:
        attrs["id"] = iq.attrib["id"]
    if "from" in iq.attrib:
        attrs["to"] = iq.attrib["from"]
    if "to" in iq.attrib:
        attrs["from"] = iq.attrib["to"]
    reply = Element(IQ, attrs)
    if payload is not None:
        reply.append(payload)
    return reply


def error_reply(stanza: Element, error: StanzaError) -> Element:
    """The error reply to ``stanza`` (RFC 6120 §8.3.1): addresses swapped, payload for iq kept."""
    attrs = {k: v for k, v in stanza.attrib.items() if k not in ("to", "from", "type")}
    attrs["type"] = "error"
    if "from" in stanza.attrib:
        attrs["to"] = stanza.attrib["from"]
    if "to" in stanza.attrib:
        attrs["from"] = stanza.attrib["to"]
    reply = Element(stanza.tag, attrs)
    if local_name(stanza) != "iq":
        for c in stanza:
            if c.tag != "{jabber:client}error":
                reply.append(c)
    else:
        first = next(iter(stanza), None)
        if first is not None and first.tag != "{jabber:client}error":
            reply.append(first)
    reply.append(error.to_element())
    return reply


def body_text(stanza: Element) -> str | None:
    b = stanza.find("{jabber:client}body")
    return None if b is None else (b.text or "")


def copy_shallow(stanza: Element, **attrs: str | None) -> Element:
    """A new top-level element sharing ``stanza``'s children, with attributes changed.

    Children are shared, not copied: callers must not edit them. ``None`` removes an attribute.
    """
    new_attrs = dict(stanza.attrib)
    for k, v in attrs.items():
        key = k.rstrip("_")
        if v is None:
            new_attrs.pop(key, None)
        else:
            new_attrs[key] = v
    out = Element(stanza.tag, new_attrs)
    out.text = stanza.text
    out.extend(list(stanza))
    return out
