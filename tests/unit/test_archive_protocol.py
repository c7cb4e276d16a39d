"""The XEP-0313 wire format: reading queries, writing results and <fin/>."""

from __future__ import annotations

import pytest

from minimix.extensions.archive.protocol import (
    form_fields,
    format_stamp,
    parse_query,
    parse_stamp,
    run_query,
    send_results,
)
from minimix.protocol import ns
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, parse_element, serialize
from minimix.storage.archive import ArchiveQuery, ArchiveStore
from minimix.storage.database import Database


def iq(inner: str, queryid: str | None = "q1") -> Element:
    qid = f" queryid='{queryid}'" if queryid else ""
    return parse_element(
        f"<iq type='set' id='x' from='alice@example.org/phone' to='alice@example.org'>"
        f"<query xmlns='urn:xmpp:mam:2'{qid}>{inner}</query></iq>"
    )


def form(**fields: str | list[str]) -> str:
    out = "<x xmlns='jabber:x:data' type='submit'>"
    out += "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>"
    for k, v in fields.items():
        vals = v if isinstance(v, list) else [v]
        out += f"<field var='{k.rstrip('_').replace('_', '-')}'>"
        out += "".join(f"<value>{x}</value>" for x in vals)
        out += "</field>"
    return out + "</x>"


def test_stamps_roundtrip() -> None:
    assert parse_stamp("2010-07-10T23:08:25Z") == 1278803305.0
    assert format_stamp(1278803305.0) == "2010-07-10T23:08:25Z"
    assert parse_stamp(format_stamp(1278803305.25)) == 1278803305.25
    assert parse_stamp("2010-07-11T01:08:25+02:00") == 1278803305.0


def test_parse_full_query() -> None:
    el = iq(
        form(
            with_="bob@example.org",
            start="2010-07-10T23:08:25Z",
            end="2010-07-10T23:09:25Z",
            after_id="a",
            before_id="b",
            ids=["i1", "i2"],
            include_groupchat="true",
        )
        + "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set><flip-page/>"
    )
    q, qid = parse_query(el, 50)
    assert qid == "q1"
    assert q.with_jid == "bob@example.org"
    assert q.start == 1278803305.0 and q.end == 1278803365.0
    assert (q.after_id, q.before_id, q.ids) == ("a", "b", ["i1", "i2"])
    assert q.include_groupchat and q.flip
    assert q.max == 10 and q.before == "" and q.after is None


def test_page_size_is_capped_and_defaults() -> None:
    q, qid = parse_query(iq("", None), 25)
    assert q.max == 25 and qid is None
    q, _ = parse_query(iq("<set xmlns='http://jabber.org/protocol/rsm'><max>999</max></set>"), 25)
    assert q.max == 25


def test_groupchat_default_for_user_archives() -> None:
    q, _ = parse_query(iq(""), 50, groupchat_by_default=False)
    assert not q.include_groupchat
    q, _ = parse_query(
        iq(form(with_="room@conference.example.org")), 50, groupchat_by_default=False
    )
    assert q.include_groupchat
    q, _ = parse_query(iq(form(include_groupchat="1")), 50, groupchat_by_default=False)
    assert q.include_groupchat
    q, _ = parse_query(iq(""), 50)
    assert q.include_groupchat


@pytest.mark.parametrize(
    ("inner", "condition"),
    [
        (form(unknown="x"), "feature-not-implemented"),
        (form(start="yesterday"), "bad-request"),
        (form(with_="@@"), "jid-malformed"),
        (form(include_groupchat="maybe"), "bad-request"),
        ("<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>", "bad-request"),
        (
            "<set xmlns='http://jabber.org/protocol/rsm'><index>3</index></set>",
            "feature-not-implemented",
        ),
    ],
)
def test_bad_queries(inner: str, condition: str) -> None:
    with pytest.raises(StanzaError) as err:
        parse_query(iq(inner), 50)
    assert err.value.condition == condition


def test_extra_fields_are_accepted_when_declared() -> None:
    parse_query(iq(form(**{"{urn:example}search": "x"})), 50, extra_fields=("{urn:example}search",))


async def test_send_results_and_fin() -> None:
    store = ArchiveStore(Database(":memory:"))
    a = "alice@example.org"
    for i in range(3):
        store.append(
            a, "bob@example.org", f"<message type='chat'><body>m{i}</body></message>", "chat"
        )
    page = run_query(store, a, ArchiveQuery(max=2))
    sent: list[Element] = []
    fin = await send_results(sent.append, iq(""), page, a, "q1")
    assert [s.find(f"{{{ns.MAM}}}result").get("id") for s in sent] == [m.id for m in page.items]  # type: ignore[union-attr]
    first = sent[0]
    assert first.get("to") == "alice@example.org/phone" and first.get("from") == a
    text = serialize(first)
    assert 'queryid="q1"' in text and "<body>m0</body>" in text and "urn:xmpp:delay" in text
    assert fin.get("complete") is None
    assert fin.findtext(f"{{{ns.RSM}}}set/{{{ns.RSM}}}count") == "3"
    assert fin.findtext(f"{{{ns.RSM}}}set/{{{ns.RSM}}}first") == page.items[0].id
    assert fin.findtext(f"{{{ns.RSM}}}set/{{{ns.RSM}}}last") == page.items[1].id

    flipped: list[Element] = []

    async def send_async(el: Element) -> None:
        flipped.append(el)

    await send_results(send_async, iq("<flip-page/>"), page, a, None)
    assert [s.find(f"{{{ns.MAM}}}result").get("id") for s in flipped] == [  # type: ignore[union-attr]
        m.id for m in reversed(page.items)
    ]


def test_unknown_id_is_item_not_found() -> None:
    store = ArchiveStore(Database(":memory:"))
    with pytest.raises(StanzaError) as err:
        run_query(store, "a@b", ArchiveQuery(after="missing"))
    assert err.value.condition == "item-not-found"


def test_form_lists_the_fields() -> None:
    x = form_fields(["{urn:example}search"])
    vars_ = [f.get("var") for f in x.findall("{jabber:x:data}field")]
    assert vars_ == [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "before-id",
        "after-id",
        "ids",
        "include-groupchat",
        "{urn:example}search",
    ]
