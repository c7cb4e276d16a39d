"""XEP-0352 Client State Indication: quiet streams for clients in the background.

While a client says it is ``<inactive/>``, stanzas that do not need its attention now are held
back: presence updates (only the newest per sender is kept), chat states, receipts and markers,
PEP notifications, and group chat that does not mention the client's nick. Anything important
(a message with a body, an invitation, a subscription request, an error, a mention) goes out
at once, after what was held, so order is kept. IQs pass at once without flushing (a keepalive
ping does not wake the whole queue). ``<active/>`` flushes everything.

Held group chat with a body waits at most ``max_delay`` seconds; at most ``max_held`` stanzas
wait at all. A resumed stream (XEP-0198) starts active again (XEP-0352 §4.2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Hooks
from minimix.core.session import Prepared, Session
from minimix.extensions.roster import ClientAvailable
from minimix.protocol import ns
from minimix.protocol.jid import try_parse
from minimix.protocol.stanza import copy_shallow, stanza_type
from minimix.protocol.xml import Element, local_name, tag

_ACTIVE = tag(ns.CSI, "active")
_INACTIVE = tag(ns.CSI, "inactive")
_BODY = "{jabber:client}body"
_SUBJECT = "{jabber:client}subject"
_FORWARDED_MESSAGE = f"{{{ns.FORWARD}}}forwarded/{{jabber:client}}message"
# Payloads that make a message important without a body.
_URGENT = (
    tag(ns.CONFERENCE, "x"),
    tag(ns.MAM, "result"),
    tag(ns.EME, "encryption"),
    tag(ns.OMEMO_LEGACY, "encrypted"),
    tag(ns.OMEMO, "encrypted"),
    tag(ns.OPENPGP, "openpgp"),
)
_URGENT_NAMESPACES = (ns.JINGLE_MESSAGE,)


@dataclass(slots=True)
class _State:
    inactive: bool = False
    link: Any = None  # the connection that went inactive (a resumed stream is active again)
    held: list[Element] = field(default_factory=list)
    nicks: dict[str, str] = field(default_factory=dict)  # room bare JID -> our nick there
    flushing: bool = False
    installed: bool = False
    timer: asyncio.TimerHandle | None = None


_MESSAGE = "{jabber:client}message"


class _Filter:
    """One session's send filter; whole batches of fan-out stanzas are checked at once."""

    __slots__ = ("ext", "session", "st")

    def __init__(self, ext: ClientState, session: Session, st: _State) -> None:
        self.ext = ext
        self.session = session
        self.st = st

    def __call__(self, el: Element) -> Element | None:
        st = self.st
        if el.tag == _MESSAGE and not st.inactive and not st.held:
            return el  # the common case, as ClientState._filter has it
        return self.ext._filter(self.session, st, el)

    def passes_all(self, batch: Sequence[Prepared]) -> bool:
        return self.ext._passes_all(self.st, batch)


def _mentions(body: str, nick: str) -> bool:
    return bool(nick) and nick.casefold() in body.casefold()


