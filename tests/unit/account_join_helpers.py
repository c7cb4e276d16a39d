"""Stanza builders and action filters for the account-join state machine tests (no sockets)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from minimix.extensions.account_join import machine as m
from minimix.extensions.account_join.machine import Occupancy, Settings
from minimix.protocol.jid import JID
from minimix.protocol.stanza import copy_shallow
from minimix.protocol.xml import Element, parse_element, serialize

ACCOUNT = JID.parse("alice@localhost")
A = JID.parse("alice@localhost/phone")
B = JID.parse("alice@localhost/laptop")
C = JID.parse("alice@localhost/tablet")
ROOM = JID.parse("room@conference.localhost")
MUC = "http://jabber.org/protocol/muc"
USER = "http://jabber.org/protocol/muc#user"
NOW = 1_700_000_000.0


def make_occupancy(**settings: float) -> Occupancy:
    counter = itertools.count(1)
    return Occupancy(
        ACCOUNT,
        ROOM,
        "alice",
        Settings(**settings),  # type: ignore[arg-type]
        ids=lambda: f"id{next(counter)}",
        clock=lambda: NOW,
    )


def x(text: str) -> Element:
    return parse_element(text)


def join(
    client: JID, nick: str = "alice", id_: str = "j1", inner: str = "", extra: str = ""
) -> Element:
    return x(
        f"<presence from='{client}' to='{ROOM}/{nick}' id='{id_}'>"
        f"<x xmlns='{MUC}'>{inner}</x>{extra}</presence>"
    )


def occupant(
    nick: str,
    codes: Iterable[int] = (),
    aff: str = "member",
    role: str = "participant",
    type_: str | None = None,
    id_: str | None = None,
    item_extra: str = "",
    to: JID = ACCOUNT,
    x_extra: str = "",
) -> Element:
    t = f" type='{type_}'" if type_ else ""
    i = f" id='{id_}'" if id_ else ""
    status = "".join(f"<status code='{c}'/>" for c in codes)
    return x(
        f"<presence from='{ROOM}/{nick}' to='{to}'{t}{i}><x xmlns='{USER}'>"
        f"<item affiliation='{aff}' role='{role}'{item_extra}/>{x_extra}{status}</x></presence>"
    )


def self_presence(nick: str = "alice", codes: Iterable[int] = (110,), **kw: str) -> Element:
    return occupant(
        nick, codes, aff=kw.get("aff", "owner"), role=kw.get("role", "moderator"), id_=kw.get("id_")
    )


def error_presence(
    nick: str, condition: str, etype: str = "cancel", id_: str | None = None
) -> Element:
    i = f" id='{id_}'" if id_ else ""
    return x(
        f"<presence from='{ROOM}/{nick}' to='{ACCOUNT}' type='error'{i}><x xmlns='{MUC}'/>"
        f"<error type='{etype}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        "</presence>"
    )


def subject(text: str = "Welcome", nick: str = "bob") -> Element:
    return x(
        f"<message from='{ROOM}/{nick}' to='{ACCOUNT}' type='groupchat'><subject>{text}</subject>"
        f"<delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='2023-11-14T22:00:00Z'/></message>"
    )


def groupchat(
    nick: str, body: str, sid: str | None = None, delay: str | None = None, extra: str = ""
) -> Element:
    s = f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='{sid}'/>" if sid else ""
    d = f"<delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='{delay}'/>" if delay else ""
    return x(
        f"<message from='{ROOM}/{nick}' to='{ACCOUNT}' type='groupchat' id='m-{sid}'>"
        f"<body>{body}</body>{d}{s}{extra}</message>"
    )


# --------------------------------------------------------------------------- action filters


def to_room(actions: list[m.Action]) -> list[Element]:
    return [a.stanza for a in actions if isinstance(a, m.ToRoom)]


def to_client(actions: list[m.Action], client: JID) -> list[Element]:
    """What one client receives, in order (single sends and fan-outs)."""
    out: list[Element] = []
    for a in actions:
        if isinstance(a, m.SendPresences) and a.client == client:
            out.extend(copy_shallow(p, to=str(client)) for p in a.presences)
        elif (
            (isinstance(a, m.ToClient) and a.client == client)
            or (isinstance(a, m.FanOut) and client in a.clients)
            or (isinstance(a, m.ArchiveGroupchat) and client in a.clients)
            or (isinstance(a, m.ReceivedPrivate) and client in a.clients)
        ):
            out.append(a.stanza)
    return out


def kinds_for(actions: list[m.Action], client: JID) -> list[str]:
    """A readable sequence: 'occupant:bob', 'self', 'history', 'subject', ..."""
    out: list[str] = []
    for a in actions:
        if isinstance(a, m.SendHistory) and a.client == client:
            out.append("history")
            continue
        for el in to_client([a], client):
            tagname = el.tag.split("}")[1]
            if tagname == "presence":
                codes = {s.get("code") for s in el.iter(f"{{{USER}}}status")}
                nick = (el.get("from") or "").split("/", 1)[-1]
                out.append("self" if "110" in codes else f"occupant:{nick}")
            elif tagname == "message" and el.find("{jabber:client}subject") is not None:
                out.append("subject")
            else:
                out.append(tagname)
    return out


def codes_of(el: Element) -> set[int]:
    return {int(s.get("code", "0")) for s in el.iter(f"{{{USER}}}status")}


def timers(actions: list[m.Action]) -> dict[str, float]:
    return {a.name: a.delay for a in actions if isinstance(a, m.StartTimer)}


def text(el: Element) -> str:
    return serialize(el)


def bring_to_joined(occ: Occupancy, client: JID = A, id_: str = "j1") -> list[m.Action]:
    """Client joins an idle room; the room answers with bob, the account's self-presence,
    one history message and the subject. Returns every action of the sequence."""
    acts = occ.client_join(client, join(client, id_=id_))
    acts += occ.room_presence(occupant("bob"))
    acts += occ.room_presence(self_presence(codes=(110, 100, 170)))
    acts += occ.room_message(groupchat("bob", "earlier", "r1", delay="2023-11-14T21:00:00Z"))
    acts += occ.room_message(subject())
    return acts
