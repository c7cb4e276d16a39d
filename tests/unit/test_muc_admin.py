"""muc#admin and muc#owner requests on a room, without sockets (XEP-0045 §8-10)."""

from __future__ import annotations

import pytest

from minimix.extensions.muc.admin import admin_get, admin_set, owner_get, owner_set
from minimix.extensions.muc.config import RoomConfig
from minimix.extensions.muc.room import Affiliation, Effects, Room
from minimix.protocol import ns
from minimix.protocol.jid import JID
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, parse_element

ROOM = JID.parse("coven@conference.localhost")
OWNER = JID.parse("crone@localhost/desktop")
ADMIN = JID.parse("wicca@localhost/laptop")
MEMBER = JID.parse("hag@localhost/pda")
GUEST = JID.parse("guest@localhost/r")
USER = ns.MUC_USER
NOW = 1_700_000_000.0


def x(text: str) -> Element:
    return parse_element(text)


def make_room(**config: object) -> Room:
    room = Room(
        ROOM,
        RoomConfig(**config),  # type: ignore[arg-type]
        b"k" * 32,
        affiliations={
            OWNER.bare: Affiliation("owner"),
            ADMIN.bare: Affiliation("admin"),
            MEMBER.bare: Affiliation("member", "thirdwitch"),
        },
    )
    for real, nick in ((OWNER, "crone"), (ADMIN, "wicca"), (MEMBER, "hag"), (GUEST, "guest")):
        room.handle_presence(x(f"<presence><x xmlns='{ns.MUC}'/></presence>"), real, nick, NOW)
    return room


def admin(items: str) -> Element:
    return x(f"<query xmlns='{ns.MUC_ADMIN}'>{items}</query>")


def to(fx: Effects, jid: JID) -> list[Element]:
    return [el for el in fx.stanzas() if el.get("to") == str(jid)]


def codes(el: Element) -> set[str]:
    xs = el.find(f"{{{USER}}}x")
    return set() if xs is None else {s.get("code", "") for s in xs.findall(f"{{{USER}}}status")}


def item(el: Element) -> Element:
    it = el.find(f"{{{USER}}}x/{{{USER}}}item")
    assert it is not None
    return it


