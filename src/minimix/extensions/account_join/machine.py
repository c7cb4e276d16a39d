"""The account-join state machine: one :class:`Occupancy` per (account, room).

Pure code, no sockets and no event loop: every input (a client's stanza to a room, the room's
stanza to the account, a bookmark change, a timer) is a method call that returns the list of
:data:`Action` values the caller must carry out, in order. The caller (the extension glue) holds
a per-(account, room) lock around each call, sends what it is told to send, and arms the timers
it is told to arm.

The rules are ``docs/extensions/account-join.md``: the account (bare JID) is the one occupant;
clients (full JIDs) attach to that occupancy with an ordinary XEP-0045 join and detach when they
leave or go away; the room's traffic is archived once and fanned out to the attached clients.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import copy_shallow, iq_result, make, new_id
from minimix.protocol.xml import Element, SubElement, serialize, tag
from minimix.storage.account_join import Membership

from . import stanzas as st
from .stanzas import HistoryRequest

log = logging.getLogger("minimix.account_join")


class Phase(enum.Enum):
    IDLE = "idle"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"


# Error conditions worth another join attempt later (the room or the way to it is down).
TEMPORARY_CONDITIONS = frozenset(
    (
        "service-unavailable",
        "remote-server-not-found",
        "remote-server-timeout",
        "internal-server-error",
        "recipient-unavailable",
        "resource-constraint",
        "gone",
        "undefined-condition",
    )
)
# Self-ping answers that still mean "joined" (XEP-0410 §5).
PING_STILL_JOINED = frozenset(("service-unavailable", "feature-not-implemented", "item-not-found"))
PING_LIKE_TIMEOUT = frozenset(("remote-server-not-found", "remote-server-timeout"))

# Timer names.
LINGER = "linger"
REJOIN = "rejoin"
JOIN_TIMEOUT = "join"
SETTLE = "settle"
LEAVE_TIMEOUT = "leave"
PING_TIMEOUT = "ping"
ALL_TIMERS = (LINGER, REJOIN, JOIN_TIMEOUT, SETTLE, LEAVE_TIMEOUT, PING_TIMEOUT)


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What every account's copy of one room message has in common (the room's children)."""

    ids_by: dict[str, str | None]  # XEP-0359 stanza-ids: by -> id (the first for each by)
    delay: float | None  # the room's <delay> stamp (history), None for a live message
    subject_only: bool


class _FactsMemo:
    """The facts of the last message looked at: a room's copies for each account share their
    children, so they are worked out once per room message, not once per account."""

    def __init__(self) -> None:
        self._message: Element | None = None
        self._kids: tuple[Element, ...] = ()
        self._facts: MessageFacts | None = None

    def of(self, message: Element) -> MessageFacts:
        facts = self._facts
        if message is self._message and facts is not None and len(message) == len(self._kids):
            return facts  # the same copy, asked again
        kids = tuple(message)
        if facts is not None and kids == self._kids:  # elements compare by identity
            self._message = message
            return facts
        ids: dict[str, str | None] = {}
        for sid in message.findall(st.STANZA_ID):
            ids.setdefault(sid.get("by", ""), sid.get("id"))
        facts = MessageFacts(ids, st.delay_stamp(message), st.is_subject_only(message))
        self._message, self._kids, self._facts = message, kids, facts
        return facts


_FACTS = _FactsMemo()


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class ToRoom:
    """Route ``stanza`` (from the account, to the room or an occupant) through the router."""

    stanza: Element


@dataclass(frozen=True, slots=True)
class ToClient:
    """Send ``stanza`` (already addressed to ``client``) to that one client."""

    client: JID
    stanza: Element


@dataclass(frozen=True, slots=True)
class SendPresences:
    """Send ``client`` each of ``presences`` (as the room sent them to the account), in order,
    addressed to it: the occupants' presences for an attaching client, in one write."""

    client: JID
    presences: tuple[Element, ...]


@dataclass(frozen=True, slots=True)
class FanOut:
    """Send ``stanza`` to each of ``clients``: serialized once, ``to`` spliced per client."""

    stanza: Element
    clients: tuple[JID, ...]


@dataclass(frozen=True, slots=True)
class SendHistory:
    """Send ``client`` the room's history from the account's archive, per its request."""

    client: JID
    request: HistoryRequest


# The two actions of every room message are made once per account for every message: plain
# slotted classes build faster than frozen ones (which set each field through object).
@dataclass(slots=True)
class ArchiveGroupchat:
    """Store a group chat message once in the account's archive (our ``<stanza-id>`` beside the
    room's), unless the room's stanza-id is already there; when it was new, fan the stored copy
    out to ``clients``. ``stamp`` is the room's ``<delay>`` (None: now)."""

    stanza: Element
    room_stanza_id: str | None
    stamp: float | None
    clients: tuple[JID, ...]


@dataclass(frozen=True, slots=True)
class ReceivedPrivate:
    """A private message from ``occupant``: archive it once, fan the stored copy out to
    ``clients``; with no client attached, deliver it to the account like any chat."""

    stanza: Element
    occupant: JID
    clients: tuple[JID, ...]


@dataclass(frozen=True, slots=True)
class SentPrivate:
    """``client`` sent a private message to ``occupant``: archive it once and copy it
    (XEP-0280 ``<sent/>``) to the ``others`` attached to the room."""

    client: JID
    stanza: Element
    occupant: JID
    others: tuple[JID, ...]


@dataclass(frozen=True, slots=True)
class DeliverToAccount:
    """No client is attached: deliver as an ordinary message to the bare JID (offline, push)."""

    stanza: Element


@dataclass(frozen=True, slots=True)
class StartTimer:
    """(Re)arm the named timer; when it fires call :meth:`Occupancy.timer_fired`."""

    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Persist:
    membership: Membership


@dataclass(frozen=True, slots=True)
class Forget:
    """The account is no longer in the room: remove what was persisted."""


@dataclass(slots=True)
class Progress:
    """The newest archived room message (for the gap-fill after a restart)."""

    room_stanza_id: str
    stamp: float


