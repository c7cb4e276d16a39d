"""XEP-0045 shapes account-join reads and builds: status codes, history requests, synthesized
self-presences, error presences, XEP-0359 stanza-ids and XEP-0082 timestamps.

Pure functions over elements; nothing here edits an element it was given (children are shared
between copies, see :func:`~minimix.protocol.stanza.copy_shallow`).
"""

from __future__ import annotations

from dataclasses import dataclass

from minimix.protocol import ns
from minimix.protocol.dates import format_datetime, parse_datetime
from minimix.protocol.jid import JID
from minimix.protocol.stanza import StanzaError, make
from minimix.protocol.xml import Element, SubElement, tag

MUC_X = tag(ns.MUC, "x")
USER_X = tag(ns.MUC_USER, "x")
STATUS = tag(ns.MUC_USER, "status")
ITEM = tag(ns.MUC_USER, "item")
DESTROY = tag(ns.MUC_USER, "destroy")
STANZA_ID = tag(ns.SID, "stanza-id")
ORIGIN_ID = tag(ns.SID, "origin-id")
DELAY = tag(ns.DELAY, "delay")
PING = tag(ns.PING, "ping")
SUBJECT = "{jabber:client}subject"
BODY = "{jabber:client}body"
SHOW = "{jabber:client}show"
STATUS_TEXT = "{jabber:client}status"
ERROR = "{jabber:client}error"

# XEP-0045 status codes.
SELF = 110
NON_ANONYMOUS = 100
LOGGING = 170
CREATED = 201
NICK_ASSIGNED = 210
NICK_CHANGED = 303
BANNED = 301
KICKED = 307
AFFILIATION_LOST = 321
MEMBERS_ONLY = 322
SHUTDOWN = 332
ERROR_KICK = 333
REMOVALS = frozenset((BANNED, KICKED, AFFILIATION_LOST, MEMBERS_ONLY))
TRANSIENT_REMOVALS = frozenset((SHUTDOWN, ERROR_KICK))
JOIN_CODES_KEPT = (NON_ANONYMOUS, LOGGING)

# The order a room reports availability (XEP-0045 §7.7; RFC 6121 §4.7.2.1): most available first.
SHOW_RANK = {"chat": 0, None: 1, "dnd": 2, "away": 3, "xa": 4}


def user_x(stanza: Element) -> Element | None:
    return stanza.find(USER_X)


def status_codes(stanza: Element) -> frozenset[int]:
    x = stanza.find(USER_X)
    if x is None:
        return frozenset()
    out: set[int] = set()
    for s in x.findall(STATUS):
        try:
            out.add(int(s.get("code", "")))
        except ValueError:
            continue
    return frozenset(out)


def is_destroy(stanza: Element) -> bool:
    x = stanza.find(USER_X)
    return x is not None and x.find(DESTROY) is not None


def item_of(stanza: Element) -> Element | None:
    x = stanza.find(USER_X)
    return x.find(ITEM) if x is not None else None


def affiliation_of(stanza: Element | None) -> str:
    item = item_of(stanza) if stanza is not None else None
    return item.get("affiliation", "none") if item is not None else "none"


def is_join(presence: Element) -> bool:
    """An XEP-0045 §7.2 join: available presence carrying ``<x xmlns='…/muc'/>``."""
    return presence.get("type") is None and presence.find(MUC_X) is not None


def join_password(presence: Element) -> str | None:
    x = presence.find(MUC_X)
    if x is None:
        return None
    p = x.find(tag(ns.MUC, "password"))
    return (p.text or "") if p is not None else None


def show_and_status(presence: Element) -> tuple[str | None, str | None]:
    show = presence.findtext(SHOW)
    show = show.strip() if show else None
    if show not in SHOW_RANK:
        show = None
    return show, presence.findtext(STATUS_TEXT)


def is_ping(iq: Element) -> bool:
    return iq.get("type") == "get" and len(iq) == 1 and iq[0].tag == PING


def is_subject_only(message: Element) -> bool:
    return message.find(SUBJECT) is not None and message.find(BODY) is None


# --------------------------------------------------------------------------- time


format_stamp = format_datetime
parse_stamp = parse_datetime


def delay_stamp(stanza: Element) -> float | None:
    d = stanza.find(DELAY)
    return parse_stamp(d.get("stamp")) if d is not None else None


