"""Moderation and ownership requests (XEP-0045 §8-10): ``muc#admin`` and ``muc#owner`` IQs.

Pure functions over a :class:`Room`: they check who may do what, then apply every change of a
request or none of them (§9.2: a list change with one forbidden item changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from minimix.extensions.muc.config import apply_form, config_form, form_values
from minimix.extensions.muc.room import AFFILIATION_RANK, ROLE_RANK, Effects, Occupant, Room
from minimix.protocol import ns
from minimix.protocol.jid import JID, InvalidJID
from minimix.protocol.stanza import StanzaError
from minimix.protocol.xml import Element, SubElement, tag

_ADMIN_ITEM = tag(ns.MUC_ADMIN, "item")
_OWNER = tag(ns.MUC_OWNER, "query")
_ADMIN = tag(ns.MUC_ADMIN, "query")
_ADMIN_RANK = AFFILIATION_RANK["admin"]
_MEMBER_RANK = AFFILIATION_RANK["member"]


def acting_occupant(room: Room, requester: JID) -> Occupant | None:
    """The occupant behind a request: the exact session, else the same user under any session.

    Rights follow the user (bare JID): a client whose account is the occupant acts as it.
    """
    occ = room.occupant_of(requester)
    if occ is not None:
        return occ
    bare = requester.bare
    for o in room.occupants.values():
        if o.bare == bare:
            return o
    return None


def _rank(room: Room, bare: JID) -> int:
    return AFFILIATION_RANK[room.affiliation(bare)]


# ---------------------------------------------------------------------------- muc#admin
def admin_get(room: Room, query: Element, requester: JID) -> Element:
    """A list: everyone with one affiliation (§9.5...) or one role (§8.5)."""
    items = query.findall(_ADMIN_ITEM)
    if len(items) != 1:
        raise StanzaError("bad-request", "ask for one affiliation or one role")
    it = items[0]
    affiliation, role = it.get("affiliation"), it.get("role")
    result = Element(_ADMIN)
    if affiliation and not role:
        if affiliation not in AFFILIATION_RANK or affiliation == "none":
            raise StanzaError("bad-request", "unknown affiliation")
        mine = _rank(room, requester.bare)
        allowed = mine >= _ADMIN_RANK or (
            affiliation != "outcast" and mine >= _MEMBER_RANK and room.config.non_anonymous
        )
        if not allowed:
            raise StanzaError("forbidden", "you may not see this list")
        for jid, a in sorted(room.affiliations.items(), key=lambda kv: str(kv[0])):
            if a.affiliation != affiliation:
                continue
            attrs = {"affiliation": affiliation, "jid": str(jid)}
            if a.nick:
                attrs["nick"] = a.nick
            el = SubElement(result, _ADMIN_ITEM, attrs)
            if a.reason:
                SubElement(el, tag(ns.MUC_ADMIN, "reason")).text = a.reason
        return result
    if role and not affiliation:
        if role not in ("moderator", "participant", "visitor"):
            raise StanzaError("bad-request", "unknown role")
        actor = acting_occupant(room, requester)
        if actor is None or actor.role != "moderator":
            raise StanzaError("forbidden", "only moderators may see this list")
        for occ in room.occupants.values():
            if occ.role == role:
                SubElement(
                    result,
                    _ADMIN_ITEM,
                    {
                        "nick": occ.nick,
                        "role": occ.role,
                        "affiliation": room.affiliation(occ.bare),
                        "jid": str(occ.real),
                    },
                )
        return result
    raise StanzaError("bad-request", "ask for one affiliation or one role")


@dataclass(slots=True)
class _RoleChange:
    occupant: Occupant
    role: str
    reason: str | None


@dataclass(slots=True)
class _AffiliationChange:
    jid: JID
    affiliation: str
    nick: str | None
    reason: str | None


def admin_set(room: Room, query: Element, requester: JID) -> Effects:
    """Kick, voice, moderator, ban, member, admin, owner changes: all checked, then applied."""
    items = query.findall(_ADMIN_ITEM)
    if not items:
        raise StanzaError("bad-request", "no item to change")
    actor = acting_occupant(room, requester)
    mine = _rank(room, requester.bare)
    changes: list[_RoleChange | _AffiliationChange] = []
    for it in items:
        affiliation, role = it.get("affiliation"), it.get("role")
        reason = it.findtext(tag(ns.MUC_ADMIN, "reason"))
        if affiliation and role:
            raise StanzaError("bad-request", "change a role or an affiliation, not both")
        if role:
            changes.append(_check_role(room, actor, mine, it, role, reason))
        elif affiliation:
            changes.append(_check_affiliation(room, requester, mine, it, affiliation, reason))
        else:
            raise StanzaError("bad-request", "an item needs a role or an affiliation")
    owners = set(room.owners())
    for c in changes:
        if isinstance(c, _AffiliationChange):
            if c.affiliation == "owner":
                owners.add(c.jid)
            else:
                owners.discard(c.jid)
    if not owners:
        raise StanzaError("conflict", "a room needs an owner")
    fx = Effects()
    actor_nick = actor.nick if actor is not None else None
    for c in changes:
        if isinstance(c, _RoleChange):
            occ = room.occupants.get(c.occupant.nick)
            if occ is c.occupant:
                room.set_role(fx, occ, c.role, actor=actor_nick, reason=c.reason)
        else:
            room.set_affiliation(
                fx, c.jid, c.affiliation, nick=c.nick, reason=c.reason, actor=actor_nick
            )
    return fx


def _check_role(
    room: Room,
    actor: Occupant | None,
    mine: int,
    it: Element,
    role: str,
    reason: str | None,
) -> _RoleChange:
    if role not in ROLE_RANK:
        raise StanzaError("bad-request", "unknown role")
    nick = it.get("nick")
    if not nick:
        raise StanzaError("bad-request", "a role change names the occupant by nick")
    if actor is None or actor.role != "moderator":
        raise StanzaError("forbidden", "only moderators may change roles")
    target = room.occupants.get(nick)
    if target is None:
        raise StanzaError("item-not-found", "no occupant has this nickname")
    theirs = _rank(room, target.bare)
    if role == "none":
        # §8.2: nobody is kicked by a moderator of lower affiliation.
        if theirs > mine:
            raise StanzaError("not-allowed", "this occupant's affiliation is higher than yours")
    elif role == "moderator":
        if mine < _ADMIN_RANK:
            raise StanzaError("forbidden", "only admins and owners grant moderator status")
    else:
        # §8.4, §9.7: admins and owners keep voice and moderation.
        if theirs >= _ADMIN_RANK or theirs > mine:
            raise StanzaError("not-allowed", "this occupant's role follows its affiliation")
        if target.role == "moderator" and mine < _ADMIN_RANK:
            raise StanzaError("forbidden", "only admins and owners revoke moderator status")
    return _RoleChange(target, role, reason)


def _check_affiliation(
    room: Room,
    requester: JID,
    mine: int,
    it: Element,
    affiliation: str,
    reason: str | None,
) -> _AffiliationChange:
    if affiliation not in AFFILIATION_RANK:
        raise StanzaError("bad-request", "unknown affiliation")
    raw = it.get("jid")
    nick = it.get("nick")
    reserved: str | None = None
    if raw:
        try:
            jid = JID.parse(raw).bare
        except InvalidJID:
            raise StanzaError("jid-malformed", "not a valid JID") from None
        reserved = nick
    elif nick:
        target = room.occupants.get(nick)
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        jid = target.bare
    else:
        raise StanzaError("bad-request", "an affiliation change names a JID")
    if mine < _ADMIN_RANK:
        raise StanzaError("forbidden", "only admins and owners change affiliations")
    if jid == requester.bare and affiliation == "outcast":
        raise StanzaError("conflict", "you cannot ban yourself")
    current = room.affiliation(jid)
    owner = mine == AFFILIATION_RANK["owner"]
    if affiliation in ("owner", "admin") and not owner:
        raise StanzaError("forbidden", "only owners grant admin or owner")
    if current in ("owner", "admin") and not owner:
        raise StanzaError("not-allowed", "only owners change admins and owners")
    return _AffiliationChange(jid, affiliation, reserved, reason)


# ---------------------------------------------------------------------------- muc#owner
def owner_get(room: Room, query: Element, requester: JID, max_history: int) -> Element:
    """The configuration form (§10.1.3, §10.2)."""
    if room.affiliation(requester.bare) != "owner":
        raise StanzaError("forbidden", "only owners configure the room")
    result = Element(_OWNER)
    result.append(config_form(room.config, room.name, max_history))
    return result


def owner_set(room: Room, query: Element, requester: JID, max_history: int) -> Effects:
    """A submitted or cancelled configuration (§10.1-10.2), or a destruction (§10.9)."""
    if room.affiliation(requester.bare) != "owner":
        raise StanzaError("forbidden", "only owners configure or destroy the room")
    destroy = query.find(tag(ns.MUC_OWNER, "destroy"))
    if destroy is not None:
        alternate = destroy.get("jid")
        if alternate:
            try:
                alternate = str(JID.parse(alternate))
            except InvalidJID:
                raise StanzaError("jid-malformed", "the alternate venue is not a JID") from None
        return room.destroy(
            alternate,
            destroy.findtext(tag(ns.MUC_OWNER, "reason")),
            destroy.findtext(tag(ns.MUC_OWNER, "password")),
        )
    form = query.find(tag(ns.DATA, "x"))
    if form is None:
        raise StanzaError("bad-request", "expected a data form or <destroy/>")
    ftype = form.get("type")
    if ftype == "cancel":
        return room.destroy(None, None, None) if room.locked else Effects()
    if ftype != "submit":
        raise StanzaError("bad-request", "submit or cancel the form")
    return room.apply_config(apply_form(room.config, form_values(form), max_history))