@dataclass(frozen=True, slots=True)
class Backfill:
    """The account is (back) in the room after a gap: fetch what the room's archive holds after
    ``after_id`` (XEP-0313 on the room) when the room offers it."""

    after_id: str
    after_stamp: float | None


Action = (
    ToRoom
    | ToClient
    | SendPresences
    | FanOut
    | SendHistory
    | ArchiveGroupchat
    | ReceivedPrivate
    | SentPrivate
    | DeliverToAccount
    | StartTimer
    | CancelTimer
    | Persist
    | Forget
    | Progress
    | Backfill
)


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class Settings:
    linger: float = 3600.0  # seconds without attached clients before leaving; inf = never
    default_history: int = 20  # stanzas for a client that sends no <history/>
    join_timeout: float = 60.0
    settle_timeout: float = 10.0  # self-presence seen, subject not yet: finish the join anyway
    leave_timeout: float = 15.0
    ping_timeout: float = 60.0
    backoff_first: float = 1.0
    backoff_max: float = 300.0
    quiet_attempts: int = 3  # rejoin attempts before attached clients are told (110+333)

    def backoff(self, attempt: int) -> float:
        return float(min(self.backoff_max, self.backoff_first * (2 ** max(0, attempt))))


@dataclass(slots=True)
class ClientPresence:
    """What one attached client last told the room about itself (for the aggregate)."""

    show: str | None
    status: str | None
    seq: int


@dataclass(slots=True)
class PendingJoin:
    requested_nick: str
    id: str | None
    history: HistoryRequest


@dataclass(slots=True)
class NickChange:
    client: JID | None  # None: asked by a bookmark
    nick: str
    client_id: str | None
    id: str