def refused(fn: object, *args: object) -> str:
    with pytest.raises(StanzaError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.condition


def test_kick_sends_307_with_actor_and_reason_to_everyone() -> None:
    room = make_room()
    fx = admin_set(
        room, admin("<item nick='guest' role='none'><reason>Avaunt</reason></item>"), ADMIN
    )
    (mine,) = to(fx, GUEST)
    assert mine.get("type") == "unavailable" and codes(mine) == {"110", "307"}
    it = item(mine)
    assert it.get("role") == "none" and it.findtext(f"{{{USER}}}reason") == "Avaunt"
    actor = it.find(f"{{{USER}}}actor")
    assert actor is not None and actor.get("nick") == "wicca"
    for other in (OWNER, ADMIN, MEMBER):
        (seen,) = to(fx, other)
        assert codes(seen) == {"307"}
    assert "guest" not in room.occupants


def test_kick_rules() -> None:
    room = make_room()
    # A participant is no moderator; a moderator without affiliation cannot kick an owner.
    assert (
        refused(admin_set, room, admin("<item nick='crone' role='none'/>"), MEMBER) == "forbidden"
    )
    room.occupants["guest"].role = "moderator"
    assert (
        refused(admin_set, room, admin("<item nick='crone' role='none'/>"), GUEST) == "not-allowed"
    )
    assert (
        refused(admin_set, room, admin("<item nick='nobody' role='none'/>"), OWNER)
        == "item-not-found"
    )
    both = "<item nick='guest' role='none' affiliation='none'/>"
    assert refused(admin_set, room, admin(both), OWNER) == "bad-request"


def test_voice_in_a_moderated_room() -> None:
    room = make_room(moderated=True)
    assert room.occupants["guest"].role == "visitor"
    fx = admin_set(room, admin("<item nick='guest' role='participant'/>"), ADMIN)
    assert room.occupants["guest"].role == "participant"
    assert item(to(fx, GUEST)[0]).get("role") == "participant"
    fx = admin_set(room, admin("<item nick='guest' role='visitor'/>"), ADMIN)
    assert room.occupants["guest"].role == "visitor"
    # Voice is never revoked from an admin or owner.
    assert (
        refused(admin_set, room, admin("<item nick='crone' role='visitor'/>"), ADMIN)
        == "not-allowed"
    )
    listing = admin_get(room, admin("<item role='visitor'/>"), ADMIN)
    assert [i.get("nick") for i in listing] == ["guest"]
    assert listing[0].get("jid") == str(GUEST)
    assert refused(admin_get, room, admin("<item role='visitor'/>"), MEMBER) == "forbidden"


def test_ban_sends_301_and_keeps_the_outcast_out() -> None:
    room = make_room()
    fx = admin_set(
        room,
        admin("<item affiliation='outcast' jid='guest@localhost'><reason>T</reason></item>"),
        ADMIN,
    )
    (mine,) = to(fx, GUEST)
    assert codes(mine) == {"110", "301"} and item(mine).get("affiliation") == "outcast"
    assert codes(to(fx, OWNER)[0]) == {"301"}
    assert room.affiliation(GUEST.bare) == "outcast" and GUEST.bare in fx.affiliations
    with pytest.raises(StanzaError) as exc:
        room.handle_presence(x(f"<presence><x xmlns='{ns.MUC}'/></presence>"), GUEST, "g", NOW)
    assert exc.value.condition == "forbidden"
    listing = admin_get(room, admin("<item affiliation='outcast'/>"), ADMIN)
    assert [(i.get("jid"), i.findtext(f"{{{ns.MUC_ADMIN}}}reason")) for i in listing] == [
        ("guest@localhost", "T")
    ]


def test_affiliation_rules() -> None:
    room = make_room()
    ban = admin("<item affiliation='outcast' jid='crone@localhost'/>")
    assert refused(admin_set, room, ban, ADMIN) == "not-allowed"
    self_ban = admin("<item affiliation='outcast' jid='wicca@localhost'/>")
    assert refused(admin_set, room, self_ban, ADMIN) == "conflict"
    grant_admin = admin("<item affiliation='admin' jid='hag@localhost'/>")
    assert refused(admin_set, room, grant_admin, ADMIN) == "forbidden"
    assert refused(admin_set, room, grant_admin, MEMBER) == "forbidden"
    last_owner = admin("<item affiliation='admin' jid='crone@localhost'/>")
    assert refused(admin_set, room, last_owner, OWNER) == "conflict"
    # One forbidden item means nothing of the request is applied.
    mixed = admin(
        "<item affiliation='member' jid='guest@localhost'/>"
        "<item affiliation='outcast' jid='crone@localhost'/>"
    )
    assert refused(admin_set, room, mixed, ADMIN) == "not-allowed"
    assert room.affiliation(GUEST.bare) == "none"


def test_granting_admin_makes_a_moderator_and_lists_show_reserved_nicks() -> None:
    room = make_room()
    fx = admin_set(room, admin("<item affiliation='admin' jid='hag@localhost'/>"), OWNER)
    assert room.occupants["hag"].role == "moderator"
    assert item(to(fx, OWNER)[0]).get("affiliation") == "admin"
    members = admin_get(room, admin("<item affiliation='admin'/>"), OWNER)
    assert sorted(i.get("jid") or "" for i in members) == ["hag@localhost", "wicca@localhost"]
    assert {i.get("nick") for i in members} == {"thirdwitch", None}
    assert refused(admin_get, room, admin("<item affiliation='member'/>"), GUEST) == "forbidden"


def test_membership_revoked_in_members_only_room_removes_with_321() -> None:
    room = make_room()
    room.config.members_only = True
    fx = admin_set(room, admin("<item affiliation='none' jid='hag@localhost'/>"), ADMIN)
    (mine,) = to(fx, MEMBER)
    assert mine.get("type") == "unavailable" and codes(mine) == {"110", "321"}
    assert "hag" not in room.occupants


def test_becoming_members_only_removes_non_members_with_322_and_notifies() -> None:
    room = make_room()
    form = x(
        f"<query xmlns='{ns.MUC_OWNER}'><x xmlns='{ns.DATA}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{ns.MUC_ROOMCONFIG}</value></field>"
        "<field var='muc#roomconfig_membersonly'><value>1</value></field>"
        "<field var='muc#roomconfig_whois'><value>anyone</value></field>"
        "</x></query>"
    )
    fx = owner_set(room, form, OWNER, 100)
    assert fx.save and room.config.members_only and room.config.non_anonymous
    (notice,) = [el for el in to(fx, OWNER) if el.tag.endswith("message")]
    assert codes(notice) == {"104", "172"}
    (removed,) = to(fx, GUEST)[-1:]
    assert codes(removed) == {"110", "322"}
    assert "guest" not in room.occupants and "hag" in room.occupants


def test_owner_form_and_permissions() -> None:
    room = make_room(name="Cave")
    room.config.password = "pw"
    q = owner_get(room, x(f"<query xmlns='{ns.MUC_OWNER}'/>"), OWNER, 50)
    form = q.find(f"{{{ns.DATA}}}x")
    assert form is not None and form.get("type") == "form"
    values = {
        f.get("var"): [v.text for v in f.findall(f"{{{ns.DATA}}}value")]
        for f in form.findall(f"{{{ns.DATA}}}field")
    }
    assert values["FORM_TYPE"] == [ns.MUC_ROOMCONFIG]
    assert values["muc#roomconfig_roomname"] == ["Cave"]
    assert values["muc#roomconfig_passwordprotectedroom"] == ["1"]
    assert values["muc#maxhistoryfetch"] == ["20"]
    empty = x(f"<query xmlns='{ns.MUC_OWNER}'/>")
    assert refused(owner_get, room, empty, ADMIN, 50) == "forbidden"
    destroy = x(f"<query xmlns='{ns.MUC_OWNER}'><destroy/></query>")
    assert refused(owner_set, room, destroy, ADMIN, 50) == "forbidden"
    fx = owner_set(room, destroy, OWNER, 50)
    assert fx.destroyed and len(fx.stanzas()) == 4


def test_cancelling_the_first_configuration_destroys_a_locked_room() -> None:
    room = make_room()
    cancel = x(f"<query xmlns='{ns.MUC_OWNER}'><x xmlns='{ns.DATA}' type='cancel'/></query>")
    assert not owner_set(room, cancel, OWNER, 50).closed
    room.locked = True
    fx = owner_set(room, cancel, OWNER, 50)
    assert fx.closed and fx.destroyed


def test_a_domain_ban_removes_and_keeps_out_that_domain() -> None:
    room = make_room()
    fx = admin_set(room, admin("<item affiliation='outcast' jid='localhost'/>"), OWNER)
    # Occupants of that domain without an affiliation of their own are removed.
    assert codes(to(fx, GUEST)[0]) == {"110", "301"}
    assert set(room.occupants) == {"crone", "wicca", "hag"}
    assert room.affiliation(JID.parse("someone@localhost")) == "outcast"
    assert room.affiliation(OWNER.bare) == "owner"
