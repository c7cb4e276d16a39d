"""Room logic without sockets: stanzas in, stanzas out (XEP-0045, 0421, 0359, 0410)."""

from __future__ import annotations

import itertools

import pytest

from minimix.extensions.muc.config import RoomConfig
from minimix.extensions.muc.room import Affiliation, Effects, Room
from minimix.protocol import ns
from minimix.protocol.jid import JID
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, parse_element

ROOM = JID.parse("coven@conference.localhost")
OWNER = JID.parse("crone@localhost/desktop")
HAG = JID.parse("hag@localhost/pda")
HAG2 = JID.parse("hag@localhost/laptop")
WITCH = JID.parse("witch@localhost/broom")
ACCOUNT = JID.parse("acct@localhost")  # an account occupant: a bare JID
NOW = 1_700_000_000.0
USER = ns.MUC_USER


def make_room(**config: object) -> Room:
    counter = itertools.count(1)
    return Room(
        ROOM,
        RoomConfig(**config),  # type: ignore[arg-type]
        b"s" * 32,
        affiliations={OWNER.bare: Affiliation("owner")},
        id_factory=lambda: f"sid{next(counter)}",
    )


def x(text: str) -> Element:
    return parse_element(text)


def join(
    room: Room, frm: JID, nick: str, *, inner: str = "", pid: str = "j", now: float = NOW
) -> Effects:
    p = x(f"<presence id='{pid}'><x xmlns='{ns.MUC}'>{inner}</x></presence>")
    return room.handle_presence(p, frm, nick, now)


def leave(room: Room, frm: JID, nick: str) -> Effects:
    return room.handle_presence(x("<presence type='unavailable'/>"), frm, nick, NOW)


def groupchat(room: Room, frm: JID, text: str, mid: str = "m1", extra: str = "") -> Effects:
    m = x(f"<message type='groupchat' id='{mid}'><body>{text}</body>{extra}</message>")
    return room.handle_groupchat(m, frm, NOW)


def to(fx: Effects, jid: JID) -> list[Element]:
    return [el for el in fx.stanzas() if el.get("to") == str(jid)]


def codes(el: Element) -> set[str]:
    xs = el.find(f"{{{USER}}}x")
    return set() if xs is None else {s.get("code", "") for s in xs.findall(f"{{{USER}}}status")}


def item(el: Element) -> Element:
    it = el.find(f"{{{USER}}}x/{{{USER}}}item")
    assert it is not None
    return it


def error_of(exc: pytest.ExceptionInfo[StanzaError]) -> str:
    return exc.value.condition


def occupied() -> Room:
    room = make_room()
    join(room, OWNER, "crone")
    join(room, HAG, "hag")
    return room


# ---------------------------------------------------------------------------- joining
def test_join_order_self_presence_last_with_codes_and_id() -> None:
    room = make_room()
    join(room, OWNER, "crone")
    fx = join(room, HAG, "hag", pid="abc")
    mine = to(fx, HAG)
    assert [el.tag.rsplit("}", 1)[1] for el in mine] == ["presence", "presence", "message"]
    assert mine[0].get("from") == f"{ROOM}/crone" and "110" not in codes(mine[0])
    assert mine[1].get("from") == f"{ROOM}/hag" and mine[1].get("id") == "abc"
    assert codes(mine[1]) == {"110", "170"}  # semi-anonymous, logged
    assert mine[2].find("{jabber:client}subject") is not None
    # The owner, a moderator, sees the newcomer's real JID.
    (seen,) = to(fx, OWNER)
    assert item(seen).get("jid") == str(HAG)
    assert seen.find(f"{{{ns.OCCUPANT_ID}}}occupant-id") is not None


def test_non_anonymous_room_shows_jids_and_says_100() -> None:
    room = make_room(whois="anyone", logging=False)
    join(room, OWNER, "crone")
    join(room, WITCH, "witch")
    fx = join(room, HAG, "hag")
    mine = to(fx, HAG)
    assert codes(mine[-2]) == {"100", "110"}
    assert {item(el).get("jid") for el in mine[:-2]} == {str(OWNER), str(WITCH)}
    assert item(to(fx, WITCH)[0]).get("jid") == str(HAG)


