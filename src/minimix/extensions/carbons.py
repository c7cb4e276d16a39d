"""XEP-0280 Message Carbons: every client of an account sees every conversation.

A message a client sends is copied (``<sent/>``) to the account's other carbons-enabled
clients; a message arriving for the account is copied (``<received/>``) to each enabled client
that RFC 6121 delivery does not reach. Group chat is never copied, and neither are private
messages from a room occupant (the room service already reaches every joined client).

Private messages *to* an occupant are copied like any chat, unless account-join takes charge of
them (``muc_pms_by_join``): it then calls :meth:`Carbons.copy_sent` with the clients attached
to that room.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Direction, Hooks, IqScope, Priority
from minimix.core.session import Prepared, Session, SessionRegistry
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, copy_shallow, stanza_type
from minimix.protocol.xml import Element, SubElement, tag

_ENABLE = tag(ns.CARBONS, "enable")
_DISABLE = tag(ns.CARBONS, "disable")
_PRIVATE = tag(ns.CARBONS, "private")
_NO_COPY = tag(ns.HINTS, "no-copy")
_MUC_USER_X = tag(ns.MUC_USER, "x")
# Payloads of instant messaging that make a bodyless message worth copying (§6.1).
_IM_PAYLOADS = (ns.RECEIPTS, ns.CHATSTATES, ns.CHAT_MARKERS, ns.JINGLE_MESSAGE)
_NOT_IM = (
    tag(ns.CARBONS, "sent"),
    tag(ns.CARBONS, "received"),
    tag(ns.MAM, "result"),
    tag(ns.PUBSUB_EVENT, "event"),
)


@dataclass(slots=True)
class _State:
    enabled: bool = False


def eligible(stanza: Element) -> bool:
    """XEP-0280 §6.1: whether a message is instant messaging worth copying."""
    if stanza.find(_PRIVATE) is not None or stanza.find(_NO_COPY) is not None:
        return False
    mtype = stanza_type(stanza)
    if mtype in ("groupchat", "headline", "error"):
        return False
    for t in _NOT_IM:
        if stanza.find(t) is not None:
            return False
    if mtype == "chat":
        return True
    if stanza.find("{jabber:client}body") is not None:
        return True
    if stanza.find(tag(ns.CONFERENCE, "x")) is not None:
        return True
    if stanza.find(f"{_MUC_USER_X}/{{{ns.MUC_USER}}}invite") is not None:
        return True
    return any(c.tag.startswith(f"{{{u}}}") for c in stanza for u in _IM_PAYLOADS)


def is_muc_pm(stanza: Element, peer: JID | None) -> bool:
    """A private message with a room occupant (full JID, ``muc#user`` marker)."""
    return peer is not None and bool(peer.resource) and stanza.find(_MUC_USER_X) is not None


class Carbons(Extension):
    features = (ns.CARBONS,)

    def __init__(self, sessions: SessionRegistry) -> None:
        self.sessions = sessions
        # Set by account-join when it copies outgoing private messages to rooms itself.
        self.muc_pms_by_join = False
        # Filled by the wiring: the archived copy of an outbound message (with its stanza-id).
        self.archived_copy: Callable[[Element], Element | None] | None = None

    def register(self, hooks: Hooks) -> None:
        hooks.on_iq("set", _ENABLE, self.enable, IqScope.ANY)
        hooks.on_iq("set", _DISABLE, self.disable, IqScope.ANY)
        hooks.on_stanza(Direction.OUTBOUND, "message", self.sent, Priority.OBSERVE)
        hooks.on_stanza(Direction.INBOUND_BARE, "message", self.received, Priority.OBSERVE)
        hooks.on_stanza(Direction.INBOUND_FULL, "message", self.received, Priority.OBSERVE)

    # ------------------------------------------------------------------ enabling
    @staticmethod
    def _client(origin: Any) -> Session:
        if not isinstance(origin, Session):
            raise StanzaError("not-allowed", "only for this server's clients")
        return origin

    async def enable(self, iq: Element, origin: Any) -> Element | None:
        self._client(origin).slot(_State, _State).enabled = True
        return None

    async def disable(self, iq: Element, origin: Any) -> Element | None:
        self._client(origin).slot(_State, _State).enabled = False
        return None

    @staticmethod
    def enabled_for(session: Session) -> bool:
        state = session.peek_slot(_State)
        return state is not None and state.enabled

    # ------------------------------------------------------------------ copying
    def copy_sent(
        self, origin: Session | None, stanza: Element, to_sessions: Iterable[Session]
    ) -> int:
        """Send ``<sent/>`` copies of ``stanza`` (sent by ``origin``) to ``to_sessions``.

        Only carbons-enabled clients other than ``origin`` get one. Returns how many were sent.
        """
        return self._copy("sent", stanza, to_sessions, origin)

    def copy_received(self, stanza: Element, to_sessions: Iterable[Session]) -> int:
        """Send ``<received/>`` copies to the carbons-enabled clients among ``to_sessions``."""
        return self._copy("received", stanza, to_sessions, None)

    def _copy(
        self, how: str, stanza: Element, targets: Iterable[Session], skip: Session | None
    ) -> int:
        chosen = [s for s in targets if s is not skip and not s.closed and self.enabled_for(s)]
        if not chosen:
            return 0
        account = chosen[0].account
        wrapper = Element("{jabber:client}message", {"from": str(account)})
        wrapper.set("type", stanza_type(stanza))
        holder = SubElement(wrapper, tag(ns.CARBONS, how))
        fwd = SubElement(holder, tag(ns.FORWARD, "forwarded"))
        # A copy of the top element: later hooks may add to the original's children list.
        fwd.append(copy_shallow(stanza))
        prepared = Prepared(wrapper)
        for s in chosen:
            s.send_prepared(prepared)
        return len(chosen)

    async def sent(self, stanza: Element, origin: Any) -> bool:
        if not isinstance(origin, Session) or not eligible(stanza):
            return False
        to = try_parse(stanza.get("to"))
        if to is not None and to.bare == origin.account:
            return False  # to the account itself: its clients get it on the way in
        if self.muc_pms_by_join and is_muc_pm(stanza, to):
            return False
        copy = self.archived_copy(stanza) if self.archived_copy is not None else None
        self.copy_sent(
            origin, copy if copy is not None else stanza, self.sessions.of_account(origin.account)
        )
        return False

    async def received(self, stanza: Element, origin: Any) -> bool:
        to = try_parse(stanza.get("to"))
        if to is None or not to.local or not eligible(stanza):
            return False
        frm = try_parse(stanza.get("from"))
        if to.resource and is_muc_pm(stanza, frm):
            return False  # the room reaches every joined client itself (§6.1)
        sessions = self.sessions.of_account(to.bare)
        if not any(self.enabled_for(s) for s in sessions):
            return False
        receivers = self._receivers(to, sessions)
        if not receivers:
            return False  # nobody online: offline storage, no copies
        self.copy_received(stanza, [s for s in sessions if s not in receivers])
        return False

    def _receivers(self, to: JID, sessions: list[Session]) -> list[Session]:
        """The clients RFC 6121 §8.5 delivery reaches (mirrors the router's rules)."""
        if to.resource:
            direct = self.sessions.get(to)
            if direct is not None:
                return [direct]
        targets = [s for s in sessions if s.available and s.priority >= 0]
        if len(targets) <= 1:
            return targets
        top = max(s.priority for s in targets)
        return [s for s in targets if s.priority == top]