class ClientState(Extension):
    """Holds back what an inactive client does not need until it is active again."""

    def __init__(self, max_held: int = 256, max_delay: float = 60.0) -> None:
        self.max_held = max_held
        self.max_delay = max_delay

    def register(self, hooks: Hooks) -> None:
        hooks.nonza_handlers[_ACTIVE] = self.active
        hooks.nonza_handlers[_INACTIVE] = self.inactive
        hooks.on_event(ClientAvailable, self.client_available)

    async def client_available(self, event: ClientAvailable) -> None:
        """Watch the client's stream from its first presence (to learn its room nicks)."""
        self._install(event.session)

    def _install(self, session: Session) -> _State:
        st = session.slot(_State, _State)
        if not st.installed:
            st.installed = True
            session.send_filters.append(_Filter(self, session, st))
        return st

    def stream_features(self, authenticated: bool, bound: bool) -> list[Element]:
        return [Element(tag(ns.CSI, "csi"))] if authenticated else []

    # ------------------------------------------------------------------ nonzas
    async def inactive(self, el: Element, session: Session) -> None:
        st = self._install(session)
        st.inactive = True
        st.link = session.link

    async def active(self, el: Element, session: Session) -> None:
        st = session.peek_slot(_State)
        if st is not None:
            st.inactive = False
            self.flush(session, st)

    def is_inactive(self, session: Session) -> bool:
        st = session.peek_slot(_State)
        return st is not None and st.inactive and st.link is session.link

    # ------------------------------------------------------------------ the filter
    def _filter(self, session: Session, st: _State, el: Element) -> Element | None:
        if not st.inactive and not st.held:
            # Active with nothing held (the common case): only our room nicks are learned.
            if local_name(el) == "presence":
                self._track_nick(st, el)
            return el
        if st.flushing:
            return el
        self._track_nick(st, el)
        if st.inactive and (session.link is not st.link or session.hibernating):
            st.inactive = False  # the stream was resumed (or is being): active again
        if not st.inactive:
            if st.held:
                self.flush(session, st)
            return el
        if local_name(el) == "iq":
            return el  # answers and requests pass at once; what is held may stay held
        if self.important(st, el):
            self.flush(session, st)
            return el
        self._hold(session, st, el)
        return None

    def _passes_all(self, st: _State, batch: Sequence[Prepared]) -> bool:
        """Whether every stanza of ``batch`` would pass :meth:`_filter` unchanged, with the
        same effect: only when active with nothing held (our room nicks are learned from the
        self-presences among them); otherwise each stanza goes through the filter."""
        if st.flushing:
            return True
        if st.inactive or st.held:
            return False
        for p in Prepared.containing(batch, "110"):  # a cheap look before the element walk
            self._track_nick(st, p.element)
        return True

    def _hold(self, session: Session, st: _State, el: Element) -> None:
        held = copy_shallow(el, to=str(session.jid))
        kind = local_name(el)
        frm = el.get("from")
        if kind == "presence" or (kind == "message" and _only_chat_state(el)):
            # Summarise: only the newest presence (or chat state) of each sender matters.
            st.held = [
                h
                for h in st.held
                if not (
                    h.get("from") == frm
                    and local_name(h) == kind
                    and (kind == "presence" or _only_chat_state(h))
                )
            ]
        st.held.append(held)
        if len(st.held) >= self.max_held:
            self.flush(session, st)
        elif (
            kind == "message"
            and el.find(_BODY) is not None
            and st.timer is None
            and self.max_delay > 0
        ):
            st.timer = asyncio.get_running_loop().call_later(
                self.max_delay, self.flush, session, st
            )

    def flush(self, session: Session, st: _State) -> None:
        """Send everything held, oldest first."""
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        if not st.held or st.flushing:
            return
        held, st.held = st.held, []
        st.flushing = True
        try:
            for el in held:
                session.send(el)
        finally:
            st.flushing = False

    @staticmethod
    def _track_nick(st: _State, el: Element) -> None:
        """Learn our nick in each room from our own occupant presence (status 110)."""
        if local_name(el) != "presence":
            return
        if not _is_self_presence(el):
            return
        occupant = try_parse(el.get("from"))
        if occupant is None or not occupant.resource:
            return
        room = str(occupant.bare)
        if el.get("type") == "unavailable":
            st.nicks.pop(room, None)
        else:
            st.nicks[room] = occupant.resource

    def important(self, st: _State, el: Element) -> bool:
        kind = local_name(el)
        if kind == "iq":
            return True
        if kind == "presence":
            ptype = el.get("type")
            if ptype not in (None, "unavailable"):
                return True  # subscription requests, errors, probes
            return _is_self_presence(el)
        return self._important_message(st, el)

    def _important_message(self, st: _State, el: Element) -> bool:
        mtype = stanza_type(el)
        if mtype == "error":
            return True
        inner = el.find(f"{{{ns.CARBONS}}}sent/{_FORWARDED_MESSAGE}")
        if inner is None:
            inner = el.find(f"{{{ns.CARBONS}}}received/{_FORWARDED_MESSAGE}")
        if inner is not None:
            return self._important_message(st, inner)
        if mtype == "groupchat":
            body = el.findtext(_BODY)
            if body is None:
                return el.find(_SUBJECT) is not None  # the subject completes a join
            occupant = try_parse(el.get("from"))
            nick = st.nicks.get(str(occupant.bare)) if occupant is not None else None
            if nick is None:
                return True  # we do not know our nick there: do not risk missing a mention
            own = occupant is not None and occupant.resource == nick
            return own or _mentions(body, nick)
        if el.find(_BODY) is not None:
            return True
        if el.find(f"{{{ns.MUC_USER}}}x/{{{ns.MUC_USER}}}invite") is not None:
            return True
        if any(el.find(t) is not None for t in _URGENT):
            return True
        return any(c.tag.startswith(f"{{{u}}}") for c in el for u in _URGENT_NAMESPACES)


_MUC_USER_X = f"{{{ns.MUC_USER}}}x"
_STATUS = f"{{{ns.MUC_USER}}}status"


def _is_self_presence(el: Element) -> bool:
    """An occupant presence with status 110 (simple-tag lookups: no path parsing per stanza)."""
    return any(s.get("code") == "110" for x in el.findall(_MUC_USER_X) for s in x.findall(_STATUS))


def _only_chat_state(el: Element) -> bool:
    """A message that only says someone is typing (or stopped)."""
    prefix = f"{{{ns.CHATSTATES}}}"
    has_state = False
    for c in el:
        if c.tag.startswith(prefix):
            has_state = True
        elif c.tag not in ("{jabber:client}thread", f"{{{ns.SID}}}stanza-id"):
            return False
    return has_state