def test_created_room_says_201_and_is_locked_to_others() -> None:
    room = make_room()
    room.locked = True
    fx = room.handle_presence(
        x(f"<presence><x xmlns='{ns.MUC}'/></presence>"), OWNER, "crone", NOW, created=True
    )
    own = to(fx, OWNER)[0]
    assert {"110", "201"} <= codes(own)
    assert item(own).get("affiliation") == "owner" and item(own).get("role") == "moderator"
    with pytest.raises(StanzaError) as exc:
        join(room, HAG, "hag")
    assert error_of(exc) == "item-not-found"


@pytest.mark.parametrize(
    ("setup", "nick", "inner", "condition"),
    [
        ("banned", "hag", "", "forbidden"),
        ("members", "hag", "", "registration-required"),
        ("password", "hag", "", "not-authorized"),
        ("password", "hag", "<password>wrong</password>", "not-authorized"),
        ("full", "hag", "", "service-unavailable"),
        ("plain", "crone", "", "conflict"),
        ("reserved", "thirdwitch", "", "conflict"),
        ("plain", "\u200b ", "", "not-acceptable"),
    ],
)
def test_join_errors(setup: str, nick: str, inner: str, condition: str) -> None:
    room = make_room(
        members_only=setup == "members",
        password="cauldron" if setup == "password" else "",
        max_users=1 if setup == "full" else 0,
    )
    if setup == "banned":
        room.affiliations[HAG.bare] = Affiliation("outcast")
    if setup == "reserved":
        room.affiliations[WITCH.bare] = Affiliation("member", "thirdwitch")
    join(room, OWNER, "crone")
    with pytest.raises(StanzaError) as exc:
        join(room, HAG, nick, inner=inner)
    assert error_of(exc) == condition
    assert HAG not in {r for o in room.occupants.values() for r in o.sessions}


def test_join_without_nick_is_jid_malformed_and_password_lets_in() -> None:
    room = make_room(password="cauldron")
    with pytest.raises(StanzaError) as exc:
        join(room, HAG, "")
    assert error_of(exc) == "jid-malformed"
    fx = join(room, HAG, "hag", inner="<password>cauldron</password>")
    assert "110" in codes(to(fx, HAG)[-2])


def test_presence_without_x_from_a_non_occupant_is_told_it_is_not_in() -> None:
    room = make_room()
    fx = room.handle_presence(x("<presence/>"), HAG, "hag", NOW)
    (p,) = fx.stanzas()
    assert p.get("type") == "unavailable" and codes(p) == {"110", "307", "333"}
    assert not room.occupants


def test_rejoin_from_a_joined_session_is_a_full_resync() -> None:
    room = occupied()
    fx = join(room, HAG, "hag", pid="again")
    mine = to(fx, HAG)
    assert mine[-2].get("id") == "again" and "110" in codes(mine[-2])
    assert mine[-1].find("{jabber:client}subject") is not None
    assert len(room.occupants) == 2


# ---------------------------------------------------------------------------- sessions
def test_multi_session_nick_shares_one_occupant() -> None:
    room = occupied()
    fx = join(room, HAG2, "hag")
    assert len(room.occupants) == 2
    assert not to(fx, OWNER) or all(el.get("type") is None for el in to(fx, OWNER))
    fx = groupchat(room, OWNER, "hello")
    assert len(to(fx, HAG)) == 1 and len(to(fx, HAG2)) == 1
    fx = room.handle_private(x("<message type='chat'><body>psst</body></message>"), OWNER, "hag")
    assert len(to(fx, HAG)) == 1 and len(to(fx, HAG2)) == 1
    # One session leaves: only it is told; the occupant stays.
    fx = leave(room, HAG2, "hag")
    (gone,) = to(fx, HAG2)
    assert gone.get("type") == "unavailable" and "110" in codes(gone)
    assert all(el.get("type") != "unavailable" for el in to(fx, OWNER))
    assert "hag" in room.occupants
    # The nick is still the user's: another user cannot take it.
    with pytest.raises(StanzaError):
        join(room, WITCH, "hag")


