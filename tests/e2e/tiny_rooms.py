"""A tiny, independent group chat service for tests: an XEP-0114 external component written with
slixmpp's ``ComponentXMPP`` that speaks just enough XEP-0045 (join in §7.1 order, history with
``since``/``maxstanzas``, subject, group chat with stanza-ids, private messages, nick changes,
leaving, kicks with any status code, self-ping answered by the room).

It shares no code with minimix's own group chat service: account-join must work with rooms it
only reaches through the router, as it will with rooms on other servers.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

MUC = "http://jabber.org/protocol/muc"
USER = "http://jabber.org/protocol/muc#user"
PING = "urn:xmpp:ping"
DISCO = "http://jabber.org/protocol/disco#info"

_ids = itertools.count(1)


def _stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(s: str) -> float:
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def local(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


@dataclass
class Line:
    stamp: float
    sid: str
    nick: str
    body: str


@dataclass
class TinyRoom:
    jid: str
    occupants: dict[str, str] = field(default_factory=dict)  # nick -> real JID ('' for bots)
    history: list[Line] = field(default_factory=list)
    subject: str = "Tiny room"

    def nick_of(self, real: str) -> str | None:
        return next((n for n, r in self.occupants.items() if r == real), None)


class TinyRoomService(slixmpp.ComponentXMPP):
    """The room service. Tests drive it with :meth:`post`, :meth:`kick` and ``hold_joins``."""

    def __init__(self, domain: str, secret: str) -> None:
        super().__init__(domain, secret)
        self.domain = domain
        self.rooms: dict[str, TinyRoom] = {}
        self.received: list[ET.Element] = []
        self.hold_joins = False
        self.held: list[ET.Element] = []
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()
        self._changed = asyncio.Event()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        for name in ("presence", "message", "iq"):
            self.register_handler(Callback(f"tiny-{name}", StanzaPath(name), self._incoming))

    def _started(self, _: Any) -> None:
        self.gone.clear()
        self.ready.set()

    async def reconnect(self, port: int) -> None:
        """Connect again (to a restarted server)."""
        self.ready.clear()
        self.connect("127.0.0.1", port)
        await asyncio.wait_for(self.ready.wait(), 10)

    # ------------------------------------------------------------------ test controls
    def room(self, name: str) -> TinyRoom:
        jid = f"{name}@{self.domain}"
        if jid not in self.rooms:
            self.rooms[jid] = TinyRoom(jid)
        return self.rooms[jid]

    def joins_from(self, real: str) -> int:
        return sum(
            1
            for el in self.received
            if local(el) == "presence"
            and el.get("from") == real
            and el.get("type") is None
            and el.find(f"{{{MUC}}}x") is not None
        )

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("the tiny room service never saw what the test waits for")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))
            except TimeoutError:
                pass

    def post(self, room: TinyRoom, nick: str, body: str) -> None:
        """A message from an occupant living on the room's own server (a bot)."""
        room.occupants.setdefault(nick, "")
        self._groupchat(room, nick, body, None)

    def kick(self, room: TinyRoom, nick: str, codes: tuple[int, ...], reason: str = "") -> None:
        real = room.occupants.pop(nick, "")
        why = f"<reason>{escape(reason)}</reason>" if reason else ""
        status = "".join(f"<status code='{c}'/>" for c in codes)
        if real:
            self._send(
                f"<presence from='{room.jid}/{nick}' to='{real}' type='unavailable'>"
                f"<x xmlns='{USER}'><item affiliation='none' role='none'>{why}</item>"
                f"{status}<status code='110'/></x></presence>"
            )
        for other in room.occupants.values():
            if other:
                self._send(
                    f"<presence from='{room.jid}/{nick}' to='{other}' type='unavailable'>"
                    f"<x xmlns='{USER}'><item affiliation='none' role='none'/>{status}</x>"
                    "</presence>"
                )

    def send_raw_stanza(self, xml: str) -> None:
        """Anything the room (or an occupant through it) sends, as given."""
        self._send(xml)

    def release_joins(self) -> None:
        self.hold_joins = False
        held, self.held = self.held, []
        for el in held:
            self._presence(el)

    # ------------------------------------------------------------------ protocol
    def _send(self, xml: str) -> None:
        if self.transport is not None:  # while the server is unreachable, deliveries are lost
            self.send_raw(xml)

    def _incoming(self, stanza: Any) -> None:
        el: ET.Element = stanza.xml
        self.received.append(el)
        self._changed.set()
        kind = local(el)
        if kind == "presence":
            if self.hold_joins and el.find(f"{{{MUC}}}x") is not None:
                self.held.append(el)
                return
            self._presence(el)
        elif kind == "message":
            self._message(el)
        elif kind == "iq":
            self._iq(el)

    def _error(self, el: ET.Element, condition: str, etype: str = "cancel") -> None:
        kind = local(el)
        if el.get("type") in ("error", "result"):
            return
        extra = f"<x xmlns='{MUC}'/>" if kind == "presence" else ""
        pid = f" id={quoteattr(el.get('id', ''))}" if el.get("id") else ""
        self._send(
            f"<{kind} from={quoteattr(el.get('to', ''))} to={quoteattr(el.get('from', ''))} "
            f"type='error'{pid}>{extra}<error type='{etype}'>"
            f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></{kind}>"
        )

    def _presence(self, el: ET.Element) -> None:
        to, real = el.get("to", ""), el.get("from", "")
        jid, _, nick = to.partition("/")
        room = self.rooms.get(jid)
        if room is None or el.get("type") not in (None, "unavailable"):
            if room is None and el.get("type") is None:
                self._error(el, "item-not-found")
            return
        current = room.nick_of(real)
        if el.get("type") == "unavailable":
            if current is not None:
                del room.occupants[current]
                self._send(self._occupant(room, current, real, real, "unavailable", (110,)))
                for other in room.occupants.values():
                    if other:
                        self._send(self._occupant(room, current, real, other, "unavailable"))
            return
        if not nick:
            self._error(el, "jid-malformed", "modify")
            return
        holder = room.occupants.get(nick)
        if holder is not None and holder != real:
            self._error(el, "conflict")
            return
        if current is not None and current != nick:
            # Nick change (§7.6): unavailable 303 from the old nick, available from the new one.
            del room.occupants[current]
            room.occupants[nick] = real
            for other in room.occupants.values():
                if not other:
                    continue
                mine = (110,) if other == real else ()
                self._send(
                    self._occupant(room, current, real, other, "unavailable", (303, *mine), nick)
                )
                self._send(self._occupant(room, nick, real, other, None, mine))
            return
        if current == nick and el.find(f"{{{MUC}}}x") is None:
            for other in room.occupants.values():
                if other:
                    mine = (110,) if other == real else ()
                    self._send(self._occupant(room, nick, real, other, None, mine))
            return
        # A join (§7.1): others, self (110, the join's id), history, subject.
        new = current is None
        room.occupants[nick] = real
        for n, r in room.occupants.items():
            if n != nick:
                self._send(self._occupant(room, n, r, real, None))
        self._send(self._occupant(room, nick, real, real, None, (110, 100), pid=el.get("id")))
        hist = el.find(f"{{{MUC}}}x/{{{MUC}}}history")
        lines = room.history
        if hist is not None and hist.get("since"):
            since = _parse_stamp(hist.get("since", ""))
            lines = [h for h in lines if h.stamp >= since]
        if hist is not None and hist.get("maxstanzas") is not None:
            n = int(hist.get("maxstanzas", "0"))
            lines = lines[-n:] if n else []
        if hist is not None and hist.get("maxchars") == "0":
            lines = []
        for h in lines:
            self._send(
                f"<message from='{room.jid}/{h.nick}' to='{real}' type='groupchat'>"
                f"<body>{escape(h.body)}</body>"
                f"<delay xmlns='urn:xmpp:delay' from='{room.jid}' stamp='{_stamp(h.stamp)}'/>"
                f"<stanza-id xmlns='urn:xmpp:sid:0' by='{room.jid}' id='{h.sid}'/></message>"
            )
        self._send(
            f"<message from='{room.jid}' to='{real}' type='groupchat'>"
            f"<subject>{escape(room.subject)}</subject></message>"
        )
        if new:
            for other in room.occupants.values():
                if other and other != real:
                    self._send(self._occupant(room, nick, real, other, None))

    def _occupant(
        self,
        room: TinyRoom,
        nick: str,
        real: str,
        to: str,
        ptype: str | None,
        codes: tuple[int, ...] = (),
        new_nick: str | None = None,
        pid: str | None = None,
    ) -> str:
        t = f" type='{ptype}'" if ptype else ""
        i = f" id={quoteattr(pid)}" if pid else ""
        role = "none" if ptype == "unavailable" else "participant"
        jid = f" jid={quoteattr(real)}" if real else ""
        nn = f" nick={quoteattr(new_nick)}" if new_nick else ""
        status = "".join(f"<status code='{c}'/>" for c in codes)
        return (
            f"<presence from={quoteattr(room.jid + '/' + nick)} to={quoteattr(to)}{t}{i}>"
            f"<x xmlns='{USER}'><item affiliation='member' role='{role}'{jid}{nn}/>{status}</x>"
            "</presence>"
        )

    def _groupchat(self, room: TinyRoom, nick: str, body: str, mid: str | None) -> None:
        line = Line(time.time(), f"tiny{next(_ids)}", nick, body)
        room.history.append(line)
        i = f" id={quoteattr(mid)}" if mid else ""
        for other in room.occupants.values():
            if other:
                self._send(
                    f"<message from={quoteattr(room.jid + '/' + nick)} to={quoteattr(other)} "
                    f"type='groupchat'{i}><body>{escape(body)}</body>"
                    f"<stanza-id xmlns='urn:xmpp:sid:0' by='{room.jid}' id='{line.sid}'/></message>"
                )

    def _message(self, el: ET.Element) -> None:
        to, real = el.get("to", ""), el.get("from", "")
        jid, _, nick = to.partition("/")
        room = self.rooms.get(jid)
        if room is None or el.get("type") == "error":
            return
        sender = room.nick_of(real)
        if sender is None:
            self._error(el, "not-acceptable", "modify")
            return
        body = el.findtext("{jabber:component:accept}body") or el.findtext("{jabber:client}body")
        if not nick and el.get("type") == "groupchat":
            self._groupchat(room, sender, body or "", el.get("id"))
            return
        target = room.occupants.get(nick)
        if target is None:
            self._error(el, "item-not-found")
            return
        if target:
            self._send(
                f"<message from={quoteattr(jid + '/' + sender)} to={quoteattr(target)} "
                f"type='chat'><body>{escape(body or '')}</body><x xmlns='{USER}'/></message>"
            )

    def _iq(self, el: ET.Element) -> None:
        if el.get("type") not in ("get", "set"):
            return
        to, real = el.get("to", ""), el.get("from", "")
        jid, _, nick = to.partition("/")
        room = self.rooms.get(jid)
        payload = next(iter(el), None)
        if room is None or payload is None:
            self._error(el, "item-not-found")
            return
        if payload.tag == f"{{{PING}}}ping" and nick:
            if room.occupants.get(nick) == real:
                iid = quoteattr(el.get("id", ""))
                self._send(
                    f"<iq type='result' from={quoteattr(to)} to={quoteattr(real)} id={iid}/>"
                )
            else:
                self._error(el, "not-acceptable")
            return
        if payload.tag == f"{{{DISCO}}}query" and not nick:
            self._send(
                f"<iq type='result' from={quoteattr(to)} to={quoteattr(real)} "
                f"id={quoteattr(el.get('id', ''))}><query xmlns='{DISCO}'>"
                "<identity category='conference' type='text' name='Tiny'/>"
                f"<feature var='{MUC}'/></query></iq>"
            )
            return
        self._error(el, "service-unavailable")


async def start_tiny_rooms(domain: str, secret: str, port: int) -> TinyRoomService:
    service = TinyRoomService(domain, secret)
    service.connect("127.0.0.1", port)
    await asyncio.wait_for(service.ready.wait(), 10)
    return service
