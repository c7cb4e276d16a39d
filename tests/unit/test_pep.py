"""PEP pieces without a network: caps hashing, node options, the pubsub store."""

from __future__ import annotations

import pytest

from minimix.extensions.pep import DEFAULT_CONFIG, caps_ver, config_form, parse_option, read_form
from minimix.protocol import ns
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import parse_element
from minimix.storage.database import Database
from minimix.storage.pubsub import PubsubStore

DISCO = "http://jabber.org/protocol/disco#info"


def test_caps_ver_simple_example() -> None:
    info = parse_element(
        f"<query xmlns='{DISCO}'>"
        "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
        "<feature var='http://jabber.org/protocol/caps'/>"
        "<feature var='http://jabber.org/protocol/disco#info'/>"
        "<feature var='http://jabber.org/protocol/disco#items'/>"
        "<feature var='http://jabber.org/protocol/muc'/></query>"
    )
    assert caps_ver(info) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_caps_ver_complex_example() -> None:
    space = " "  # the published hash was computed with a plain space
    info = parse_element(
        f"<query xmlns='{DISCO}'>"
        f"<identity xml:lang='en' category='client' name='Psi{space}0.11' type='pc'/>"
        f"<identity xml:lang='el' category='client' name='\u03a8{space}0.11' type='pc'/>"
        "<feature var='http://jabber.org/protocol/caps'/>"
        "<feature var='http://jabber.org/protocol/disco#info'/>"
        "<feature var='http://jabber.org/protocol/disco#items'/>"
        "<feature var='http://jabber.org/protocol/muc'/>"
        "<x xmlns='jabber:x:data' type='result'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value>"
        "</field><field var='ip_version' type='text-multi'><value>ipv4</value>"
        "<value>ipv6</value></field><field var='os'><value>Mac</value></field>"
        "<field var='os_version'><value>10.5.1</value></field>"
        "<field var='software'><value>Psi</value></field>"
        "<field var='software_version'><value>0.11</value></field></x></query>"
    )
    assert caps_ver(info) == "q07IKJEyjvHSyhy//CH0CxmKi8w="
    with pytest.raises(ValueError):
        caps_ver(info, "md5")


def test_options_parse_and_refuse() -> None:
    assert parse_option("max_items", "max") is None
    assert parse_option("max_items", "10") == 10
    assert parse_option("persist_items", "1") is True
    assert parse_option("access_model", "whitelist") == "whitelist"
    for key, bad in (("access_model", "authorize"), ("max_items", "-1"), ("persist_items", "x")):
        with pytest.raises(StanzaError) as err:
            parse_option(key, bad)
        assert err.value.condition == "not-acceptable"


def test_publish_options_form() -> None:
    x = parse_element(
        "<x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{ns.PUBSUB_PUBLISH_OPTIONS}</value></field>"
        "<field var='pubsub#access_model'><value>whitelist</value></field>"
        "<field var='pubsub#max_items'><value>max</value></field>"
        "<field var='pubsub#unknown'><value>x</value></field></x>"
    )
    assert read_form(x, ns.PUBSUB_PUBLISH_OPTIONS) == {
        "access_model": "whitelist",
        "max_items": None,
    }
    with pytest.raises(StanzaError):
        read_form(x, ns.PUBSUB_NODE_CONFIG)
    form = config_form(DEFAULT_CONFIG)
    assert read_form(
        parse_element(
            serialize_submit(form),
        ),
        ns.PUBSUB_NODE_CONFIG,
    ) == {k: v for k, v in DEFAULT_CONFIG.items()}


def serialize_submit(form: object) -> str:
    from minimix.protocol.xml import Element, serialize

    assert isinstance(form, Element)
    form.set("type", "submit")
    return serialize(form, "")


def test_store_publish_replace_evict_and_items() -> None:
    store = PubsubStore(Database(":memory:"))
    assert store.create_node("a@x", "n", {"max_items": 2})
    assert not store.create_node("a@x", "n", {})
    assert store.publish("a@x", "n", "1", "<p/>", "a@x", 2) == []
    assert store.publish("a@x", "n", "2", "<p/>", "a@x", 2) == []
    assert store.publish("a@x", "n", "1", "<q/>", "a@x", 2) == []  # replaced, now newest
    assert [i.id for i in store.items("a@x", "n")] == ["2", "1"]
    assert store.publish("a@x", "n", "3", "<p/>", "a@x", 2) == ["2"]
    assert [i.id for i in store.items("a@x", "n")] == ["1", "3"]
    assert [i.id for i in store.items("a@x", "n", max_items=1)] == ["3"]
    assert [i.id for i in store.items("a@x", "n", ids=["1"])] == ["1"]
    last = store.last_item("a@x", "n")
    assert last is not None and last.id == "3"
    assert store.retract("a@x", "n", "3") and not store.retract("a@x", "n", "3")
    assert store.purge("a@x", "n") == ["1"]
    store.set_affiliation("a@x", "n", "b@x", "member")
    assert store.affiliations("a@x", "n") == {"b@x": "member"}
    store.subscribe("a@x", "n", "b@x/r")
    assert store.subscribers("a@x", "n") == ["b@x/r"]
    assert store.subscriptions_of("a@x", "b@x/r") == ["n"]
    assert store.delete_node("a@x", "n")
    assert store.node_config("a@x", "n") is None
    assert store.affiliations("a@x", "n") == {} and store.subscribers("a@x", "n") == []