def test_a_bare_jid_is_an_occupant_like_any_other() -> None:
    room = occupied()
    fx = join(room, ACCOUNT, "acct")
    assert "110" in codes(to(fx, ACCOUNT)[-2])
    fx = groupchat(room, ACCOUNT, "from the account")
    assert to(fx, ACCOUNT)[0].get("from") == f"{ROOM}/acct"
    assert len(to(fx, HAG)) == 1
    fx = leave(room, ACCOUNT, "acct")
    assert codes(to(fx, ACCOUNT)[0]) == {"110"}
    assert item(to(fx, ACCOUNT)[0]).get("role") == "none"


def test_leaving_empties_a_temporary_room_but_not_a_persistent_one() -> None:
    room = occupied()
    fx = leave(room, HAG, "hag")
    (mine,) = to(fx, HAG)
    assert mine.get("type") == "unavailable" and codes(mine) == {"110"}
    (theirs,) = to(fx, OWNER)
    assert item(theirs).get("role") == "none" and "110" not in codes(theirs)
    assert not fx.closed
    assert leave(room, OWNER, "crone").closed
    persistent = make_room(persistent=True)
    join(persistent, OWNER, "crone")
    assert not leave(persistent, OWNER, "crone").closed
    # Unavailable from someone not in the room is ignored.
    assert not leave(persistent, WITCH, "witch").stanzas()


def test_nick_change_sends_303_then_the_new_presence() -> None:
    room = occupied()
    fx = room.handle_presence(x("<presence id='nc'/>"), HAG, "oldhag", NOW)
    mine = to(fx, HAG)
    assert mine[0].get("type") == "unavailable" and codes(mine[0]) == {"110", "303"}
    assert item(mine[0]).get("nick") == "oldhag" and mine[0].get("from") == f"{ROOM}/hag"
    assert mine[1].get("from") == f"{ROOM}/oldhag" and codes(mine[1]) == {"110"}
    assert mine[1].get("id") == "nc"
    theirs = to(fx, OWNER)
    assert codes(theirs[0]) == {"303"} and theirs[1].get("type") is None
    assert set(room.occupants) == {"crone", "oldhag"}
    with pytest.raises(StanzaError) as exc:
        room.handle_presence(x("<presence/>"), HAG, "crone", NOW)
    assert error_of(exc) == "conflict"


def test_presence_update_is_broadcast_with_the_item() -> None:
    room = occupied()
    fx = room.handle_presence(x("<presence><show>away</show></presence>"), HAG, "hag", NOW)
    (theirs,) = to(fx, OWNER)
    assert theirs.findtext("{jabber:client}show") == "away"
    assert item(theirs).get("role") == "participant"
    assert codes(to(fx, HAG)[0]) == {"110"}


# ---------------------------------------------------------------------------- messages
def test_groupchat_is_reflected_with_ids_and_archived_once() -> None:
    room = occupied()
    spoofed = f"<stanza-id xmlns='{ns.SID}' by='{ROOM}' id='fake'/>"
    fx = groupchat(room, HAG, "hi", "client-id", extra=spoofed)
    assert len(fx.stanzas()) == 2
    for el in fx.stanzas():
        assert el.get("id") == "client-id" and el.get("from") == f"{ROOM}/hag"
        sids = el.findall(f"{{{ns.SID}}}stanza-id")
        assert [s.get("id") for s in sids] == ["sid1"]
    (archived,) = fx.archive
    assert archived.stanza_id == "sid1" and archived.with_jid == f"{ROOM}/hag"
    assert item(archived.stanza).get("jid") == str(HAG)
    assert len(fx.history) == 1 and len(room.history) == 1
    # Chat states are reflected, not archived.
    state = x(f"<message type='groupchat'><active xmlns='{ns.CHATSTATES}'/></message>")
    fx = room.handle_groupchat(state, HAG, NOW)
    assert not fx.archive and len(fx.stanzas()) == 2


def test_groupchat_refusals() -> None:
    room = make_room(moderated=True)
    join(room, OWNER, "crone")
    join(room, HAG, "hag")
    assert room.occupants["hag"].role == "visitor"
    with pytest.raises(StanzaError) as exc:
        groupchat(room, HAG, "hi")
    assert error_of(exc) == "forbidden"
    with pytest.raises(StanzaError) as exc:
        groupchat(room, WITCH, "hi")
    assert error_of(exc) == "not-acceptable"