# --------------------------------------------------------------------------- history


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """A client's ``<history/>`` (XEP-0045 §7.2.14). ``None`` fields were not given."""

    maxchars: int | None = None
    maxstanzas: int | None = None
    seconds: int | None = None
    since: float | None = None

    @staticmethod
    def of_join(presence: Element, default_stanzas: int) -> HistoryRequest:
        x = presence.find(MUC_X)
        h = x.find(tag(ns.MUC, "history")) if x is not None else None
        if h is None:
            return HistoryRequest(maxstanzas=default_stanzas)

        def number(name: str) -> int | None:
            v = h.get(name)
            if v is None:
                return None
            try:
                return max(0, int(v))
            except ValueError:
                return None

        return HistoryRequest(
            number("maxchars"), number("maxstanzas"), number("seconds"), parse_stamp(h.get("since"))
        )

    @property
    def none_wanted(self) -> bool:
        return self.maxchars == 0 or self.maxstanzas == 0

    def start(self, now: float) -> float | None:
        """The earliest stamp wanted (``since`` and ``seconds`` combined: the later one)."""
        starts = [s for s in (self.since, now - self.seconds if self.seconds else None) if s]
        return max(starts) if starts else None

    def wants_more_than(self, stanzas: int) -> bool:
        if self.none_wanted:
            return False
        if self.since is not None or self.seconds is not None:
            return True
        return self.maxstanzas is not None and self.maxstanzas > stanzas

    def element(self) -> Element:
        attrs: dict[str, str] = {}
        if self.maxchars is not None:
            attrs["maxchars"] = str(self.maxchars)
        if self.maxstanzas is not None:
            attrs["maxstanzas"] = str(self.maxstanzas)
        if self.seconds is not None:
            attrs["seconds"] = str(self.seconds)
        if self.since is not None:
            attrs["since"] = format_stamp(self.since)
        return Element(tag(ns.MUC, "history"), attrs)


# --------------------------------------------------------------------------- builders


def self_presence_for(
    cached: Element, to: JID, id_: str | None, codes: list[int], extra: tuple[Element, ...] = ()
) -> Element:
    """A client's copy of the account's self-presence with its own id and status codes."""
    attrs = {k: v for k, v in cached.attrib.items() if k not in ("to", "id")}
    attrs["to"] = str(to)
    if id_ is not None:
        attrs["id"] = id_
    out = Element(cached.tag, attrs)
    out.text = cached.text
    for c in cached:
        if c.tag == USER_X:
            x = Element(USER_X, dict(c.attrib))
            x.extend(k for k in c if k.tag != STATUS)
            for code in codes:
                SubElement(x, STATUS, {"code": str(code)})
            out.append(x)
        else:
            out.append(c)
    out.extend(extra)
    return out


def self_unavailable(
    occupant: JID,
    to: JID,
    affiliation: str,
    codes: tuple[int, ...] = (SELF,),
    id_: str | None = None,
    reason: str | None = None,
) -> Element:
    """``<presence type='unavailable'>`` telling a client it is out (XEP-0045 §7.14)."""
    p = make("presence", to=to, from_=occupant, type_="unavailable", id_=id_)
    x = SubElement(p, USER_X)
    item = SubElement(x, ITEM, {"affiliation": affiliation, "role": "none"})
    if reason:
        SubElement(item, tag(ns.MUC_USER, "reason")).text = reason
    for code in codes:
        SubElement(x, STATUS, {"code": str(code)})
    return p


def occupant_gone(cached: Element) -> Element:
    """The unavailable presence of an occupant that vanished from the room during a rejoin."""
    p = make("presence", from_=cached.get("from"), type_="unavailable")
    x = SubElement(p, USER_X)
    SubElement(x, ITEM, {"affiliation": affiliation_of(cached), "role": "none"})
    return p


def join_error(occupant: JID, to: JID, id_: str | None, error: Element) -> Element:
    """A join refused: ``<presence type='error'>`` echoing ``<x xmlns='…/muc'/>`` (§7.2.6ff)."""
    p = make("presence", to=to, from_=occupant, type_="error", id_=id_)
    SubElement(p, MUC_X)
    p.append(error)
    return p


def error_element(condition: str, error_type: str | None = None, by: str | None = None) -> Element:
    return StanzaError(condition, error_type=error_type, by=by).to_element()


def empty_subject(room: JID, to: JID) -> Element:
    m = make("message", to=to, from_=room, type_="groupchat")
    SubElement(m, SUBJECT)
    return m


# --------------------------------------------------------------------------- stanza-ids


def stanza_id_by(stanza: Element, by: str) -> str | None:
    for sid in stanza.findall(STANZA_ID):
        if sid.get("by") == by:
            return sid.get("id")
    return None


def restamped(stanza: Element, strip_by: str, add: tuple[Element, ...] = ()) -> Element:
    """A copy without stanza-ids claiming ``by=strip_by`` (XEP-0359 §4), with ``add`` appended."""
    out = Element(stanza.tag, dict(stanza.attrib))
    out.text = stanza.text
    out.extend(c for c in stanza if not (c.tag == STANZA_ID and c.get("by") == strip_by))
    out.extend(add)
    return out


def stanza_id(id_: str, by: str) -> Element:
    return Element(STANZA_ID, {"id": id_, "by": by})


def delay(stamp: float, from_: str) -> Element:
    return Element(DELAY, {"stamp": format_stamp(stamp), "from": from_})
