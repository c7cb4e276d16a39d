"""One room of the group chat service (XEP-0045): its occupants, roles, affiliations and traffic.

Pure: every entry point takes a stanza (and the time) and returns :class:`Effects`, the stanzas
to send and what to persist or archive; refusals raise :class:`StanzaError`. No I/O, no asyncio:
the service (``service.py``) routes the stanzas and writes the storage.

Occupants are keyed by nick. An occupant has one or more *sessions*: the real JIDs it joined
from. Several full JIDs of one bare JID may share a nick (§7.2.8, multi-session nicks); a bare
JID is an occupant like any other (an account joined on behalf of its clients).
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from minimix.extensions.muc.config import RoomConfig, form_values
from minimix.extensions.muc.history import History, HistoryEntry, HistoryRequest, delay
from minimix.protocol import ns
from minimix.protocol.jid import JID, InvalidJID
from minimix.protocol.stanza import StanzaError, copy_shallow, make, new_id
from minimix.protocol.xml import Element, SubElement, serialize, tag

ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
AFFILIATION_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}

# Status codes (XEP-0045 §15.6)
NON_ANONYMOUS = "100"
SELF = "110"
LOGGING = "170"
CREATED = "201"
NICK_MODIFIED = "210"
NICK_CHANGED = "303"
BANNED = "301"
KICKED = "307"
AFFILIATION_REMOVED = "321"
MEMBERS_ONLY_REMOVED = "322"
SHUTDOWN = "332"
ERROR_REMOVED = "333"

_MUC_X = tag(ns.MUC, "x")
_MUC_USER_X = tag(ns.MUC_USER, "x")
_OCCUPANT_ID = tag(ns.OCCUPANT_ID, "occupant-id")
_STANZA_ID = tag(ns.SID, "stanza-id")
_ERROR = "{jabber:client}error"
_BODY = "{jabber:client}body"
_SUBJECT = "{jabber:client}subject"
_THREAD = "{jabber:client}thread"
_DELAY = tag(ns.DELAY, "delay")
# Children a client may not inject into what the room reflects.
_PRESENCE_STRIP = frozenset((_MUC_X, _MUC_USER_X, _OCCUPANT_ID, _ERROR))
_ARCHIVE_PAYLOADS = frozenset(
    (
        _BODY,
        tag(ns.REACTIONS, "reactions"),
        tag(ns.MESSAGE_RETRACT, "retract"),
        tag(ns.OMEMO_LEGACY, "encrypted"),
        tag(ns.OMEMO, "encrypted"),
        tag(ns.HINTS, "store"),
    )
)
_NO_STORE = frozenset((tag(ns.HINTS, "no-store"), tag(ns.HINTS, "no-permanent-store")))
_IQ_MAP_SIZE = 1024


@dataclass(slots=True)
class Affiliation:
    affiliation: str
    nick: str = ""  # the reserved nick, if any
    reason: str = ""


@dataclass(slots=True)
class Occupant:
    nick: str
    bare: JID  # the real bare JID: affiliations and multi-session nicks are keyed on it
    role: str
    occupant_id: str
    sessions: dict[JID, Element] = field(default_factory=dict)  # real JID -> last presence
    primary: JID | None = None  # the session whose presence the room shows

    @property
    def real(self) -> JID:
        assert self.primary is not None
        return self.primary


@dataclass(slots=True)
class Subject:
    text: str
    nick: str = ""
    occupant_id: str = ""
    stamp: float = 0.0


@dataclass(slots=True)
class ArchiveItem:
    """A groupchat message for the room archive: stored once, with its stanza-id."""

    stanza_id: str
    stanza: Element  # as reflected, without ``to``, plus the sender's real JID in muc#user
    with_jid: str  # the occupant JID that sent it
    stamp: float


@dataclass(slots=True)
class Copies:
    """One stanza for many recipients, each to get a copy addressed to it (in this order)."""

    stanza: Element
    recipients: list[str]

    def stanzas(self) -> list[Element]:
        return [copy_shallow(self.stanza, to=to) for to in self.recipients]


@dataclass(slots=True)
class Effects:
    """What one input caused: stanzas to route and state to persist."""

    out: list[Element | Copies] = field(default_factory=list)
    archive: list[ArchiveItem] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    affiliations: set[JID] = field(default_factory=set)  # bare JIDs whose affiliation changed
    save: bool = False  # configuration or subject changed
    closed: bool = False  # the room is gone (destroyed, or temporary and empty)
    destroyed: bool = False  # explicitly destroyed: drop its storage and archive

    def stanzas(self) -> list[Element]:
        """Every stanza to route, copies written out."""
        out: list[Element] = []
        for item in self.out:
            if isinstance(item, Copies):
                out.extend(item.stanzas())
            else:
                out.append(item)
        return out


def is_valid_nick(nick: str) -> bool:
    """Nicks must not be empty or invisible (XEP-0045 §17.1)."""
    return any(unicodedata.category(c)[0] not in ("Z", "C") for c in nick)


def muc_user(
    items: Iterable[Element] = (), codes: Iterable[str] = (), extra: Iterable[Element] = ()
) -> Element:
    x = Element(_MUC_USER_X)
    x.extend(items)
    for code in sorted(set(codes)):
        SubElement(x, tag(ns.MUC_USER, "status"), {"code": code})
    x.extend(extra)
    return x


def item(
    affiliation: str,
    role: str,
    jid: JID | None = None,
    nick: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> Element:
    attrs = {"affiliation": affiliation, "role": role}
    if jid is not None:
        attrs["jid"] = str(jid)
    if nick is not None:
        attrs["nick"] = nick
    el = Element(tag(ns.MUC_USER, "item"), attrs)
    if actor is not None:
        SubElement(el, tag(ns.MUC_USER, "actor"), {"nick": actor})
    if reason:
        SubElement(el, tag(ns.MUC_USER, "reason")).text = reason
    return el


def should_archive(stanza: Element) -> bool:
    """Messages with content are archived; chat states and no-store messages are not."""
    tags = {c.tag for c in stanza}
    if tags & _NO_STORE:
        return False
    if _SUBJECT in tags and _BODY not in tags:
        return True
    return bool(tags & _ARCHIVE_PAYLOADS)


class Room:
    """A room's state. ``jid`` is the room's bare JID."""

    def __init__(
        self,
        jid: JID,
        config: RoomConfig,
        secret: bytes,
        *,
        created: float = 0.0,
        locked: bool = False,
        affiliations: dict[JID, Affiliation] | None = None,
        subject: Subject | None = None,
        history: Iterable[HistoryEntry] = (),
        max_occupants: int = 1000,
        archive_available: bool = True,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self.jid = jid
        self.name = str(jid)
        self.config = config
        self.secret = secret
        self.created = created
        self.locked = locked
        self.affiliations: dict[JID, Affiliation] = dict(affiliations or {})
        self.subject = subject
        self.history = History(config.history_length, history)
        self.max_occupants = max_occupants
        self.archive_available = archive_available
        self.occupants: dict[str, Occupant] = {}
        self._by_real: dict[JID, Occupant] = {}
        self._ids = id_factory or (lambda: str(uuid.uuid4()))
        self._iq_map: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._occupant_ids: dict[JID, str] = {}

    # ------------------------------------------------------------------ lookups
    @property
    def logging(self) -> bool:
        return self.config.logging and self.archive_available

    def affiliation(self, bare: JID) -> str:
        a = self.affiliations.get(bare)
        if a is None and bare.local:
            a = self.affiliations.get(JID("", bare.domain, ""))  # a ban of a whole domain
            if a is not None and a.affiliation != "outcast":
                a = None
        return a.affiliation if a else "none"

    def occupant_of(self, real: JID) -> Occupant | None:
        return self._by_real.get(real)

    def occupant_id(self, bare: JID) -> str:
        """XEP-0421: stable per real bare JID, unlinkable across rooms (per-room secret)."""
        oid = self._occupant_ids.get(bare)
        if oid is None:
            oid = hmac.new(self.secret, str(bare).encode(), hashlib.sha256).hexdigest()
            self._occupant_ids[bare] = oid
        return oid

    def owners(self) -> list[JID]:
        return [j for j, a in self.affiliations.items() if a.affiliation == "owner"]

    def reserved_by(self, nick: str) -> JID | None:
        for j, a in self.affiliations.items():
            if a.nick == nick and a.affiliation != "outcast":
                return j
        return None

    def is_empty(self) -> bool:
        return not self.occupants

    def sees_real_jids(self, bare: JID) -> bool:
        """May this user see occupants' real JIDs (non-anonymous room, moderator, or admin)?"""
        if self.config.non_anonymous:
            return True
        if AFFILIATION_RANK[self.affiliation(bare)] >= AFFILIATION_RANK["admin"]:
            return True
        return any(o.role == "moderator" for o in self.occupants.values() if o.bare == bare)

    def may_read_archive(self, bare: JID) -> bool:
        """XEP-0313 §7.1.2: who may enter may read; outcasts may not; members-only to members."""
        aff = self.affiliation(bare)
        if aff == "outcast":
            return False
        if self.locked:
            return aff == "owner"
        if self.config.members_only:
            return AFFILIATION_RANK[aff] >= AFFILIATION_RANK["member"]
        return True

    def default_role(self, affiliation: str) -> str:
        if affiliation in ("owner", "admin"):
            return "moderator"
        if self.config.moderated and affiliation == "none":
            return "visitor"
        return "participant"

    def _nick_jid(self, nick: str) -> str:
        return f"{self.name}/{nick}"

    # ------------------------------------------------------------------ stanza builders
    def _presence(
        self,
        occ: Occupant,
        *,
        with_jid: bool,
        codes: Sequence[str] = (),
        ptype: str | None = None,
        role: str | None = None,
        affiliation: str | None = None,
        item_nick: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        children: Iterable[Element] | None = None,
        extra: Iterable[Element] = (),
        id_: str | None = None,
    ) -> Element:
        p = make("presence", from_=self._nick_jid(occ.nick), type_=ptype, id_=id_)
        if children is None:
            source = occ.sessions.get(occ.primary) if occ.primary is not None else None
            children = () if source is None else source
        for c in children:
            if c.tag not in _PRESENCE_STRIP:
                p.append(c)
        p.append(
            muc_user(
                [
                    item(
                        affiliation or self.affiliation(occ.bare),
                        role or occ.role,
                        jid=occ.primary if with_jid else None,
                        nick=item_nick,
                        actor=actor,
                        reason=reason,
                    )
                ],
                codes,
                extra,
            )
        )
        p.append(Element(_OCCUPANT_ID, {"id": occ.occupant_id}))
        return p

    def _broadcast(
        self,
        fx: Effects,
        occ: Occupant,
        *,
        codes: Sequence[str] = (),
        self_codes: Sequence[str] = (),
        self_sessions: Iterable[JID] | None = None,
        include_self: bool = True,
        self_first: bool = False,
        self_id: str | None = None,
        ptype: str | None = None,
        role: str | None = None,
        affiliation: str | None = None,
        item_nick: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        children: Iterable[Element] | None = None,
    ) -> None:
        """Send one presence of ``occ`` to every occupant; each variant is built once.

        Others get the real JID when the room is non-anonymous or they are moderators; the
        occupant's own sessions get the self-presence (110 plus ``self_codes``).
        """
        kids = None if children is None else list(children)

        def build(with_jid: bool, all_codes: Sequence[str], id_: str | None) -> Element:
            return self._presence(
                occ,
                with_jid=with_jid,
                codes=all_codes,
                ptype=ptype,
                role=role,
                affiliation=affiliation,
                item_nick=item_nick,
                actor=actor,
                reason=reason,
                children=kids,
                id_=id_,
            )

        def others() -> None:
            variants: dict[bool, Element] = {}
            for other in self.occupants.values():
                if other is occ:
                    continue
                sees = self.config.non_anonymous or other.role == "moderator"
                el = variants.get(sees)
                if el is None:
                    el = variants[sees] = build(sees, codes, None)
                for real in other.sessions:
                    fx.out.append(copy_shallow(el, to=str(real)))

        def own() -> None:
            if not include_self:
                return
            el = build(True, [*codes, SELF, *self_codes], self_id)
            for real in list(occ.sessions) if self_sessions is None else self_sessions:
                fx.out.append(copy_shallow(el, to=str(real)))

        if self_first:
            own()
            others()
        else:
            others()
            own()

    def _subject_message(self, to: JID) -> Element:
        s = self.subject
        frm = self._nick_jid(s.nick) if s and s.nick else self.name
        m = make("message", to=to, from_=frm, type_="groupchat", id_=new_id())
        SubElement(m, _SUBJECT).text = s.text if s else None
        if s is not None:
            m.append(delay(self.name, s.stamp))
            if s.occupant_id:
                m.append(Element(_OCCUPANT_ID, {"id": s.occupant_id}))
        return m

    def _send_join_sequence(
        self,
        fx: Effects,
        occ: Occupant,
        real: JID,
        join_id: str | None,
        req: HistoryRequest,
        now: float,
        extra_codes: Sequence[str] = (),
    ) -> None:
        """§7.1 order: other occupants, self-presence (110 last), history, subject."""
        sees = self.config.non_anonymous or occ.role == "moderator"
        to = str(real)
        for other in self.occupants.values():
            if other is not occ and other.primary is not None:
                p = self._presence(other, with_jid=sees)
                p.set("to", to)
                fx.out.append(p)
        codes = [SELF, *extra_codes]
        if self.config.non_anonymous:
            codes.append(NON_ANONYMOUS)
        if self.logging:
            codes.append(LOGGING)
        own = self._presence(occ, with_jid=True, codes=codes, id_=join_id)
        own.set("to", to)
        fx.out.append(own)
        for entry in self.history.select(req, now):
            fx.out.append(copy_shallow(entry.stanza, to=to))
        fx.out.append(self._subject_message(real))

    # ------------------------------------------------------------------ presence
    def handle_presence(
        self,
        stanza: Element,
        frm: JID,
        nick: str,
        now: float,
        *,
        raw_nick: str | None = None,
        created: bool = False,
    ) -> Effects:
        """A presence from real JID ``frm`` to ``room/nick`` (``nick`` empty: to the room)."""
        ptype = stanza.get("type")
        if ptype == "unavailable":
            return self._leave(stanza, frm, now)
        if ptype is not None:
            return Effects()  # probes and subscriptions: nothing to do (§17.3 items 4-5)
        muc_x = stanza.find(_MUC_X)
        if not nick:
            if muc_x is not None:
                raise StanzaError("jid-malformed", "a nickname is required to enter a room")
            return Effects()
        occ = self._by_real.get(frm)
        if occ is None:
            if muc_x is None:
                return self._not_in_room(frm, nick)
            return self._join(stanza, frm, nick, raw_nick, muc_x, now, created)
        if nick != occ.nick:
            return self._change_nick(stanza, frm, occ, nick, raw_nick)
        fx = Effects()
        before = self._payload_key(occ)
        occ.sessions[frm] = stanza
        occ.primary = frm
        changed = before != self._payload_key(occ)
        if muc_x is None:
            self._broadcast(fx, occ)
            return fx
        # A join from a session already in the room: a full synchronization request (§7.2.1).
        if changed:
            self._broadcast(fx, occ, self_sessions=[s for s in occ.sessions if s != frm])
        req = HistoryRequest.parse(muc_x.find(tag(ns.MUC, "history")))
        self._send_join_sequence(fx, occ, frm, stanza.get("id"), req, now)
        return fx

    @staticmethod
    def _payload_key(occ: Occupant) -> str:
        p = occ.sessions.get(occ.primary) if occ.primary is not None else None
        if p is None:
            return ""
        return "".join(serialize(c) for c in p if c.tag not in _PRESENCE_STRIP)

    def _not_in_room(self, frm: JID, nick: str) -> Effects:
        """§7.2.18: presence without <x/> from a non-occupant: tell it that it is not in."""
        p = make("presence", to=frm, from_=self._nick_jid(nick), type_="unavailable")
        p.append(
            muc_user(
                [item(self.affiliation(frm.bare), "none", reason="You are not in the room.")],
                [SELF, KICKED, ERROR_REMOVED],
            )
        )
        return Effects(out=[p])

    def _join(
        self,
        stanza: Element,
        frm: JID,
        nick: str,
        raw_nick: str | None,
        muc_x: Element,
        now: float,
        created: bool,
    ) -> Effects:
        bare = frm.bare
        aff = self.affiliation(bare)
        existing = self.occupants.get(nick)
        if not is_valid_nick(nick):
            raise StanzaError("not-acceptable", "this nickname cannot be used")
        if self.locked and aff != "owner":
            raise StanzaError("item-not-found", "the room is locked until its owner configures it")
        if aff == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        if self.config.members_only and AFFILIATION_RANK[aff] < AFFILIATION_RANK["member"]:
            raise StanzaError("registration-required", "this room is for members only")
        if existing is not None and existing.bare != bare:
            raise StanzaError("conflict", "this nickname is in use")
        holder = self.reserved_by(nick)
        if holder is not None and holder != bare:
            raise StanzaError("conflict", "this nickname is reserved")
        if self.config.password and aff != "owner":
            given = muc_x.findtext(tag(ns.MUC, "password"))
            if given != self.config.password:
                raise StanzaError("not-authorized", "a password is required to enter")
        if existing is None:
            limit = self.config.max_users
            privileged = AFFILIATION_RANK[aff] >= AFFILIATION_RANK["admin"]
            if len(self.occupants) >= self.max_occupants or (
                limit and len(self.occupants) >= limit and not privileged
            ):
                raise StanzaError("service-unavailable", "the room is full", "wait")
        req = HistoryRequest.parse(muc_x.find(tag(ns.MUC, "history")))
        fx = Effects()
        extra = [CREATED] if created else []
        if raw_nick is not None and raw_nick != nick:
            extra.append(NICK_MODIFIED)
        if existing is not None:
            # Another session of the same user under the same nick (§7.2.8).
            before = self._payload_key(existing)
            existing.sessions[frm] = stanza
            existing.primary = frm
            self._by_real[frm] = existing
            if before != self._payload_key(existing):
                others = [s for s in existing.sessions if s != frm]
                self._broadcast(fx, existing, self_sessions=others)
            self._send_join_sequence(fx, existing, frm, stanza.get("id"), req, now, extra)
            return fx
        occ = Occupant(
            nick=nick,
            bare=bare,
            role=self.default_role(aff),
            occupant_id=self.occupant_id(bare),
            sessions={frm: stanza},
            primary=frm,
        )
        self.occupants[nick] = occ
        self._by_real[frm] = occ
        self._broadcast(fx, occ, include_self=False)
        self._send_join_sequence(fx, occ, frm, stanza.get("id"), req, now, extra)
        return fx

    def _change_nick(
        self, stanza: Element, frm: JID, occ: Occupant, new_nick: str, raw_nick: str | None
    ) -> Effects:
        """§7.6: unavailable with 303 from the old nick, then available from the new one."""
        if not is_valid_nick(new_nick):
            raise StanzaError("not-acceptable", "this nickname cannot be used")
        if new_nick in self.occupants:
            raise StanzaError("conflict", "this nickname is in use")
        holder = self.reserved_by(new_nick)
        if holder is not None and holder != occ.bare:
            raise StanzaError("conflict", "this nickname is reserved")
        fx = Effects()
        extra = [NICK_MODIFIED] if raw_nick is not None and raw_nick != new_nick else []
        if len(occ.sessions) > 1:
            # One session of a multi-session occupant leaves the shared nick for its own.
            old_presence = occ.sessions.pop(frm)
            if occ.primary == frm:
                occ.primary = next(iter(occ.sessions))
            gone = self._presence(
                occ,
                with_jid=True,
                ptype="unavailable",
                codes=[NICK_CHANGED, SELF],
                item_nick=new_nick,
                children=(),
            )
            del old_presence
            fx.out.append(copy_shallow(gone, to=str(frm)))
            new = Occupant(
                nick=new_nick,
                bare=occ.bare,
                role=occ.role,
                occupant_id=occ.occupant_id,
                sessions={frm: stanza},
                primary=frm,
            )
            self.occupants[new_nick] = new
            self._by_real[frm] = new
            self._broadcast(fx, new, self_codes=extra, self_id=stanza.get("id"))
            return fx
        self._broadcast(
            fx, occ, ptype="unavailable", codes=[NICK_CHANGED], item_nick=new_nick, children=()
        )
        del self.occupants[occ.nick]
        occ.nick = new_nick
        occ.sessions[frm] = stanza
        self.occupants[new_nick] = occ
        self._broadcast(fx, occ, self_codes=extra, self_id=stanza.get("id"))
        return fx

    def _leave(self, stanza: Element, frm: JID, now: float) -> Effects:
        occ = self._by_real.get(frm)
        if occ is None:
            return Effects()  # §17.3 item 5: unavailable from a non-occupant is ignored
        fx = Effects()
        status = [c for c in stanza if c.tag == "{jabber:client}status"]
        del self._by_real[frm]
        if len(occ.sessions) > 1:
            del occ.sessions[frm]
            was_primary = occ.primary == frm
            if was_primary:
                occ.primary = next(iter(occ.sessions))
            gone = self._presence(
                occ, with_jid=True, ptype="unavailable", role="none", codes=[SELF], children=status
            )
            fx.out.append(copy_shallow(gone, to=str(frm)))
            if was_primary:
                self._broadcast(fx, occ)
            return fx
        del self.occupants[occ.nick]
        self._broadcast(
            fx, occ, ptype="unavailable", role="none", children=status, self_sessions=[frm]
        )
        self._after_departure(fx)
        return fx

    def _after_departure(self, fx: Effects) -> None:
        if self.occupants:
            return
        if self.locked or not self.config.persistent:
            fx.closed = True

    def remove(
        self,
        fx: Effects,
        occ: Occupant,
        codes: Sequence[str],
        *,
        actor: str | None = None,
        reason: str | None = None,
        affiliation: str | None = None,
    ) -> None:
        """Take an occupant out (kick, ban, 321, 322, 333): everyone is told, with codes."""
        self.occupants.pop(occ.nick, None)
        for real in occ.sessions:
            self._by_real.pop(real, None)
        self._broadcast(
            fx,
            occ,
            ptype="unavailable",
            role="none",
            codes=codes,
            actor=actor,
            reason=reason,
            affiliation=affiliation,
            children=(),
            self_first=True,
        )
        self._after_departure(fx)

    def remove_session(self, real: JID) -> Effects:
        """A delivery error came back from ``real``: it is a ghost (§18.1, status 333)."""
        fx = Effects()
        occ = self._by_real.get(real)
        if occ is None:
            return fx
        if len(occ.sessions) > 1:
            del self._by_real[real]
            occ.sessions.pop(real)
            if occ.primary == real:
                occ.primary = next(iter(occ.sessions))
                self._broadcast(fx, occ)
            return fx
        self.remove(fx, occ, [ERROR_REMOVED])
        return fx

    def shutdown(self) -> Effects:
        """The service stops: each occupant gets its own unavailable with 110 and 332 (§11.2)."""
        fx = Effects()
        for occ in list(self.occupants.values()):
            el = self._presence(
                occ,
                with_jid=True,
                ptype="unavailable",
                role="none",
                codes=[SELF, SHUTDOWN],
                children=(),
            )
            for real in occ.sessions:
                fx.out.append(copy_shallow(el, to=str(real)))
        self.occupants.clear()
        self._by_real.clear()
        return fx

    def destroy(self, alternate: str | None, reason: str | None, password: str | None) -> Effects:
        """§10.9: one unavailable with <destroy/> to each occupant; the room is gone."""
        fx = Effects(closed=True, destroyed=True)
        d = Element(tag(ns.MUC_USER, "destroy"))
        if alternate:
            d.set("jid", alternate)
        if reason:
            SubElement(d, tag(ns.MUC_USER, "reason")).text = reason
        if password:
            SubElement(d, tag(ns.MUC_USER, "password")).text = password
        for occ in list(self.occupants.values()):
            el = self._presence(
                occ,
                with_jid=True,
                ptype="unavailable",
                role="none",
                affiliation="none",
                codes=[SELF],
                children=(),
                extra=[d],
            )
            for real in occ.sessions:
                fx.out.append(copy_shallow(el, to=str(real)))
        self.occupants.clear()
        self._by_real.clear()
        return fx

    # ------------------------------------------------------------------ messages
    def handle_groupchat(self, stanza: Element, frm: JID, now: float) -> Effects:
        """§7.4 (and §8.1 subject changes): reflect to every occupant, once per session."""
        occ = self._by_real.get(frm)
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in the room")
        if ROLE_RANK[occ.role] < ROLE_RANK["participant"]:
            raise StanzaError("forbidden", "you have no voice in this room")
        tags = {c.tag for c in stanza}
        is_subject = _SUBJECT in tags and _BODY not in tags and _THREAD not in tags
        if is_subject:
            allowed = occ.role == "moderator" or (
                self.config.change_subject and ROLE_RANK[occ.role] >= ROLE_RANK["participant"]
            )
            if not allowed:
                raise StanzaError("forbidden", "you may not change the subject of this room")
        fx = Effects()
        msg = make(
            "message",
            from_=self._nick_jid(occ.nick),
            type_="groupchat",
            id_=stanza.get("id") or new_id(),
        )
        for c in stanza:
            if c.tag in (_MUC_USER_X, _OCCUPANT_ID, _ERROR):
                continue
            if c.tag == _STANZA_ID and c.get("by") == self.name:
                continue  # XEP-0359 §5: never pass on a stanza-id claiming to be ours
            msg.append(c)
        msg.append(Element(_OCCUPANT_ID, {"id": occ.occupant_id}))
        archived = self.logging and should_archive(stanza)
        if archived:
            sid = self._ids()
            msg.append(Element(_STANZA_ID, {"id": sid, "by": self.name}))
            stored = copy_shallow(msg)
            stored.append(muc_user([Element(tag(ns.MUC_USER, "item"), {"jid": str(frm)})]))
            fx.archive.append(ArchiveItem(sid, stored, self._nick_jid(occ.nick), now))
        if is_subject:
            text = stanza.findtext(_SUBJECT) or ""
            self.subject = Subject(text, occ.nick, occ.occupant_id, now)
            fx.save = True
        elif _BODY in tags and not tags & {tag(ns.HINTS, "no-store")} and self.history.length:
            hist = copy_shallow(msg)
            hist.append(delay(self.name, now))
            entry = HistoryEntry(hist, now, len(serialize(hist)) + 48)
            self.history.append(entry)
            fx.history.append(entry)
        fx.out.append(
            Copies(msg, [str(real) for o in self.occupants.values() for real in o.sessions])
        )
        return fx

    def handle_private(self, stanza: Element, frm: JID, nick: str) -> Effects:
        """§7.5: a private message to ``room/nick``, to every session of that occupant."""
        mtype = stanza.get("type") or "normal"
        if mtype == "groupchat":
            raise StanzaError("bad-request", "private messages cannot be of type groupchat")
        occ = self._by_real.get(frm)
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in the room")
        target = self.occupants.get(nick)
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        allowed = {
            "anyone": True,
            "participants": ROLE_RANK[occ.role] >= ROLE_RANK["participant"],
            "moderators": occ.role == "moderator",
            "none": False,
        }[self.config.allow_pm]
        if not allowed:
            raise StanzaError("policy-violation", "private messages are not allowed here", "cancel")
        msg = make("message", from_=self._nick_jid(occ.nick), type_=mtype, id_=stanza.get("id"))
        for c in stanza:
            if c.tag not in (_MUC_USER_X, _OCCUPANT_ID, _ERROR):
                msg.append(c)
        msg.append(Element(_MUC_USER_X))
        msg.append(Element(_OCCUPANT_ID, {"id": occ.occupant_id}))
        fx = Effects()
        for real in target.sessions:
            fx.out.append(copy_shallow(msg, to=str(real)))
        return fx

    def handle_room_message(self, stanza: Element, frm: JID, now: float) -> Effects:
        """A non-groupchat message to the room: mediated invitations, declines, voice requests."""
        x = stanza.find(_MUC_USER_X)
        if x is not None:
            invites = x.findall(tag(ns.MUC_USER, "invite"))
            if invites:
                return self._invite(stanza, frm, invites, x.findtext(tag(ns.MUC_USER, "password")))
            declines = x.findall(tag(ns.MUC_USER, "decline"))
            if declines:
                return self._decline(stanza, frm, declines)
        form = stanza.find(tag(ns.DATA, "x"))
        if form is not None and _form_type(form) == ns.MUC_REQUEST:
            return self._voice_request(stanza, frm, form)
        if stanza.find(_BODY) is not None:
            raise StanzaError("bad-request", "send messages to the room as type groupchat")
        return Effects()

    def _invite(
        self, stanza: Element, frm: JID, invites: list[Element], _password: str | None
    ) -> Effects:
        """§7.8.2: the room forwards invitations; in members-only rooms it adds members."""
        bare = frm.bare
        aff = self.affiliation(bare)
        occ = self._by_real.get(frm)
        rank = AFFILIATION_RANK[aff]
        if occ is None and rank < AFFILIATION_RANK["admin"]:
            raise StanzaError("not-acceptable", "you are not in the room")
        adds_member = self.config.members_only
        if adds_member and rank < AFFILIATION_RANK["admin"]:
            if not (self.config.allow_invites and rank >= AFFILIATION_RANK["member"]):
                raise StanzaError("forbidden", "only admins may invite to this room")
        targets: list[tuple[JID, Element]] = []
        for inv in invites:
            try:
                targets.append((JID.parse(inv.get("to") or ""), inv))
            except InvalidJID:
                raise StanzaError("jid-malformed", "the invitee's address is not valid") from None
        fx = Effects()
        for invitee, inv in targets:
            if adds_member and self.affiliation(invitee.bare) == "none":
                self.set_affiliation(fx, invitee.bare, "member", actor=occ.nick if occ else None)
            m = make("message", to=invitee, from_=self.name, id_=stanza.get("id") or new_id())
            reason = inv.findtext(tag(ns.MUC_USER, "reason"))
            body = f"{bare} invites you to the room {self.name}"
            if reason:
                body += f": {reason}"
            SubElement(m, _BODY).text = body
            out_inv = Element(tag(ns.MUC_USER, "invite"), {"from": str(bare)})
            if reason:
                SubElement(out_inv, tag(ns.MUC_USER, "reason")).text = reason
            extra = []
            if self.config.password:
                pw = Element(tag(ns.MUC_USER, "password"))
                pw.text = self.config.password
                extra.append(pw)
            m.append(muc_user([out_inv], (), extra))
            fx.out.append(m)
        return fx

    def _decline(self, stanza: Element, frm: JID, declines: list[Element]) -> Effects:
        fx = Effects()
        for dec in declines:
            try:
                to = JID.parse(dec.get("to") or "")
            except InvalidJID:
                raise StanzaError("jid-malformed", "the inviter's address is not valid") from None
            m = make("message", to=to, from_=self.name, id_=stanza.get("id") or new_id())
            out = Element(tag(ns.MUC_USER, "decline"), {"from": str(frm.bare)})
            reason = dec.findtext(tag(ns.MUC_USER, "reason"))
            if reason:
                SubElement(out, tag(ns.MUC_USER, "reason")).text = reason
            m.append(muc_user([out]))
            fx.out.append(m)
        return fx

    def _voice_request(self, stanza: Element, frm: JID, form: Element) -> Effects:
        """§7.13 / §8.6: a visitor asks for voice; a moderator approves with the same form."""
        occ = self._by_real.get(frm)
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in the room")
        values = form_values(form)
        fx = Effects()
        if occ.role == "moderator" and "muc#request_allow" in values:
            if values["muc#request_allow"][:1] not in (["1"], ["true"]):
                return fx
            nick = (values.get("muc#roomnick") or [""])[0]
            target = self.occupants.get(nick)
            if target is not None and target.role == "visitor":
                target.role = "participant"
                self._broadcast(fx, target, actor=occ.nick)
            return fx
        if occ.role != "visitor" or not self.config.moderated:
            return fx
        approval = Element(tag(ns.DATA, "x"), {"type": "form"})
        SubElement(approval, tag(ns.DATA, "title")).text = "Voice request"
        SubElement(
            approval, tag(ns.DATA, "instructions")
        ).text = "To approve this request for voice, select the checkbox and submit the form."
        for var, ftype, label, value in (
            ("FORM_TYPE", "hidden", "", ns.MUC_REQUEST),
            ("muc#role", "list-single", "Requested role", "participant"),
            ("muc#jid", "jid-single", "User ID", str(frm)),
            ("muc#roomnick", "text-single", "Room nickname", occ.nick),
            ("muc#request_allow", "boolean", "Grant voice to this person?", "false"),
        ):
            f = SubElement(approval, tag(ns.DATA, "field"), {"var": var, "type": ftype})
            if label:
                f.set("label", label)
            SubElement(f, tag(ns.DATA, "value")).text = value
        for mod in self.occupants.values():
            if mod.role != "moderator":
                continue
            for real in mod.sessions:
                m = make("message", to=real, from_=self.name, id_=new_id())
                m.append(approval)
                fx.out.append(m)
        return fx

    # ------------------------------------------------------------------ iq to occupants
    def handle_occupant_iq(self, iq: Element, frm: JID, nick: str) -> Effects:
        """An IQ to ``room/nick``: self-ping answered here (XEP-0410), others proxied (§17.4)."""
        itype = iq.get("type")
        occ = self._by_real.get(frm)
        if itype in ("result", "error"):
            key = iq.get("id") or ""
            entry = self._iq_map.pop(key, None)
            if entry is None:
                return Effects()
            requester, orig_id, target_nick = entry
            target = self.occupants.get(target_nick)
            if target is None or frm not in target.sessions:
                return Effects()
            reply = copy_shallow(iq, to=requester, from_=self._nick_jid(target_nick), id=orig_id)
            return Effects(out=[reply])
        if occ is None:
            if len(iq) and iq[0].tag == tag(ns.DISCO_INFO, "query"):
                raise StanzaError("bad-request", "you are not in the room")
            raise StanzaError("not-acceptable", "you are not in the room")
        target = self.occupants.get(nick)
        payload = iq[0] if len(iq) else None
        if payload is not None and payload.tag == tag(ns.PING, "ping") and target is occ:
            reply = make("iq", to=frm, from_=self._nick_jid(nick), type_="result", id_=iq.get("id"))
            return Effects(out=[reply])
        if target is None:
            raise StanzaError("item-not-found", "no occupant has this nickname")
        key = new_id()
        self._iq_map[key] = (str(frm), iq.get("id") or "", target.nick)
        while len(self._iq_map) > _IQ_MAP_SIZE:
            self._iq_map.popitem(last=False)
        fwd = copy_shallow(iq, to=str(target.real), from_=self._nick_jid(occ.nick), id=key)
        return Effects(out=[fwd])

    # ------------------------------------------------------------------ roles and affiliations
    def set_role(
        self,
        fx: Effects,
        occ: Occupant,
        role: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        if role == "none":
            self.remove(fx, occ, [KICKED], actor=actor, reason=reason)
            return
        occ.role = role
        self._broadcast(fx, occ, actor=actor, reason=reason)

    def set_affiliation(
        self,
        fx: Effects,
        bare: JID,
        affiliation: str,
        *,
        nick: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Change a bare JID's affiliation; occupants of that user are updated or removed."""
        old = self.affiliation(bare)
        current = self.affiliations.get(bare)
        if affiliation == "none":
            self.affiliations.pop(bare, None)
        else:
            reserved = current.nick if current is not None and nick is None else (nick or "")
            if affiliation == "outcast":
                reserved = ""
            self.affiliations[bare] = Affiliation(affiliation, reserved, reason or "")
        fx.affiliations.add(bare)
        domain_ban = affiliation == "outcast" and not bare.local
        for occ in [
            o
            for o in self.occupants.values()
            if o.bare == bare
            or (
                domain_ban
                and o.bare.domain == bare.domain
                and self.affiliation(o.bare) == "outcast"
            )
        ]:
            if affiliation == "outcast":
                self.remove(fx, occ, [BANNED], actor=actor, reason=reason, affiliation="outcast")
            elif self.config.members_only and affiliation == "none":
                self.remove(fx, occ, [AFFILIATION_REMOVED], actor=actor, reason=reason)
            else:
                if affiliation in ("owner", "admin"):
                    occ.role = "moderator"
                elif old in ("owner", "admin") or occ.role == "visitor":
                    occ.role = self.default_role(affiliation)
                self._broadcast(fx, occ, actor=actor, reason=reason)

    # ------------------------------------------------------------------ configuration
    def apply_config(self, new: RoomConfig) -> Effects:
        """Take a submitted configuration: unlock, notify occupants (§10.2.1), apply 322."""
        fx = Effects(save=True)
        old = self.config
        self.config = new
        self.history.resize(new.history_length)
        if self.locked:
            self.locked = False
        else:
            codes: list[str] = []
            if old.logging != new.logging:
                codes.append("170" if new.logging else "171")
            if old.whois != new.whois:
                codes.append("172" if new.non_anonymous else "173")
            others = {
                k
                for k in RoomConfig.__dataclass_fields__
                if k not in ("logging", "whois") and getattr(old, k) != getattr(new, k)
            }
            if others:
                codes.append("104")
            if codes:
                m = make("message", from_=self.name, type_="groupchat", id_=new_id())
                m.append(muc_user((), codes))
                for o in self.occupants.values():
                    for real in o.sessions:
                        fx.out.append(copy_shallow(m, to=str(real)))
        if new.members_only and not old.members_only:
            for occ in list(self.occupants.values()):
                if AFFILIATION_RANK[self.affiliation(occ.bare)] < AFFILIATION_RANK["member"]:
                    self.remove(fx, occ, [MEMBERS_ONLY_REMOVED])
        if not self.occupants and not new.persistent:
            fx.closed = True
        return fx

    # ------------------------------------------------------------------ disco
    def features(self) -> list[str]:
        c = self.config
        feats = [
            ns.MUC,
            ns.MUC_STABLE_ID,
            ns.MUC_SELF_PING,
            ns.OCCUPANT_ID,
            ns.DISCO_INFO,
            ns.DISCO_ITEMS,
            ns.SID,
            "muc_public" if c.public else "muc_hidden",
            "muc_persistent" if c.persistent else "muc_temporary",
            "muc_membersonly" if c.members_only else "muc_open",
            "muc_moderated" if c.moderated else "muc_unmoderated",
            "muc_nonanonymous" if c.non_anonymous else "muc_semianonymous",
            "muc_passwordprotected" if c.password else "muc_unsecured",
        ]
        if self.logging:
            feats.append(ns.MAM)
        return feats

    def info_form(self) -> Element:
        """The ``muc#roominfo`` form (XEP-0045 §6.4, XEP-0128)."""
        c = self.config
        form = Element(tag(ns.DATA, "x"), {"type": "result"})
        fields: list[tuple[str, str, list[str]]] = [
            ("FORM_TYPE", "", [ns.MUC_ROOMINFO]),
            ("muc#roominfo_description", "Description", [c.description]),
            ("muc#roomconfig_roomname", "Name", [c.name]),
            ("muc#roominfo_occupants", "Number of occupants", [str(len(self.occupants))]),
            (
                "muc#roominfo_subject",
                "Current subject",
                [self.subject.text if self.subject else ""],
            ),
            ("muc#roomconfig_changesubject", "Subject can be changed", [_b(c.change_subject)]),
            ("muc#roominfo_lang", "Language of discussion", [c.lang]),
            ("muc#maxhistoryfetch", "Messages of history sent on entry", [str(c.history_length)]),
            ("muc#roomconfig_allowinvites", "Members may invite", [_b(c.allow_invites)]),
            ("muc#roomconfig_allowpm", "Who may send private messages", [c.allow_pm]),
            ("muc#roomconfig_whois", "Who may discover real JIDs", [c.whois]),
        ]
        for var, label, values in fields:
            f = SubElement(form, tag(ns.DATA, "field"), {"var": var})
            if var == "FORM_TYPE":
                f.set("type", "hidden")
            else:
                f.set("label", label)
            for v in values:
                SubElement(f, tag(ns.DATA, "value")).text = v
        return form


def _b(v: bool) -> str:
    return "true" if v else "false"


def _form_type(form: Element) -> str | None:
    values = form_values(form).get("FORM_TYPE")
    return values[0] if values else None