def test_subject_changes_need_the_right() -> None:
    room = occupied()
    subject = x("<message type='groupchat'><subject>Spells</subject></message>")
    with pytest.raises(StanzaError) as exc:
        room.handle_groupchat(subject, HAG, NOW)
    assert error_of(exc) == "forbidden"
    fx = room.handle_groupchat(subject, OWNER, NOW)
    assert fx.save and room.subject is not None and room.subject.text == "Spells"
    assert not fx.history  # subjects are not discussion history
    room.config.change_subject = True
    room.handle_groupchat(x("<message type='groupchat'><subject>Brew</subject></message>"), HAG, 1)
    assert room.subject.text == "Brew"


def test_occupant_id_is_stable_per_user_and_differs_between_rooms() -> None:
    room = occupied()
    a = room.occupant_id(HAG.bare)
    assert a == room.occupant_id(HAG2.bare) and a != room.occupant_id(OWNER.bare)
    other = Room(JID.parse("other@conference.localhost"), RoomConfig(), b"t" * 32)
    assert other.occupant_id(HAG.bare) != a


def test_private_messages() -> None:
    room = occupied()
    fx = room.handle_private(
        x("<message type='chat' id='p1'><body>psst</body></message>"), HAG, "crone"
    )
    (pm,) = fx.stanzas()
    assert pm.get("to") == str(OWNER) and pm.get("from") == f"{ROOM}/hag"
    assert pm.find(f"{{{USER}}}x") is not None and pm.get("id") == "p1"
    for stanza, frm, nick, condition in (
        ("<message type='groupchat'><body>x</body></message>", HAG, "crone", "bad-request"),
        ("<message type='chat'><body>x</body></message>", HAG, "nobody", "item-not-found"),
        ("<message type='chat'><body>x</body></message>", WITCH, "crone", "not-acceptable"),
    ):
        with pytest.raises(StanzaError) as exc:
            room.handle_private(x(stanza), frm, nick)
        assert error_of(exc) == condition
    room.config.allow_pm = "none"
    with pytest.raises(StanzaError) as exc:
        room.handle_private(x("<message type='chat'><body>x</body></message>"), HAG, "crone")
    assert error_of(exc) == "policy-violation"


# ---------------------------------------------------------------------------- invitations
def test_mediated_invitation_and_decline() -> None:
    room = occupied()
    invite = x(
        f"<message id='inv'><x xmlns='{USER}'><invite to='witch@localhost'>"
        "<reason>Come</reason></invite></x></message>"
    )
    fx = room.handle_room_message(invite, HAG, NOW)
    (m,) = fx.stanzas()
    assert m.get("to") == "witch@localhost" and m.get("from") == str(ROOM)
    inv = m.find(f"{{{USER}}}x/{{{USER}}}invite")
    assert inv is not None and inv.get("from") == "hag@localhost"
    assert inv.findtext(f"{{{USER}}}reason") == "Come"
    assert WITCH.bare not in room.affiliations  # open rooms add no members
    decline = x(
        f"<message><x xmlns='{USER}'><decline to='hag@localhost'><reason>busy</reason>"
        "</decline></x></message>"
    )
    (d,) = room.handle_room_message(decline, WITCH, NOW).stanzas()
    dec = d.find(f"{{{USER}}}x/{{{USER}}}decline")
    assert d.get("to") == "hag@localhost" and dec is not None
    assert dec.get("from") == "witch@localhost"


def test_members_only_invitations_add_members_when_allowed() -> None:
    room = make_room(members_only=True)
    room.affiliations[HAG.bare] = Affiliation("member")
    join(room, OWNER, "crone")
    join(room, HAG, "hag")
    invite = x(f"<message><x xmlns='{USER}'><invite to='witch@localhost'/></x></message>")
    with pytest.raises(StanzaError) as exc:
        room.handle_room_message(invite, HAG, NOW)
    assert error_of(exc) == "forbidden"
    room.config.allow_invites = True
    fx = room.handle_room_message(invite, HAG, NOW)
    assert room.affiliation(WITCH.bare) == "member" and WITCH.bare in fx.affiliations
    # An admin (or owner) invites regardless.
    room.config.allow_invites = False
    invite2 = x(f"<message><x xmlns='{USER}'><invite to='new@localhost'/></x></message>")
    room.handle_room_message(invite2, OWNER, NOW)
    assert room.affiliation(JID.parse("new@localhost")) == "member"