@dataclass(slots=True)
class Occupancy:
    """The account's membership of one room (spec §1), with its attached clients."""

    account: JID
    room: JID
    nick: str
    settings: Settings = field(default_factory=Settings)
    ids: Callable[[], str] = new_id
    clock: Callable[[], float] = time.time
    phase: Phase = Phase.IDLE
    password: str | None = None
    origin: str = "client"
    autojoin: bool = False
    occupants: dict[str, Element] = field(default_factory=dict)
    self_presence: Element | None = None
    subject: Element | None = None
    joined: dict[JID, ClientPresence] = field(default_factory=dict)
    pending: dict[JID, PendingJoin] = field(default_factory=dict)
    last_room_stanza_id: str | None = None
    last_stamp: float | None = None
    aggregate: tuple[str | None, str | None] | None = None
    # Join bookkeeping.
    join_id: str | None = None  # the join presence in flight (None: waiting for a retry)
    self_received: bool = False
    rejoin: bool = False  # the account lost the room while clients stayed attached
    previous_occupants: dict[str, Element] | None = None
    previous_subject: Element | None = None
    creator: JID | None = None
    created: bool = False
    attempts: int = 0
    persisted: bool = False  # restored at start: worth retrying like a bookmark
    rejoin_after_leave: bool = False
    gap_from: str | None = None  # the last archived room message when this join began
    nick_change: NickChange | None = None
    old_nicks: set[str] = field(default_factory=set)
    held_pings: list[tuple[JID, Element]] = field(default_factory=list)
    proxied: OrderedDict[str, tuple[JID, str | None]] = field(default_factory=OrderedDict)
    sent: OrderedDict[str, JID] = field(default_factory=OrderedDict)
    ping_id: str | None = None
    ping_failures: int = 0
    client_presence: dict[JID, ClientPresence] = field(default_factory=dict)
    _seq: int = 0

    # ------------------------------------------------------------------ views
    @property
    def occupant_jid(self) -> JID:
        return JID(self.room.local, self.room.domain, self.nick)

    def occupant(self, nick: str) -> JID:
        return JID(self.room.local, self.room.domain, nick)

    @property
    def attached(self) -> tuple[JID, ...]:
        return tuple(self.joined)

    @property
    def disposable(self) -> bool:
        """Nothing left to remember: the registry may drop this occupancy."""
        return self.phase is Phase.IDLE and not self.pending and not self.joined

    @property
    def should_stay(self) -> bool:
        return self.autojoin or bool(self.joined) or bool(self.pending)

    def membership(self) -> Membership:
        return Membership(
            str(self.account),
            str(self.room),
            self.nick,
            self.password,
            self.origin,
            self.autojoin,
            self.last_room_stanza_id,
            self.last_stamp,
            tuple(str(c) for c in self.joined),
        )

    def _persist(self) -> Persist:
        return Persist(self.membership())

    def _tick(self) -> int:
        self._seq += 1
        return self._seq

    # ------------------------------------------------------------------ presence aggregate
    def _note_presence(self, client: JID, presence: Element) -> None:
        show, status = st.show_and_status(presence)
        self.client_presence[client] = ClientPresence(show, status, self._tick())

    def _computed_aggregate(self) -> tuple[str | None, str | None]:
        best: ClientPresence | None = None
        for client in (*self.joined, *self.pending):
            p = self.client_presence.get(client)
            if p is None:
                continue
            if (
                best is None
                or st.SHOW_RANK[p.show] < st.SHOW_RANK[best.show]
                or (st.SHOW_RANK[p.show] == st.SHOW_RANK[best.show] and p.seq > best.seq)
            ):
                best = p
        return (best.show, best.status) if best is not None else (None, None)

    def _presence_payload(self, presence: Element, show: str | None, status: str | None) -> None:
        if show:
            SubElement(presence, st.SHOW).text = show
        if status:
            SubElement(presence, st.STATUS_TEXT).text = status

    def _update_aggregate(self) -> list[Action]:
        """Send the room the account's presence when the attached clients changed it (§0)."""
        if self.phase is not Phase.JOINED or not self.joined:
            return []
        agg = self._computed_aggregate()
        if agg == self.aggregate:
            return []
        self.aggregate = agg
        p = make("presence", to=self.occupant_jid, from_=self.account)
        self._presence_payload(p, *agg)
        return [ToRoom(p)]

    # ------------------------------------------------------------------ joining
    def _join_history(self, first: HistoryRequest | None) -> Element | None:
        """What the account asks the room for: the gap since the last archived message, else the
        room's default (or the first client's request when it wants more)."""
        if self.last_stamp is not None:
            return HistoryRequest(since=self.last_stamp).element()
        if first is not None and first.wants_more_than(self.settings.default_history):
            return first.element()
        return None

    def _start_join(self, first: HistoryRequest | None = None) -> list[Action]:
        self.phase = Phase.JOINING
        self.self_received = False
        self.join_id = self.ids()
        self.occupants = {}
        self.gap_from = self.last_room_stanza_id
        p = make("presence", to=self.occupant_jid, from_=self.account, id_=self.join_id)
        x = SubElement(p, st.MUC_X)
        if self.password:
            SubElement(x, tag(ns.MUC, "password")).text = self.password
        history = self._join_history(first)
        if history is not None:
            x.append(history)
        self.aggregate = self._computed_aggregate()
        self._presence_payload(p, *self.aggregate)
        log.info(
            "%s %s %s as %s",
            self.account,
            "rejoins" if self.rejoin else "joins",
            self.room,
            self.nick,
        )
        return [
            CancelTimer(REJOIN),
            CancelTimer(LINGER),
            ToRoom(p),
            StartTimer(JOIN_TIMEOUT, self.settings.join_timeout),
        ]

    def _complete_join(self) -> list[Action]:
        """The room finished its join sequence (subject seen): serve every waiting client."""
        acts: list[Action] = [CancelTimer(SETTLE), CancelTimer(JOIN_TIMEOUT)]
        was_rejoin = self.rejoin
        self.phase = Phase.JOINED
        self.join_id = None
        self.attempts = 0
        self.ping_failures = 0
        self.ping_id = None
        self.persisted = False
        clients = self.attached
        if was_rejoin and clients:
            acts += self._diff_after_rejoin(clients)
        self.rejoin = False
        self.previous_occupants = None
        self.previous_subject = None
        if self.created and self.creator not in self.pending:
            acts.append(ToRoom(self._instant_room()))
        for client, pj in list(self.pending.items()):
            self.joined[client] = self.client_presence.get(
                client, ClientPresence(None, None, self._tick())
            )
            log.info("%s attached to %s (%s as %s)", client, self.room, self.account, self.nick)
            acts += self._replay(client, pj, created=self.created and client == self.creator)
        self.pending.clear()
        self.creator = None
        self.created = False
        acts += self._release_pings()
        if self.gap_from is not None:
            acts.append(Backfill(self.gap_from, None))
            self.gap_from = None
        log.info("%s joined %s as %s", self.account, self.room, self.nick)
        acts.append(self._persist())
        acts += self._update_aggregate()
        if not self.joined:
            acts += self._went_quiet()
        return acts

    def _instant_room(self) -> Element:
        """The account created the room and no client is there to configure it: accept the
        default configuration (XEP-0045 §10.1.2), or the room would stay locked to everyone."""
        log.info("%s created %s; making it an instant room", self.account, self.room)
        iq = make("iq", to=self.room, from_=self.account, type_="set", id_=self.ids())
        query = SubElement(iq, tag(ns.MUC_OWNER, "query"))
        SubElement(query, tag(ns.DATA, "x"), {"type": "submit"})
        return iq

    def _diff_after_rejoin(self, clients: tuple[JID, ...]) -> list[Action]:
        """After a transparent rejoin, tell attached clients only what changed meanwhile."""
        acts: list[Action] = []
        before = self.previous_occupants or {}
        for nick, p in before.items():
            if nick != self.nick and nick not in self.occupants:
                acts.append(FanOut(st.occupant_gone(p), clients))
        for nick, p in self.occupants.items():
            if nick == self.nick:
                continue
            old = before.get(nick)
            if old is None or serialize(copy_shallow(old, id=None, to=None)) != serialize(
                copy_shallow(p, id=None, to=None)
            ):
                acts.append(FanOut(p, clients))
        if self.subject is not None and (
            self.previous_subject is None
            or self.previous_subject.findtext(st.SUBJECT) != self.subject.findtext(st.SUBJECT)
        ):
            acts.append(FanOut(self.subject, clients))
        return acts

    def _replay(self, client: JID, pj: PendingJoin, created: bool = False) -> list[Action]:
        """XEP-0045 §7.1 order for one client, answered from the account's state: occupants,
        self-presence (110, its id, 210 when its nick was not kept), history, subject."""
        occupants = self.occupants
        if self.nick in occupants:
            presences = tuple(p for nick, p in occupants.items() if nick != self.nick)
        else:
            presences = tuple(occupants.values())
        acts: list[Action] = [SendPresences(client, presences)] if presences else []
        cached = self.self_presence
        if cached is None:
            cached = make("presence", from_=self.occupant_jid)
            x = SubElement(cached, st.USER_X)
            SubElement(x, st.ITEM, {"affiliation": "none", "role": "participant"})
        had = st.status_codes(cached)
        codes = [st.SELF] + [c for c in st.JOIN_CODES_KEPT if c in had]
        if created:
            codes.append(st.CREATED)
        if pj.requested_nick != self.nick:
            codes.append(st.NICK_ASSIGNED)
        acts.append(ToClient(client, st.self_presence_for(cached, client, pj.id, codes)))
        if not pj.history.none_wanted:
            acts.append(SendHistory(client, pj.history))
        if self.subject is not None:
            acts.append(ToClient(client, copy_shallow(self.subject, to=str(client), id=None)))
        else:
            acts.append(ToClient(client, st.empty_subject(self.room, client)))
        return acts

    def _release_pings(self) -> list[Action]:
        acts: list[Action] = []
        for client, iq in self.held_pings:
            acts.append(ToClient(client, self._ping_answer(client, iq)))
        self.held_pings = []
        return acts

    def _ping_answer(self, client: JID, iq: Element) -> Element:
        if self.phase is Phase.JOINED and client in self.joined:
            return iq_result(iq)
        reply = iq_result(iq)
        reply.set("type", "error")
        reply.append(st.error_element("not-acceptable", "cancel", by=str(self.room)))
        return reply

    # ------------------------------------------------------------------ client -> room
    def client_join(self, client: JID, presence: Element) -> list[Action]:
        """An XEP-0045 join from one of the account's clients (spec §2, first three rows)."""
        to = try_parse(presence.get("to"))
        requested = to.resource if to is not None else ""
        if not requested:
            err = st.error_element("jid-malformed", "modify", by=str(self.room))
            return [ToClient(client, st.join_error(self.room, client, presence.get("id"), err))]
        pj = PendingJoin(
            requested,
            presence.get("id"),
            HistoryRequest.of_join(presence, self.settings.default_history),
        )
        self._note_presence(client, presence)
        password = st.join_password(presence)
        if self.phase is Phase.JOINED:
            known = client in self.joined
            self.joined[client] = self.client_presence[client]
            log.info(
                "%s %s %s (%s as %s)",
                client,
                "resynchronised with" if known else "attached to",
                self.room,
                self.account,
                self.nick,
            )
            acts: list[Action] = [CancelTimer(LINGER)]
            acts += self._replay(client, pj)
            if not known:
                acts.append(self._persist())
            acts += self._update_aggregate()
            return acts
        self.joined.pop(client, None)
        self.pending[client] = pj
        if self.phase is Phase.JOINING:
            if self.join_id is None:  # waiting for a retry: try now, this client is asking
                self.attempts = 0
                return self._start_join(pj.history)
            return []  # one join in flight is enough: this client waits for it
        if self.phase is Phase.LEAVING:
            self.rejoin_after_leave = True
            return []
        # IDLE: the account joins on this client's behalf.
        if not self.autojoin:
            self.nick = requested
            self.origin = "client"
        if password:
            self.password = password
        self.creator = client
        self.created = False
        self.old_nicks.clear()
        return self._start_join(pj.history)

    def client_presence_to_room(self, client: JID, presence: Element) -> list[Action]:
        """A presence without ``<x/>`` to ``room/N``: availability or nick change (§2)."""
        to = try_parse(presence.get("to"))
        nick = to.resource if to is not None else ""
        if presence.get("type") == "unavailable":
            return self.client_leave(client, presence)
        if presence.get("type") is not None:
            return []
        if client in self.pending:
            self._note_presence(client, presence)
            return []
        if client not in self.joined:
            err = st.error_element("item-not-found", "cancel", by=str(self.room))
            reply = make(
                "presence", to=client, from_=to or self.room, type_="error", id_=presence.get("id")
            )
            reply.append(err)
            return [ToClient(client, reply)]
        self._note_presence(client, presence)
        if nick and nick != self.nick:
            if self.phase is not Phase.JOINED:
                err = st.error_element("not-acceptable", "modify", by=str(self.room))
                reply = make("presence", to=client, from_=to, type_="error", id_=presence.get("id"))
                reply.append(err)
                return [ToClient(client, reply)]
            return self._change_nick(nick, client, presence.get("id"))
        return self._update_aggregate()

    def _change_nick(self, nick: str, client: JID | None, client_id: str | None) -> list[Action]:
        nc = NickChange(client, nick, client_id, self.ids())
        self.nick_change = nc
        p = make("presence", to=self.occupant(nick), from_=self.account, id_=nc.id)
        self.aggregate = self._computed_aggregate()
        self._presence_payload(p, *self.aggregate)
        log.info("%s asks to change its nick in %s to %s", self.account, self.room, nick)
        return [ToRoom(p)]

    def client_leave(self, client: JID, presence: Element | None = None) -> list[Action]:
        """A directed unavailable to ``room/*``: only this client detaches (§2)."""
        pid = presence.get("id") if presence is not None else None
        aff = st.affiliation_of(self.self_presence)
        if client in self.joined:
            del self.joined[client]
            occupant = self.occupant_jid
        elif client in self.pending:
            occupant = self.occupant(self.pending.pop(client).requested_nick)
        else:
            return [ToClient(client, st.self_unavailable(self.occupant_jid, client, aff, id_=pid))]
        self.client_presence.pop(client, None)
        log.info("%s detached from %s (left)", client, self.room)
        acts: list[Action] = [ToClient(client, st.self_unavailable(occupant, client, aff, id_=pid))]
        return acts + self._after_detach(explicit=True)

    def client_broadcast(self, client: JID, presence: Element) -> list[Action]:
        """A client's broadcast presence: it changes the aggregate, or (unavailable) detaches it
        silently; the room never sees a per-client unavailable (§0)."""
        if client not in self.joined and client not in self.pending:
            return []
        if presence.get("type") == "unavailable":
            return self.client_gone(client)
        if presence.get("type") is not None:
            return []
        self._note_presence(client, presence)
        return self._update_aggregate()

    def client_gone(self, client: JID) -> list[Action]:
        """The client's session ended (no stream resumption): detach it without a word."""
        if client in self.joined:
            del self.joined[client]
        elif client in self.pending:
            del self.pending[client]
        else:
            return []
        self.client_presence.pop(client, None)
        self.held_pings = [(c, iq) for c, iq in self.held_pings if c != client]
        log.info("%s detached from %s (went away)", client, self.room)
        return self._after_detach(explicit=False)

    def _after_detach(self, explicit: bool) -> list[Action]:
        if self.joined or self.pending:
            acts: list[Action] = []
            if self.phase is Phase.JOINED:
                acts.append(self._persist())
            return acts + self._update_aggregate()
        if self.phase in (Phase.IDLE, Phase.LEAVING):
            return []
        if self.autojoin:
            return [self._persist()] if self.phase is Phase.JOINED else []
        if explicit:
            return self._leave("its last client left")
        if self.phase is Phase.JOINED:
            return [self._persist(), *self._went_quiet()]
        return []  # still joining: the join completes, then the linger time runs

    def _went_quiet(self) -> list[Action]:
        """No client attached: stay for ``linger`` unless a bookmark keeps the account here."""
        if self.autojoin or self.joined or self.phase is not Phase.JOINED:
            return []
        linger = self.settings.linger
        if linger <= 0:
            return self._leave("no client is attached")
        if math.isinf(linger):
            return []
        return [StartTimer(LINGER, linger)]

    def client_message(self, client: JID, message: Element) -> list[Action] | None:
        """A message from a client to the room or an occupant; ``None``: not ours to handle."""
        to = try_parse(message.get("to"))
        if to is None:
            return None
        mtype = message.get("type") or "normal"
        attached = client in self.joined
        if mtype == "error":
            return (
                None if not attached else [ToRoom(copy_shallow(message, from_=str(self.account)))]
            )
        if not to.resource:
            if mtype == "groupchat":
                if not attached or self.phase is not Phase.JOINED:
                    return [
                        ToClient(client, self._message_error(message, client, "not-acceptable"))
                    ]
                self._remember_sent(message.get("id"), client)
                return [ToRoom(copy_shallow(message, from_=str(self.account)))]
            if not attached:
                return None
            self._remember_sent(message.get("id"), client)
            return [ToRoom(copy_shallow(message, from_=str(self.account)))]
        # A private message to an occupant (XEP-0045 §7.5).
        if not attached:
            return None
        if mtype == "groupchat":
            return [ToClient(client, self._message_error(message, client, "bad-request"))]
        self._remember_sent(message.get("id"), client)
        others = tuple(o for o in self.joined if o != client)
        return [
            ToRoom(copy_shallow(message, from_=str(self.account))),
            SentPrivate(client, message, to, others),
        ]

    def _message_error(self, message: Element, client: JID, condition: str) -> Element:
        reply = copy_shallow(message, to=str(client), from_=message.get("to"), type="error")
        reply.append(st.error_element(condition, by=str(self.room)))
        return reply

    def _remember_sent(self, id_: str | None, client: JID) -> None:
        if not id_:
            return
        self.sent[id_] = client
        self.sent.move_to_end(id_)
        while len(self.sent) > 256:
            self.sent.popitem(last=False)

    def client_iq(self, client: JID, iq: Element) -> list[Action] | None:
        """An IQ from a client to an occupant JID; ``None``: pass it through unchanged (IQs to
        the room itself, and anything from a client that is not attached)."""
        to = try_parse(iq.get("to"))
        if to is None or not to.resource or iq.get("type") not in ("get", "set"):
            return None
        if st.is_ping(iq):
            if to.resource == self.nick:
                return self.client_self_ping(client, iq)
            if to.resource in self.old_nicks and to.resource not in self.occupants:
                reply = iq_result(iq)
                reply.set("type", "error")
                reply.append(st.error_element("item-not-found", "cancel", by=str(self.room)))
                return [ToClient(client, reply)]
        if client not in self.joined:
            return None
        # Proxy from the account with an id of ours: the room only knows the bare JID.
        our = self.ids()
        self.proxied[our] = (client, iq.get("id"))
        while len(self.proxied) > 512:
            self.proxied.popitem(last=False)
        return [ToRoom(copy_shallow(iq, from_=str(self.account), id=our))]

    def client_self_ping(self, client: JID, iq: Element) -> list[Action]:
        """XEP-0410 answered by the server (spec §6): never forwarded to the room."""
        if self.phase is Phase.JOINING and client in self.joined:
            self.held_pings.append((client, iq))
            return []
        return [ToClient(client, self._ping_answer(client, iq))]

    # ------------------------------------------------------------------ room -> account
    def room_presence(self, presence: Element) -> list[Action]:
        frm = try_parse(presence.get("from"))
        if frm is None:
            return []
        nick = frm.resource
        ptype = presence.get("type")
        if ptype == "error":
            return self._room_error(presence, nick)
        if not nick or ptype not in (None, "unavailable"):
            return []
        codes = st.status_codes(presence)
        if st.SELF in codes:
            if ptype == "unavailable":
                return self._self_unavailable(presence, codes)
            return self._self_available(presence, nick, codes)
        if self.phase is Phase.LEAVING or self.phase is Phase.IDLE:
            return []
        if ptype == "unavailable":
            self.occupants.pop(nick, None)
        else:
            self.occupants[nick] = presence
        if self.phase is Phase.JOINED and self.joined:
            return [FanOut(presence, self.attached)]
        return []

    def _self_available(self, presence: Element, nick: str, codes: frozenset[int]) -> list[Action]:
        if self.phase is Phase.JOINING and self.join_id is not None:
            self.self_received = True
            if nick != self.nick:
                self.old_nicks.add(self.nick)
            self.nick = nick
            self.self_presence = presence
            self.created = st.CREATED in codes
            return [CancelTimer(JOIN_TIMEOUT), StartTimer(SETTLE, self.settings.settle_timeout)]
        if self.phase is Phase.JOINED:
            if nick != self.nick:
                self.old_nicks.add(self.nick)
                self.nick = nick
            self.self_presence = presence
            acts: list[Action] = []
            if self.nick_change is not None and self.nick_change.nick == nick:
                self.nick_change = None
                log.info("%s is now %s in %s", self.account, nick, self.room)
                acts.append(self._persist())
            if self.joined:
                acts.insert(0, FanOut(presence, self.attached))
            return acts
        if self.phase is Phase.IDLE:
            # The room holds us although we gave up (a late answer to an abandoned join): leave.
            return [
                ToRoom(
                    make("presence", to=frm_of(presence), from_=self.account, type_="unavailable")
                )
            ]
        return []

    def _self_unavailable(self, presence: Element, codes: frozenset[int]) -> list[Action]:
        if st.NICK_CHANGED in codes:
            item = st.item_of(presence)
            new = item.get("nick") if item is not None else None
            if new and self.phase is Phase.JOINED:
                self.old_nicks.add(self.nick)
                self.nick = new
                return [FanOut(presence, self.attached)] if self.joined else []
            return []
        if self.phase is Phase.LEAVING:
            return self._left()
        if codes & st.TRANSIENT_REMOVALS and not st.is_destroy(presence):
            return self._lost(presence, codes)
        if codes & st.REMOVALS or st.is_destroy(presence) or self.phase is not Phase.IDLE:
            return self._removed(presence, codes)
        return []

    def _removed(self, presence: Element, codes: frozenset[int]) -> list[Action]:
        """Kick, ban, membership revoked, members-only, destroyed (§3): final until asked again."""
        targets = (*self.joined, *(c for c in self.pending if c not in self.joined))
        what = "destroyed" if st.is_destroy(presence) else ",".join(str(c) for c in sorted(codes))
        log.info("%s removed from %s (%s)", self.account, self.room, what)
        acts: list[Action] = []
        if targets:
            acts.append(FanOut(presence, targets))
        acts += self._reset()
        acts.append(Forget())
        return acts

    def _reset(self) -> list[Action]:
        """Back to idle, telling held self-pings that the account is out."""
        self.phase = Phase.IDLE
        acts = self._release_pings()
        self.joined.clear()
        self.pending.clear()
        self.client_presence.clear()
        self.occupants = {}
        self.subject = None
        self.self_presence = None
        self.nick_change = None
        self.join_id = None
        self.rejoin = False
        self.previous_occupants = None
        self.previous_subject = None
        self.ping_id = None
        self.rejoin_after_leave = False
        self.proxied.clear()
        return acts + [CancelTimer(t) for t in ALL_TIMERS]

    def _lost(self, presence: Element, codes: frozenset[int]) -> list[Action]:
        """332/333 (or a failed self-ping): rejoin with backoff, clients stay attached (§0)."""
        if not self.should_stay and not self.persisted:
            log.info("%s lost %s (%s); nobody is attached", self.account, self.room, sorted(codes))
            acts = self._reset()
            acts.append(Forget())
            return acts
        log.info("%s lost %s (%s); rejoining", self.account, self.room, sorted(codes))
        return self._begin_rejoin(delay=self.settings.backoff(0))

    def _begin_rejoin(self, delay: float) -> list[Action]:
        self.phase = Phase.JOINING
        self.rejoin = True
        self.previous_occupants = dict(self.occupants)
        self.previous_subject = self.subject
        self.join_id = None
        self.self_received = False
        self.attempts = 0
        self.ping_id = None
        return [CancelTimer(PING_TIMEOUT), StartTimer(REJOIN, delay)]

    def _room_error(self, presence: Element, nick: str) -> list[Action]:
        err = presence.find(st.ERROR)
        cond, etype = _condition(err)
        if self.phase is Phase.JOINING and self.join_id is not None:
            if presence.get("id") not in (None, self.join_id) and nick != self.nick:
                return []
            return self._join_failed(err, cond, etype)
        if self.phase is Phase.LEAVING:
            return self._left()
        if self.phase is Phase.JOINED:
            nc = self.nick_change
            if nc is not None and (presence.get("id") == nc.id or nick == nc.nick):
                self.nick_change = None
                self.aggregate = None
                log.info("%s could not change its nick in %s (%s)", self.account, self.room, cond)
                if nc.client is None or nc.client not in self.joined:
                    return []
                reply = make(
                    "presence",
                    to=nc.client,
                    from_=self.occupant(nc.nick),
                    type_="error",
                    id_=nc.client_id,
                )
                reply.append(err if err is not None else st.error_element(cond))
                return [ToClient(nc.client, reply)]
            if cond in ("item-not-found", "not-acceptable"):
                log.info("%s is no longer in %s (%s); rejoining", self.account, self.room, cond)
                acts = self._begin_rejoin(delay=0)
                return acts
        return []

    def _join_failed(self, err: Element | None, cond: str, etype: str | None) -> list[Action]:
        """The room refused (or never answered) the account's join (§2, error row)."""
        acts: list[Action] = [CancelTimer(JOIN_TIMEOUT), CancelTimer(SETTLE)]
        error = err if err is not None else st.error_element(cond, etype)
        for client, pj in self.pending.items():
            acts.append(
                ToClient(
                    client, st.join_error(self.occupant(pj.requested_nick), client, pj.id, error)
                )
            )
        self.pending.clear()
        self.join_id = None
        self.attempts += 1
        temporary = cond in TEMPORARY_CONDITIONS or etype == "wait"
        keep_trying = self.autojoin or (
            (bool(self.joined) or self.persisted) and self.attempts < self.settings.quiet_attempts
        )
        log.info("%s could not join %s (%s)", self.account, self.room, cond)
        if temporary and keep_trying:
            if self.attempts >= self.settings.quiet_attempts:
                acts += self._tell_lost()
            self.phase = Phase.JOINING
            acts.append(StartTimer(REJOIN, self.settings.backoff(self.attempts)))
            return acts
        acts += self._tell_lost()
        acts += self._reset()
        acts.append(Forget())
        self.persisted = False
        return acts

    def _tell_lost(self) -> list[Action]:
        """Attached clients learn that the account is out: 110 + 333, role none."""
        acts = self._release_pings_failed()
        if not self.joined:
            return acts
        aff = st.affiliation_of(self.self_presence)
        for client in self.joined:
            acts.append(
                ToClient(
                    client,
                    st.self_unavailable(
                        self.occupant_jid,
                        client,
                        aff,
                        (st.SELF, st.ERROR_KICK),
                        reason="The server lost its connection to the room",
                    ),
                )
            )
        log.info("%s told its clients it is out of %s", self.account, self.room)
        self.joined.clear()
        return acts

    def _release_pings_failed(self) -> list[Action]:
        acts: list[Action] = []
        for client, iq in self.held_pings:
            reply = iq_result(iq)
            reply.set("type", "error")
            reply.append(st.error_element("not-acceptable", "cancel", by=str(self.room)))
            acts.append(ToClient(client, reply))
        self.held_pings = []
        return acts

    def room_message(self, message: Element) -> list[Action]:
        frm = try_parse(message.get("from"))
        if frm is None:
            return []
        account = str(self.account)
        mtype = message.get("type") or "normal"
        if _FACTS.of(message).ids_by.get(account) is not None:
            # Only our archive may claim an id for the account (XEP-0359 §4): a copy without.
            message = st.restamped(message, account)
        if mtype == "error":
            client = self.sent.pop(message.get("id") or "", None)
            if client is not None:
                return [ToClient(client, copy_shallow(message, to=str(client)))]
            return [FanOut(message, self.attached)] if self.joined else []
        if mtype == "groupchat":
            if _FACTS.of(message).subject_only:
                self.subject = message
                if self.phase is Phase.JOINING and self.self_received:
                    return self._complete_join()
                if self.phase is Phase.JOINED and self.joined:
                    return [FanOut(message, self.attached)]
                return []
            return self._groupchat(message)
        if frm.resource:
            # A private message from an occupant (XEP-0045 §7.5): archived once, fanned out.
            return [ReceivedPrivate(message, frm, self.attached)]
        # From the room itself: invitations, status codes (101, 104, 170...), voice requests.
        if self.joined:
            return [FanOut(message, self.attached)]
        return [DeliverToAccount(message)]

    def _groupchat(self, message: Element) -> list[Action]:
        facts = _FACTS.of(message)
        room_sid = facts.ids_by.get(str(self.room))
        delayed = facts.delay
        stamp = delayed if delayed is not None else self.clock()
        acts: list[Action] = []
        if self.phase is Phase.JOINED or (self.phase is Phase.JOINING and self.rejoin):
            clients = self.attached
        else:
            clients = ()  # join history: archived now, served from the archive per client
        acts.append(ArchiveGroupchat(message, room_sid, delayed, clients))
        if room_sid is not None and (self.last_stamp is None or stamp >= self.last_stamp):
            self.last_room_stanza_id = room_sid
            self.last_stamp = stamp
            acts.append(Progress(room_sid, stamp))
        return acts

    def room_iq(self, iq: Element) -> list[Action] | None:
        """An IQ from the room or an occupant to the account. ``None``: a get/set that the
        server's own handlers should answer as the account (disco, vCard...)."""
        itype = iq.get("type")
        iid = iq.get("id") or ""
        if itype in ("result", "error"):
            if self.ping_id is not None and iid == self.ping_id:
                return self._self_ping_answered(iq)
            target = self.proxied.pop(iid, None)
            if target is not None:
                client, cid = target
                return [ToClient(client, copy_shallow(iq, to=str(client), id=cid))]
            return []
        if st.is_ping(iq):
            return [ToRoom(iq_result(iq))]
        return None

    # ------------------------------------------------------------------ liveness
    def self_ping(self) -> list[Action]:
        """Check that the room still holds the account (XEP-0410, sent from the bare JID)."""
        if self.phase is not Phase.JOINED or self.ping_id is not None:
            return []
        self.ping_id = self.ids()
        iq = make("iq", to=self.occupant_jid, from_=self.account, type_="get", id_=self.ping_id)
        SubElement(iq, st.PING)
        return [ToRoom(iq), StartTimer(PING_TIMEOUT, self.settings.ping_timeout)]

    def _self_ping_answered(self, iq: Element) -> list[Action]:
        self.ping_id = None
        acts: list[Action] = [CancelTimer(PING_TIMEOUT)]
        if iq.get("type") == "result":
            self.ping_failures = 0
            return acts
        cond, _ = _condition(iq.find(st.ERROR))
        if cond in PING_STILL_JOINED:
            self.ping_failures = 0
            return acts
        if cond in PING_LIKE_TIMEOUT:
            return acts + self._ping_timed_out()
        log.info("%s self-ping of %s failed (%s); rejoining", self.account, self.room, cond)
        return acts + self._begin_rejoin(delay=0)

    def _ping_timed_out(self) -> list[Action]:
        self.ping_id = None
        self.ping_failures += 1
        if self.ping_failures >= 2 and self.phase is Phase.JOINED:
            log.info("%s gets no answer from %s; rejoining", self.account, self.room)
            return self._begin_rejoin(delay=0)
        return []

    # ------------------------------------------------------------------ leaving
    def _leave(self, why: str) -> list[Action]:
        """The account leaves (§0): unavailable from the bare JID, every client told (110)."""
        acts: list[Action] = []
        aff = st.affiliation_of(self.self_presence)
        for client in self.joined:
            acts.append(ToClient(client, st.self_unavailable(self.occupant_jid, client, aff)))
        for client, pj in self.pending.items():
            acts.append(
                ToClient(client, st.self_unavailable(self.occupant(pj.requested_nick), client, aff))
            )
        acts += self._release_pings_failed()
        was_joining = self.phase is Phase.JOINING and self.join_id is None
        self.joined.clear()
        self.pending.clear()
        self.client_presence.clear()
        self.nick_change = None
        self.rejoin = False
        self.ping_id = None
        acts += [CancelTimer(t) for t in ALL_TIMERS]
        acts.append(Forget())
        log.info("%s leaves %s (%s)", self.account, self.room, why)
        if was_joining:  # nothing in flight: no room to tell
            self.phase = Phase.IDLE
            self.join_id = None
            return acts
        self.phase = Phase.LEAVING
        self.join_id = None
        acts.append(
            ToRoom(make("presence", to=self.occupant_jid, from_=self.account, type_="unavailable"))
        )
        acts.append(StartTimer(LEAVE_TIMEOUT, self.settings.leave_timeout))
        return acts

    def _left(self) -> list[Action]:
        self.phase = Phase.IDLE
        self.occupants = {}
        self.subject = None
        self.self_presence = None
        acts: list[Action] = [CancelTimer(LEAVE_TIMEOUT)]
        log.info("%s left %s", self.account, self.room)
        if self.rejoin_after_leave and (self.pending or self.autojoin):
            self.rejoin_after_leave = False
            first = next(iter(self.pending.items()), None)
            if first is not None:
                self.creator = first[0]
                if not self.autojoin:
                    self.nick = first[1].requested_nick
            return acts + self._start_join(first[1].history if first else None)
        self.rejoin_after_leave = False
        return acts

    # ------------------------------------------------------------------ bookmarks (§7)
    def bookmark_set(self, autojoin: bool, nick: str | None, password: str | None) -> list[Action]:
        """A bookmark for this room was published or changed."""
        was = self.autojoin
        if password:
            self.password = password
        if not autojoin:
            self.autojoin = False
            if was and self.phase in (Phase.JOINED, Phase.JOINING):
                return self._leave("its autojoin bookmark was turned off")
            return [self._persist()] if self.phase is Phase.JOINED else []
        self.autojoin = True
        self.origin = "bookmark"
        acts: list[Action] = [CancelTimer(LINGER)]
        if self.phase is Phase.IDLE:
            if nick:
                self.nick = nick
            self.old_nicks.clear()
            return acts + self._start_join(None)
        if self.phase is Phase.LEAVING:
            if nick:
                self.nick = nick
            self.rejoin_after_leave = True
            return acts
        if self.phase is Phase.JOINED:
            acts.append(self._persist())
            if nick and nick != self.nick:
                acts += self._change_nick(nick, None, None)
        return acts

    def bookmark_removed(self) -> list[Action]:
        was = self.autojoin
        self.autojoin = False
        if was and self.phase in (Phase.JOINED, Phase.JOINING):
            return self._leave("its autojoin bookmark was removed")
        return [self._persist()] if self.phase is Phase.JOINED else []

    # ------------------------------------------------------------------ timers and lifecycle
    def restore(self, m: Membership) -> list[Action]:
        """At server start: join again a room the account was in, asking for the gap."""
        self.password = m.password
        self.origin = m.origin
        self.autojoin = m.autojoin
        self.last_room_stanza_id = m.last_room_stanza_id
        self.last_stamp = m.last_stamp
        self.persisted = True
        if self.phase is not Phase.IDLE:
            return []
        return self._start_join(None)

    def timer_fired(self, name: str) -> list[Action]:
        if name == LINGER:
            if self.phase is Phase.JOINED and not self.joined and not self.pending:
                if not self.autojoin:
                    return self._leave(f"no client attached for {self.settings.linger:g}s")
            return []
        if name == REJOIN:
            if self.phase is Phase.JOINING and self.join_id is None:
                first = next(iter(self.pending.values()), None)
                return self._start_join(first.history if first is not None else None)
            return []
        if name == JOIN_TIMEOUT:
            if self.phase is Phase.JOINING and self.join_id is not None:
                if self.self_received:
                    return self._complete_join()
                return self._join_failed(None, "remote-server-timeout", "wait")
            return []
        if name == SETTLE:
            if self.phase is Phase.JOINING and self.self_received:
                return self._complete_join()
            return []
        if name == LEAVE_TIMEOUT:
            if self.phase is Phase.LEAVING:
                return self._left()
            return []
        if name == PING_TIMEOUT:
            if self.ping_id is not None:
                return self._ping_timed_out()
            return []
        return []

    def account_removed(self) -> list[Action]:
        """The account was deleted: leave the room."""
        self.autojoin = False
        if self.phase in (Phase.JOINED, Phase.JOINING):
            return self._leave("the account was deleted")
        return []

    def shutdown(self) -> list[Action]:
        """The server stops: keep the membership (it is restored at start), tell nobody."""
        return [self._persist()] if self.phase is Phase.JOINED else []


