"""Stanza helpers: replies, error replies, stream errors, shallow copies."""

from __future__ import annotations

from minimix.protocol import ns
from minimix.protocol.stanza import (
    StanzaError,
    StreamError,
    body_text,
    copy_shallow,
    error_reply,
    iq_result,
    jid_from,
    jid_to,
    kind,
    make,
    new_id,
    stanza_type,
)
from minimix.protocol.xml import SubElement, element, parse_element, serialize


def test_error_reply_swaps_addresses_and_keeps_the_payload() -> None:
    iq = parse_element(
        "<iq type='get' id='1' from='a@x/r' to='b@x'><query xmlns='urn:q'/><extra/></iq>"
    )
    reply = error_reply(iq, StanzaError("item-not-found", "nothing here"))
    assert reply.attrib == {"id": "1", "type": "error", "to": "a@x/r", "from": "b@x"}
    assert [c.tag for c in reply] == ["{urn:q}query", "{jabber:client}error"]
    err = reply[1]
    assert err.get("type") == "cancel"
    assert err[0].tag == f"{{{ns.STANZAS}}}item-not-found"
    assert err.findtext(f"{{{ns.STANZAS}}}text") == "nothing here"


def test_error_reply_for_a_message_keeps_its_children() -> None:
    msg = parse_element("<message from='a@x/r' to='b@x' id='m'><body>hi</body></message>")
    reply = error_reply(msg, StanzaError("service-unavailable"))
    assert reply.findtext("{jabber:client}body") == "hi"
    assert StanzaError.from_stanza(reply) is not None


def test_error_types_follow_rfc_6120() -> None:
    expected = {
        "bad-request": "modify",
        "forbidden": "auth",
        "not-authorized": "auth",
        "resource-constraint": "wait",
        "service-unavailable": "cancel",
        "jid-malformed": "modify",
    }
    for condition, etype in expected.items():
        assert StanzaError(condition).type == etype
    assert StanzaError("conflict", error_type="wait").type == "wait"


def test_error_round_trip_with_application_condition() -> None:
    app = element(ns.BLOCKING_ERRORS, "blocked")
    err = StanzaError("not-acceptable", "blocked", app_error=app, by="x")
    stanza = make("message", to="a@x", from_="b@x", type_="error")
    stanza.append(err.to_element())
    back = StanzaError.from_stanza(parse_element(serialize(stanza)))
    assert back is not None
    assert (back.condition, back.text, back.type, back.by) == (
        "not-acceptable",
        "blocked",
        "modify",
        "x",
    )
    assert back.app_error is not None and back.app_error.tag == f"{{{ns.BLOCKING_ERRORS}}}blocked"
    assert StanzaError.from_stanza(make("message")) is None


def test_stream_error_element() -> None:
    el = StreamError("host-unknown", "not here").to_element()
    assert el.tag == f"{{{ns.STREAM}}}error"
    assert el[0].tag == f"{{{ns.STREAMS}}}host-unknown"
    assert el[1].text == "not here"


def test_iq_result() -> None:
    iq = parse_element(
        "<iq type='get' id='7' from='a@x/r' to='x'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    r = iq_result(iq)
    assert r.attrib == {"type": "result", "id": "7", "to": "a@x/r", "from": "x"} and len(r) == 0
    payload = element("urn:q", "query")
    assert iq_result(iq, payload)[0] is payload


def test_stanza_type_defaults_and_kind() -> None:
    assert stanza_type(parse_element("<message/>")) == "normal"
    assert stanza_type(parse_element("<presence/>")) == "available"
    assert stanza_type(parse_element("<presence type='probe'/>")) == "probe"
    assert stanza_type(parse_element("<iq/>")) == ""
    assert kind(parse_element("<iq/>")) == "iq"


def test_addresses_and_body() -> None:
    m = parse_element("<message to='A@X' from='bad@@'><body>b</body></message>")
    assert str(jid_to(m)) == "a@x"
    assert jid_from(m) is None
    assert body_text(m) == "b"
    assert body_text(parse_element("<message/>")) is None


def test_copy_shallow_shares_children_and_never_edits_the_original() -> None:
    m = make("message", to="a@x", from_="b@x/r", id_="1")
    body = SubElement(m, "{jabber:client}body")
    body.text = "x"
    c = copy_shallow(m, to="c@x", id_=None, type="chat")
    assert c.attrib == {"to": "c@x", "from": "b@x/r", "type": "chat"}
    assert c[0] is body
    assert m.attrib == {"to": "a@x", "from": "b@x/r", "id": "1"}


def test_new_ids_are_unique() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