def test_voice_request_reaches_moderators_and_approval_grants_voice() -> None:
    room = make_room(moderated=True)
    join(room, OWNER, "crone")
    join(room, HAG, "hag")
    request = x(
        f"<message><x xmlns='{ns.DATA}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{ns.MUC_REQUEST}</value></field>"
        "<field var='muc#role'><value>participant</value></field></x></message>"
    )
    fx = room.handle_room_message(request, HAG, NOW)
    (form_msg,) = to(fx, OWNER)
    form = form_msg.find(f"{{{ns.DATA}}}x")
    assert form is not None
    approval = x(
        f"<message><x xmlns='{ns.DATA}' type='submit'>"
        f"<field var='FORM_TYPE'><value>{ns.MUC_REQUEST}</value></field>"
        "<field var='muc#roomnick'><value>hag</value></field>"
        "<field var='muc#request_allow'><value>true</value></field></x></message>"
    )
    fx = room.handle_room_message(approval, OWNER, NOW)
    assert room.occupants["hag"].role == "participant"
    assert item(to(fx, HAG)[0]).get("role") == "participant"


# ---------------------------------------------------------------------------- removals
def test_ghost_removal_says_333_and_shutdown_says_332() -> None:
    room = occupied()
    fx = room.remove_session(HAG)
    assert codes(to(fx, OWNER)[0]) == {"333"}
    assert codes(to(fx, HAG)[0]) == {"110", "333"}
    assert "hag" not in room.occupants
    fx = room.shutdown()
    (own,) = fx.stanzas()
    assert own.get("to") == str(OWNER) and codes(own) == {"110", "332"}


def test_destroy_tells_each_occupant_once_with_the_venue() -> None:
    room = occupied()
    fx = room.destroy("new@conference.localhost", "Macbeth doth come.", None)
    assert fx.closed and fx.destroyed and len(fx.stanzas()) == 2
    for el in fx.stanzas():
        d = el.find(f"{{{USER}}}x/{{{USER}}}destroy")
        assert d is not None and d.get("jid") == "new@conference.localhost"
        assert d.findtext(f"{{{USER}}}reason") == "Macbeth doth come."
        assert item(el).get("role") == "none"


# ---------------------------------------------------------------------------- self-ping
def test_self_ping_is_answered_by_the_room_and_other_iqs_are_proxied() -> None:
    room = occupied()
    ping = x(f"<iq type='get' id='p'><ping xmlns='{ns.PING}'/></iq>")
    (reply,) = room.handle_occupant_iq(ping, HAG, "hag").stanzas()
    assert reply.get("type") == "result" and reply.get("to") == str(HAG)
    with pytest.raises(StanzaError) as exc:
        room.handle_occupant_iq(ping, WITCH, "hag")
    assert error_of(exc) == "not-acceptable"
    vcard = x(f"<iq type='get' id='v1'><vCard xmlns='{ns.VCARD}'/></iq>")
    (fwd,) = room.handle_occupant_iq(vcard, HAG, "crone").stanzas()
    assert fwd.get("to") == str(OWNER) and fwd.get("from") == f"{ROOM}/hag"
    answer = x(f"<iq type='result' id='{fwd.get('id')}'><vCard xmlns='{ns.VCARD}'/></iq>")
    (back,) = room.handle_occupant_iq(answer, OWNER, "hag").stanzas()
    assert back.get("to") == str(HAG) and back.get("id") == "v1"
    assert back.get("from") == f"{ROOM}/crone"


def test_a_nick_prepared_differently_from_the_request_says_210() -> None:
    room = occupied()
    p = x(f"<presence><x xmlns='{ns.MUC}'/></presence>")
    fx = room.handle_presence(p, WITCH, "caf\u00e9", NOW, raw_nick="cafe\u0301")
    assert {"110", "210"} <= codes(to(fx, WITCH)[-2])