def frm_of(stanza: Element) -> str:
    return stanza.get("from") or ""


def _condition(err: Element | None) -> tuple[str, str | None]:
    if err is None:
        return "undefined-condition", None
    for c in err:
        if c.tag.startswith("{" + ns.STANZAS + "}") and not c.tag.endswith("}text"):
            return c.tag.split("}", 1)[1], err.get("type")
    return "undefined-condition", err.get("type")


# --------------------------------------------------------------------------- registry


class Occupancies:
    """Every (account, room) the server tracks. Pure bookkeeping, no I/O."""

    def __init__(
        self,
        settings: Settings | None = None,
        ids: Callable[[], str] = new_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or Settings()
        self.ids = ids
        self.clock = clock
        self._rooms: dict[tuple[JID, JID], Occupancy] = {}
        self._by_account: dict[JID, set[JID]] = {}

    def get(self, account: JID, room: JID) -> Occupancy | None:
        return self._rooms.get((account, room))

    def get_or_create(self, account: JID, room: JID, nick: str) -> Occupancy:
        key = (account, room)
        occ = self._rooms.get(key)
        if occ is None:
            occ = Occupancy(account, room, nick, self.settings, self.ids, self.clock)
            self._rooms[key] = occ
            self._by_account.setdefault(account, set()).add(room)
        return occ

    def discard_if_done(self, account: JID, room: JID) -> None:
        occ = self._rooms.get((account, room))
        if occ is not None and occ.disposable and not occ.autojoin:
            del self._rooms[(account, room)]
            rooms = self._by_account.get(account)
            if rooms is not None:
                rooms.discard(room)
                if not rooms:
                    del self._by_account[account]

    def rooms_of(self, account: JID) -> list[Occupancy]:
        return [self._rooms[(account, r)] for r in sorted(self._by_account.get(account, ()))]

    def __iter__(self) -> Iterator[Occupancy]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)

    def stats(self) -> dict[str, int]:
        joined = [o for o in self._rooms.values() if o.phase is Phase.JOINED]
        return {
            "account_join_rooms": len(joined),
            "account_join_joining": sum(
                1 for o in self._rooms.values() if o.phase is Phase.JOINING
            ),
            "account_join_clients": sum(len(o.joined) for o in self._rooms.values()),
            "account_join_accounts": len({o.account for o in joined}),
        }
