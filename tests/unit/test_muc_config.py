"""Room configuration forms, discussion history selection, and the room store."""

from __future__ import annotations

import pytest

from minimix.extensions.muc.config import RoomConfig, apply_form, config_form, form_values
from minimix.extensions.muc.history import (
    History,
    HistoryEntry,
    HistoryRequest,
    format_datetime,
    parse_datetime,
    select,
)
from minimix.protocol import ns
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, parse_element
from minimix.storage.database import Database
from minimix.storage.muc import MucStore, StoredAffiliation, StoredSubject

F = "muc#roomconfig_"


def test_form_round_trip_keeps_every_setting() -> None:
    c = RoomConfig(
        name="Cave",
        description="Witches",
        persistent=True,
        public=False,
        members_only=True,
        moderated=True,
        password="pw",
        whois="anyone",
        max_users=30,
        history_length=7,
        change_subject=True,
        allow_pm="moderators",
        allow_invites=True,
        logging=False,
    )
    form = config_form(c, "coven@conference.localhost", 100)
    again = apply_form(RoomConfig(), form_values(form), 100)
    assert again == c


def test_apply_form_validates() -> None:
    base = RoomConfig()
    with pytest.raises(StanzaError) as exc:
        apply_form(base, {F + "passwordprotectedroom": ["1"], F + "roomsecret": [""]}, 50)
    assert exc.value.condition == "not-acceptable"
    for var, value in ((F + "whois", "everyone"), (F + "allowpm", "all"), (F + "maxusers", "x")):
        with pytest.raises(StanzaError):
            apply_form(base, {var: [value]}, 50)
    c = apply_form(base, {"muc#maxhistoryfetch": ["500"], F + "maxusers": ["none"]}, 50)
    assert c.history_length == 50 and c.max_users == 0
    c = apply_form(base, {F + "passwordprotectedroom": ["0"], F + "roomsecret": ["x"]}, 50)
    assert c.password == ""
    assert apply_form(base, {}, 50) == base  # an empty submit: the defaults (instant room)
    assert RoomConfig.from_json(c.to_json()) == c


def _entry(stamp: float, size: int) -> HistoryEntry:
    return HistoryEntry(Element("{jabber:client}message"), stamp, size)


def test_history_selection_meets_every_limit() -> None:
    entries = [_entry(100.0 + i, 10) for i in range(10)]
    now = 110.0
    assert len(select(entries, HistoryRequest(), now)) == 10
    assert [e.stamp for e in select(entries, HistoryRequest(maxstanzas=2), now)] == [108, 109]
    assert select(entries, HistoryRequest(maxstanzas=0), now) == []
    assert select(entries, HistoryRequest(maxchars=0), now) == []
    assert len(select(entries, HistoryRequest(maxchars=35), now)) == 3  # whole stanzas only
    assert [e.stamp for e in select(entries, HistoryRequest(seconds=3), now)] == [107, 108, 109]
    assert len(select(entries, HistoryRequest(since=105.0), now)) == 5
    both = HistoryRequest(maxstanzas=5, seconds=2)
    assert [e.stamp for e in select(entries, both, now)] == [108, 109]


def test_history_request_parsing_and_the_buffer_length() -> None:
    el = parse_element(
        f"<history xmlns='{ns.MUC}' maxchars='10' maxstanzas='x' since='1970-01-01T00:01:40Z'/>"
    )
    req = HistoryRequest.parse(el)
    assert req.maxchars == 10 and req.maxstanzas is None and req.since == 100.0
    assert parse_datetime(format_datetime(1234.5)) == 1234.5
    assert parse_datetime("not a date") is None
    h = History(3)
    for i in range(5):
        h.append(_entry(float(i), 1))
    assert [e.stamp for e in h.entries()] == [2.0, 3.0, 4.0]
    h.resize(1)
    assert [e.stamp for e in h.entries()] == [4.0]
    h.resize(0)
    h.append(_entry(9.0, 1))
    assert len(h) == 0


def test_store_keeps_rooms_affiliations_and_trimmed_history() -> None:
    store = MucStore(Database(":memory:"))
    store.save_room("coven", RoomConfig(persistent=True).to_json(), b"\x01" * 32, 5.0, None)
    store.save_room("other", "{}", b"\x02" * 32, 6.0, StoredSubject("Spells", "crone", "oid", 7.0))
    store.set_affiliation("coven", StoredAffiliation("crone@localhost", "owner"))
    store.set_affiliation("coven", StoredAffiliation("hag@localhost", "member", "thirdwitch"))
    store.set_affiliation("coven", StoredAffiliation("hag@localhost", "none"))
    for i in range(5):
        store.add_history("coven", float(i), f"<message>{i}</message>", keep=3)
        store.add_history("other", float(i), "<message/>", keep=10)
    rooms = {r.room: r for r in store.rooms()}
    coven = rooms["coven"]
    assert coven.secret == b"\x01" * 32 and coven.subject is None
    assert [(a.jid, a.affiliation) for a in coven.affiliations] == [("crone@localhost", "owner")]
    assert [s for _, s in coven.history] == [f"<message>{i}</message>" for i in (2, 3, 4)]
    assert rooms["other"].subject == StoredSubject("Spells", "crone", "oid", 7.0)
    assert len(rooms["other"].history) == 5
    store.delete_room("coven")
    assert [r.room for r in store.rooms()] == ["other"]
