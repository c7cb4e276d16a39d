"""Account-join, the extension: the account (bare JID) is the room occupant, every client is served.

This module is the I/O around the pure state machine in ``machine.py``. ``register()`` lists
the stanza paths it takes:

* OUTBOUND presence, message and iq from a client to a room (any JID on another domain): joins,
  leaves, availability, nick changes, group chat, private messages, IQs to occupants;
* INBOUND_BARE presence, message and iq from a room the account is in, to the account;
* bookmark events (XEP-0402 and the legacy forms): autojoin makes the account join or leave;
* session end (wired in ``app.py``): a disconnect is never a leave.

Each input for one (account, room) runs from the machine's step to its last action without
yielding to the event loop, so two inputs for the same pair never interleave (no lock is needed);
the machine returns actions, carried out here in order. Stanzas for rooms go through the router
only (never into a room service directly), in order, from a per-(account, room) outbox, so a room
answering at once never re-enters a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from minimix.core.extension import Extension
from minimix.core.hooks import Direction, Hooks, IqScope, Priority
from minimix.core.router import Router
from minimix.core.session import Prepared, Session, SessionRegistry
from minimix.extensions.bookmark_events import Bookmark, BookmarkPublished, BookmarkRetracted
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, copy_shallow, error_reply, make, new_id
from minimix.protocol.xml import Element, ParseError, SubElement, parse_element, serialize, tag
from minimix.storage.account_join import AccountJoinStore, Membership
from minimix.storage.archive import (
    ArchiveQuery,
    ArchiveRow,
    ArchiveStore,
    SharedRow,
    UnknownArchiveId,
)

from . import stanzas as st
from .machine import (
    Action,
    ArchiveGroupchat,
    Backfill,
    CancelTimer,
    DeliverToAccount,
    FanOut,
    Forget,
    Occupancies,
    Occupancy,
    Persist,
    Phase,
    Progress,
    ReceivedPrivate,
    SendHistory,
    SendPresences,
    SentPrivate,
    Settings,
    StartTimer,
    ToClient,
    ToRoom,
)

log = logging.getLogger("minimix.account_join")

Key = tuple[JID, JID]
_MAM_RESULT = tag(ns.MAM, "result")
_MAM_FIN = tag(ns.MAM, "fin")
_FORWARDED = tag(ns.FORWARD, "forwarded")
_BACKFILL_PAGES = 20
_BACKFILL_PAGE = 100
_PRESENCE = "{jabber:client}presence"
# Serialized presences kept: half for those used more than once, half for those used once so
# far; the older half of either goes when it is full.
_PRESENCE_CACHE = 8192
# A serialized presence: its attributes but ``to``, its text, and the stanza prepared.
_CachedPresence = tuple[dict[str, str], str | None, Prepared]
# What a client attaching to an (account, room) was sent: the presences and their serializations.
_Replay = tuple[tuple[Element, ...], list[Prepared]]
_REPLAYS = 256  # rooms whose last replay is kept
_SHARED_PRESENCES = 4096  # room presences whose element the next account's copy may share
_K = TypeVar("_K")
# Actions that send nothing to a client: archived group chat may stay pending across them.
_QUIET_ACTIONS = (ArchiveGroupchat, Progress, Persist, Forget, StartTimer, CancelTimer, ToRoom)


class AccountArchive(Protocol):
    """The account's archive (``UserArchive``): stores once, adds ``<stanza-id by=account>``."""

    enabled: bool

    def store_message(
        self,
        account: JID,
        stanza: Element,
        *,
        with_jid: JID,
        kind: str | None = None,
        room_stanza_id: str | None = None,
        stamp: float | None = None,
    ) -> Element | None: ...

    def stage_groupchat(
        self,
        pending: list[ArchiveRow | SharedRow],
        account: JID,
        stanza: Element,
        room: JID,
        *,
        stamp: float | None = None,
        room_stanza_id: str | None = None,
    ) -> Prepared | None: ...

    def store_rows(self, rows: Sequence[ArchiveRow | SharedRow]) -> None: ...


class SentCopies(Protocol):
    """Message carbons (XEP-0280): ``<sent/>`` copies to carbons-enabled clients."""

    def copy_sent(
        self, origin: Session | None, stanza: Element, to_sessions: Iterable[Session]
    ) -> int: ...


AutojoinSource = Callable[[], Iterable[tuple[JID, Bookmark]]]


def worth_storing(stanza: Element) -> bool:
    """A private message worth a place in the archive (content, not a bare chat state)."""
    try:
        from minimix.extensions.archive.user import worth_archiving
    except ImportError:  # pragma: no cover - the archive is part of the server
        return stanza.find(st.BODY) is not None
    return worth_archiving(stanza)


class AccountJoin(Extension):
    """The account joins rooms; its clients attach to that occupancy (see the module docstring)."""

    name = "account_join"

    def __init__(
        self,
        *,
        domain: str,
        router: Router,
        sessions: SessionRegistry,
        store: AccountJoinStore,
        settings: Settings,
        archive: AccountArchive | None = None,
        archive_store: ArchiveStore | None = None,
        carbons: SentCopies | None = None,
        self_ping_interval: float = 900.0,
        autojoin_bookmarks: AutojoinSource | None = None,
        max_history: int = 1000,
        account_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self.domain = domain
        self.router = router
        self.sessions = sessions
        self.store = store
        self.archive = archive
        self.archive_store = archive_store
        self.carbons = carbons
        self.self_ping_interval = self_ping_interval
        self.autojoin_bookmarks = autojoin_bookmarks
        self.max_history = max_history
        self.account_exists = account_exists
        self.registry = Occupancies(settings)
        self.hooks: Hooks | None = None
        self._outbox: dict[Key, list[Element | Callable[[], Awaitable[None]]]] = {}
        self._timers: dict[tuple[Key, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._progress: dict[Key, tuple[str, float]] = {}
        self._waiting: dict[str, asyncio.Future[Element]] = {}
        self._backfills: dict[str, Key] = {}
        self._strays: dict[Key, float] = {}
        self._backfilled: dict[Key, int] = {}
        self._gap_fill_until: dict[Key, float] = {}  # gap-fills running or just finished
        # Group chat archived in one transaction per loop turn: the rows, the deliveries that
        # wait for them (delivered once stored, in order), the room stanza-ids among them.
        self._rows: list[ArchiveRow | SharedRow] = []
        self._waiting_rows: list[tuple[Prepared, tuple[JID, ...]]] = []
        self._pending_ids: set[tuple[JID, str]] = set()
        self._commit_scheduled = False
        # The last room message looked at: the copy, its children, whether it is worth storing.
        self._worth: tuple[Element, tuple[Element, ...], bool] | None = None
        # Presences sent to clients, serialized, by their children: those used more than once,
        # and those used once so far (see _prepared_presence).
        self._presences: dict[tuple[Element, ...], _CachedPresence] = {}
        self._presences_once: dict[tuple[Element, ...], _CachedPresence] = {}
        # The occupants' presences last sent to a client attaching, per room: every account's
        # copy of a room presence is one element (_shared_presence), so the next client
        # attaching, of whichever account, finds most of its presences there by identity.
        self._replays: dict[JID, _Replay] = {}
        # A room's presence, one element for every account's copy of it (see _shared_presence).
        self._room_presences: dict[tuple[Element, ...], Element] = {}
        self._room_presence_texts: dict[str, Element] = {}
        # While copies of one room message are handled: that message, serialized once (on
        # first use: archived group chat is delivered as each account's stored copy instead).
        self._sharing: Element | None = None
        self._shared: Prepared | None = None
        self._stopped = False

    # ------------------------------------------------------------------ table of contents
    def register(self, hooks: Hooks) -> None:
        self.hooks = hooks
        # A client's stanzas to rooms (before the presence extension records directed presence).
        hooks.on_stanza(Direction.OUTBOUND, "presence", self.client_presence, Priority.INTERCEPT)
        hooks.on_stanza(Direction.OUTBOUND, "message", self.client_message, Priority.INTERCEPT)
        hooks.on_stanza(Direction.OUTBOUND, "iq", self.client_iq, Priority.INTERCEPT)
        # A room's stanzas to the account (before the presence, archive and delivery paths).
        hooks.on_stanza(Direction.INBOUND_BARE, "presence", self.room_presence, Priority.INTERCEPT)
        hooks.on_stanza(Direction.INBOUND_BARE, "message", self.room_message, Priority.INTERCEPT)
        hooks.on_stanza(Direction.INBOUND_BARE, "iq", self.room_iq, Priority.INTERCEPT)
        # A room's group chat for many accounts at once: one pass, one serialization.
        hooks.on_copies("message", self.room_copies, Priority.INTERCEPT)
        # Bookmarks drive membership (XEP-0402, and the legacy forms through their compat layer).
        hooks.on_event(BookmarkPublished, self.bookmark_published)
        hooks.on_event(BookmarkRetracted, self.bookmark_retracted)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.store.clear_clients()
        self._spawn(self._restore())
        if math.isfinite(self.self_ping_interval) and self.self_ping_interval > 0:
            self._spawn(self._ping_rooms_forever())
        self._spawn(self._flush_progress_forever())

    async def stop(self) -> None:
        """Keep every membership for the next start; tell nobody (the server is going away)."""
        self.store_pending()
        self._stopped = True
        for occ in self.registry:
            for action in occ.shutdown():
                if isinstance(action, Persist):
                    self.store.save(action.membership)
        self._flush_progress()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()

    def stats(self) -> dict[str, int]:
        """Gauges for the metrics page: rooms joined, attached clients, rooms being joined."""
        return self.registry.stats()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restore(self) -> None:
        """At start: back into every persisted room and every autojoin bookmark (§4, §7.3)."""
        memberships = self.store.memberships()
        wanted: dict[Key, Membership] = {}
        for m in memberships:
            account, room = try_parse(m.account), try_parse(m.room)
            if account is not None and room is not None:
                wanted[(account, room)] = m
        if self.autojoin_bookmarks is not None:
            try:
                bookmarks = list(self.autojoin_bookmarks())
            except Exception:
                log.exception("could not read autojoin bookmarks")
                bookmarks = []
            for account, b in bookmarks:
                key = (account.bare, b.room.bare)
                old = wanted.get(key)
                wanted[key] = Membership(
                    str(key[0]),
                    str(key[1]),
                    b.nick or (old.nick if old else account.local),
                    b.password or (old.password if old else None),
                    "bookmark",
                    True,
                    old.last_room_stanza_id if old else None,
                    old.last_stamp if old else None,
                )
        if wanted:
            log.info("rejoining %d rooms", len(wanted))
        for (account, room), m in wanted.items():
            if self.account_exists is not None and not self.account_exists(account.local):
                self.store.forget_account(str(account))  # deleted while the server was down
                continue
            last = None
            if self.archive_store is not None:
                last = self.archive_store.last_room_stanza(str(account), str(room))
            if last is not None and (m.last_stamp is None or last[1] >= m.last_stamp):
                m = Membership(
                    m.account,
                    m.room,
                    m.nick,
                    m.password,
                    m.origin,
                    m.autojoin,
                    last[0],
                    last[1],
                )
            await self._run(account, room, _restorer(m), create=m.nick)

    # ------------------------------------------------------------------ the core loop
    async def _run(
        self,
        account: JID,
        room: JID,
        step: Callable[[Occupancy], list[Action] | None],
        create: str | None = None,
    ) -> bool:
        """Run one input for (account, room); False when it was not ours."""
        return self._step(account, room, step, create)

    def _step(
        self,
        account: JID,
        room: JID,
        step: Callable[[Occupancy], list[Action] | None],
        create: str | None = None,
    ) -> bool:
        """One input for (account, room), from the machine's step to the last action carried
        out, without yielding to the event loop: the inputs of one (account, room) never
        interleave, and what has to wait (routing to the room) goes through its outbox."""
        occ = self.registry.get(account, room)
        if occ is None:
            if create is None:
                return False
            occ = self.registry.get_or_create(account, room, create)
            if self.archive_store is not None:
                self.store_pending()
                # What the account archived from this room before: the gap starts there.
                last = self.archive_store.last_room_stanza(str(account), str(room))
                if last is not None:
                    occ.last_room_stanza_id, occ.last_stamp = last
        return self._step_on(account, room, occ, step)

    def _step_on(
        self,
        account: JID,
        room: JID,
        occ: Occupancy,
        step: Callable[[Occupancy], list[Action] | None],
    ) -> bool:
        """:meth:`_step` on the occupancy of (account, room), found already."""
        actions = step(occ)
        if actions is None:
            self.registry.discard_if_done(account, room)
            return False
        self._apply((account, room), occ, actions)
        self.registry.discard_if_done(account, room)
        return True

    def _apply(self, key: Key, occ: Occupancy, actions: list[Action]) -> None:
        for a in actions:
            try:
                self._apply_one(key, occ, a)
            except Exception:
                log.exception("account-join could not carry out %s", type(a).__name__)

    def _apply_one(self, key: Key, occ: Occupancy, a: Action) -> None:
        account, room = key
        # The two actions of every room message first.
        if isinstance(a, ArchiveGroupchat):
            self._archive_groupchat(key, a)
            return
        if isinstance(a, Progress):
            self._progress[key] = (a.room_stanza_id, a.stamp)
            return
        if self._archiving() and not isinstance(a, _QUIET_ACTIONS):
            self.store_pending()  # what waits to be stored reaches clients before this
        if isinstance(a, ToRoom):
            self._to_room(key, a.stanza)
        elif isinstance(a, ToClient):
            s = self.sessions.get(a.client)
            if s is not None:
                if a.stanza.tag == _PRESENCE and a.stanza.get("to") == str(a.client):
                    s.send_prepared(self._prepared_presence(a.stanza))
                else:
                    s.send(a.stanza)
        elif isinstance(a, SendPresences):
            self._send_presences(key, a.client, a.presences)
        elif isinstance(a, FanOut):
            self._fan_out(a.stanza, a.clients)
        elif isinstance(a, ReceivedPrivate):
            self._received_private(key, a)
        elif isinstance(a, SentPrivate):
            self._sent_private(key, a)
        elif isinstance(a, SendHistory):
            self._send_history(key, a)
        elif isinstance(a, DeliverToAccount):
            stanza = a.stanza
            self._later(key, lambda: self._deliver_to_account(stanza, account))
        elif isinstance(a, StartTimer):
            self._start_timer(key, a.name, a.delay)
        elif isinstance(a, CancelTimer):
            handle = self._timers.pop((key, a.name), None)
            if handle is not None:
                handle.cancel()
        elif isinstance(a, Persist):
            if not self._stopped:
                self.store.save(a.membership)
        elif isinstance(a, Forget):
            self._progress.pop(key, None)
            self._replays.pop(key[1], None)
            if not self._stopped:
                self.store.forget(str(account), str(room))
        elif isinstance(a, Backfill):
            self._spawn(self._backfill(key, a.after_id))

    # ------------------------------------------------------------------ output
    def _to_room(self, key: Key, stanza: Element) -> None:
        self._enqueue(key, stanza)

    def _later(self, key: Key, job: Callable[[], Awaitable[None]]) -> None:
        self._enqueue(key, job)

    def _enqueue(self, key: Key, item: Element | Callable[[], Awaitable[None]]) -> None:
        queue = self._outbox.get(key)
        if queue is not None:
            queue.append(item)
            return
        self._outbox[key] = [item]
        self._spawn(self._drain(key))

    async def _drain(self, key: Key) -> None:
        """Route what one (account, room) sends, in order, outside its lock."""
        queue = self._outbox.get(key, [])
        try:
            while queue:
                item = queue.pop(0)
                try:
                    if isinstance(item, Element):
                        await self.router.route(item, None)
                    else:
                        await item()
                except Exception:
                    log.exception("account-join could not send to %s", key[1])
        finally:
            if self._outbox.get(key) is queue:
                del self._outbox[key]

    def _fan_out(self, stanza: Element, clients: Iterable[JID]) -> None:
        """Serialize once, splice each client's ``to`` (no copy, no re-serialization).

        Occupants' presences are kept serialized while they are current: a client attaching
        to a big room is sent every one of them, and each attaching client again."""
        if stanza.tag == _PRESENCE:
            self._deliver(self._prepared_presence(stanza), clients)
        else:
            self._deliver(self._prepared_message(stanza), clients)

    def _prepared_message(self, stanza: Element) -> Prepared:
        """``stanza`` serialized: once for every account's copy of the room message being
        handed out, if it is that one."""
        if stanza is self._sharing:
            if self._shared is None:
                self._shared = Prepared(stanza)
            return self._shared
        return Prepared(stanza)

    def _send_presences(self, key: Key, client: JID, presences: tuple[Element, ...]) -> None:
        """The occupants' presences for one attaching client, written in one go: each
        serialized once for every account and client (cached while current); what the last
        client attaching to this room was sent, of whichever account, is reused as it stands or
        presence by presence."""
        session = self.sessions.get(client)
        if session is None:
            return
        replays = self._replays
        room = key[1]
        last = replays.pop(room, None)
        if last is not None and last[0] == presences:  # elements compare by identity
            batch = last[1]
        else:
            batch = self._prepared_presences(presences, last)
        replays[room] = (presences, batch)
        if len(replays) > _REPLAYS:
            del replays[next(iter(replays))]
        session.send_prepared_many(batch)

    def _prepared_presences(
        self, presences: tuple[Element, ...], last: _Replay | None
    ) -> list[Prepared]:
        """:meth:`_prepared_presence` of each, in a loop of its own (the cache's hits checked
        in place); presences that ``last`` had already are taken from it."""
        known_ids: dict[int, Prepared] = {}
        if last is not None:  # its presences are alive (it holds them): their ids are theirs
            known_ids = dict(zip(map(id, last[0]), last[1], strict=True))
        cached = self._presences.get
        batch: list[Prepared] = []
        add = batch.append
        for p in presences:
            if known_ids:
                prepared = known_ids.get(id(p))
                if prepared is not None:
                    add(prepared)
                    continue
            hit = cached(tuple(p))
            if hit is not None:
                attrs = p.attrib
                known = hit[0]
                if (
                    len(known) == len(attrs) - ("to" in attrs)
                    and known.items() <= attrs.items()
                    and hit[1] == p.text
                ):
                    add(hit[2])
                    continue
            add(self._prepared_presence(p))
        return batch

    def _prepared_presence(self, presence: Element) -> Prepared:
        """The presence serialized, from a cache keyed on its children (shared by every copy
        of it, whoever it is addressed to) and checked against its other attributes.

        Presences used more than once (an occupant's presence that the room sent every account
        in it) are kept apart from those used once so far (the copies a room makes for one
        account as it joins): a big room's joins, each with copies of its own, do not push out
        what every client attaching to the room needs."""
        kids = tuple(presence)
        attrs = presence.attrib
        # The same attributes but ``to``, without a copy: as many (one more with a ``to``), and
        # the cached ones among them.
        size = len(attrs) - ("to" in attrs)
        text = presence.text
        hit = self._presences.get(kids)  # elements hash and compare by identity
        if hit is not None:
            known = hit[0]
            if len(known) == size and known.items() <= attrs.items() and hit[1] == text:
                return hit[2]
        once = self._presences_once
        hit = once.get(kids)
        if hit is not None:
            known = hit[0]
            if len(known) == size and known.items() <= attrs.items() and hit[1] == text:
                del once[kids]
                _keep(self._presences, kids, hit)
                return hit[2]
        without_to = dict(attrs)
        without_to.pop("to", None)
        prepared = Prepared(presence)
        _keep(once, kids, (without_to, text, prepared))
        return prepared

    def _deliver(self, prepared: Prepared, clients: Iterable[JID]) -> None:
        n = 0
        for c in clients:
            s = self.sessions.get(c)
            if s is not None:
                s.send_prepared(prepared)
                n += 1
        if n:
            self.router.count("account_join_fanout", n)

    def _archive_groupchat(self, key: Key, a: ArchiveGroupchat) -> None:
        account, room = key
        sid = a.room_stanza_id
        if sid is not None and self.archive_store is not None:
            if (account, sid) in self._pending_ids:
                return  # already on its way into the archive (and to the clients)
            if (a.stamp is not None or self._gap_fill_until) and self._may_be_archived(key, a):
                self.store_pending()
                if self.archive_store.has_room_stanza(str(account), sid):
                    return  # already archived (and delivered): history overlapping ours
        # Conversation is kept; chat states and other ephemera are only delivered.
        prepared = None
        if self.archive is not None and self.archive.enabled and self._worth_storing(a.stanza):
            prepared = self.archive.stage_groupchat(
                self._rows, account, a.stanza, room, stamp=a.stamp, room_stanza_id=sid
            )
        if prepared is None:
            if a.clients:
                if self._archiving():  # after the group chat on its way into the archive
                    self._waiting_rows.append((self._prepared_message(a.stanza), a.clients))
                    self._store_at_end_of_turn()
                else:
                    self._fan_out(a.stanza, a.clients)
            return
        if sid is not None:
            self._pending_ids.add((account, sid))
        self._waiting_rows.append((prepared, a.clients))
        self._store_at_end_of_turn()

    def _archiving(self) -> bool:
        """Whether group chat is on its way into the archive (what a client is sent next
        goes after it)."""
        return bool(self._waiting_rows)

    def _store_at_end_of_turn(self) -> None:
        # At the end of this loop turn: every account's row of the room messages handled in
        # the turn, in one transaction, then their deliveries.
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._store_now)

    def _store_now(self) -> None:
        self._commit_scheduled = False
        self.store_pending()

    def store_pending(self) -> None:
        """Store the group chat archived so far in one transaction, then deliver each message
        to its clients, in order: nothing reaches a client before it is stored. Runs at the
        end of the loop turn a message was archived in, and before anything else account-join
        sends to a client or reads from the archive, so the order of delivery is kept and the
        archive holds what was delivered."""
        rows, waiting = self._rows, self._waiting_rows
        if not waiting:
            return
        self._rows, self._waiting_rows, self._pending_ids = [], [], set()
        if rows:
            assert self.archive is not None
            try:
                self.archive.store_rows(rows)
            except Exception:
                log.exception(
                    "%d group chat messages could not be archived or delivered", len(rows)
                )
                return
        for prepared, clients in waiting:
            if clients:
                self._deliver(prepared, clients)

    def _worth_storing(self, stanza: Element) -> bool:
        """:func:`worth_storing` for group chat, worked out once per room message (every
        account's copy shares the room's children)."""
        memo = self._worth
        if memo is not None and memo[0] is stanza and len(stanza) == len(memo[1]):
            return memo[2]  # the same copy as the last account's
        kids = tuple(stanza)
        if memo is not None and memo[1] == kids:  # elements compare by identity
            self._worth = (stanza, kids, memo[2])
            return memo[2]
        worth = worth_storing(copy_shallow(stanza, type="chat"))
        self._worth = (stanza, kids, worth)
        return worth

    def _may_be_archived(self, key: Key, a: ArchiveGroupchat) -> bool:
        """Whether the account's archive can hold this message already: history (it carries
        the room's ``<delay>``), or a message that a gap-fill of this room fetched from the
        room's archive too (while one runs and a minute after). A live message otherwise
        reaches the account once, so the database is not asked about every one."""
        if a.stamp is not None:
            return True
        until = self._gap_fill_until.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._gap_fill_until[key]
            return False
        return True

    def _received_private(self, key: Key, a: ReceivedPrivate) -> None:
        account = key[0]
        stored = None
        if self.archive is not None and worth_storing(a.stanza):
            stored = self.archive.store_message(account, a.stanza, with_jid=a.occupant)
        out = stored if stored is not None else a.stanza
        if a.clients:
            self._fan_out(out, a.clients)
        else:
            self._later(key, lambda: self._deliver_to_account(out, account))

    def _sent_private(self, key: Key, a: SentPrivate) -> None:
        account = key[0]
        stored = None
        if self.archive is not None and worth_storing(a.stanza):
            stored = self.archive.store_message(account, a.stanza, with_jid=a.occupant)
        if self.carbons is not None and a.others:
            others = [s for c in a.others if (s := self.sessions.get(c)) is not None]
            self.carbons.copy_sent(
                self.sessions.get(a.client), stored if stored is not None else a.stanza, others
            )

    async def _deliver_to_account(self, stanza: Element, account: JID) -> None:
        """RFC 6121 delivery to the bare JID, except that nothing is ever bounced to a room."""
        targets = [s for s in self.sessions.of_account(account) if s.available and s.priority >= 0]
        if targets:
            top = max(s.priority for s in targets)
            for s in targets:
                if s.priority == top:
                    s.send(copy_shallow(stanza, to=str(account)))
            return
        for handler in self.router.undeliverable:
            try:
                if await handler(stanza):
                    return
            except StanzaError as err:
                log.info("a room message to %s was not kept (%s)", account, err.condition)
                return
        log.debug("a room message to %s had nowhere to go", account)

    def _send_history(self, key: Key, a: SendHistory) -> None:
        """A client's own ``<history/>``, answered from the account's archive (§2)."""
        account, room = key
        session = self.sessions.get(a.client)
        if session is None or self.archive_store is None:
            return
        req = a.request
        want = self.max_history if req.maxstanzas is None else min(req.maxstanzas, self.max_history)
        if want <= 0:
            return
        picked: list[tuple[float, str]] = []
        before = ""
        for _ in range(50):
            try:
                page = self.archive_store.query(
                    str(account),
                    ArchiveQuery(
                        with_jid=str(room),
                        start=req.start(time.time()),
                        max=want,
                        before=before,
                        include_groupchat=True,
                    ),
                )
            except UnknownArchiveId:
                break
            for item in reversed(page.items):
                if item.kind == "groupchat" and len(picked) < want:
                    picked.append((item.stamp, item.stanza))
            if page.complete or not page.items or len(picked) >= want:
                break
            before = page.items[0].id
        if req.maxchars is not None:
            kept: list[tuple[float, str]] = []
            total = 0
            for stamp, text in picked:  # newest first
                total += len(text)
                if total > req.maxchars:
                    break
                kept.append((stamp, text))
            picked = kept
        for stamp, text in reversed(picked):
            try:
                el = parse_element(text)
            except ParseError:
                continue
            if el.find(st.DELAY) is None:
                el.append(st.delay(stamp, str(room)))
            session.send(copy_shallow(el, to=str(a.client)))

    # ------------------------------------------------------------------ timers
    def _start_timer(self, key: Key, name: str, delay: float) -> None:
        old = self._timers.pop((key, name), None)
        if old is not None:
            old.cancel()
        if self._stopped or not math.isfinite(delay):
            return
        loop = asyncio.get_running_loop()
        self._timers[(key, name)] = loop.call_later(max(0.0, delay), self._fire, key, name)

    def _fire(self, key: Key, name: str) -> None:
        self._timers.pop((key, name), None)
        if self._stopped:
            return
        account, room = key
        self._spawn(self._run(account, room, lambda occ: occ.timer_fired(name)))

    async def _ping_rooms_forever(self) -> None:
        """Server-side self-ping (XEP-0410 from the bare JID): is the account still in there?"""
        while not self._stopped:
            await asyncio.sleep(self.self_ping_interval)
            for occ in self.registry:
                if occ.phase is Phase.JOINED:
                    await self._run(occ.account, occ.room, lambda o: o.self_ping())

    async def _flush_progress_forever(self) -> None:
        while not self._stopped:
            await asyncio.sleep(2.0)
            self._flush_progress()

    def _flush_progress(self) -> None:
        progress, self._progress = self._progress, {}
        for (account, room), (sid, stamp) in progress.items():
            try:
                self.store.progress(str(account), str(room), sid, stamp)
            except Exception:
                log.exception("could not record progress for %s in %s", account, room)

    # ------------------------------------------------------------------ client -> room
    def _room_jid(self, stanza: Element) -> JID | None:
        """The ``to`` of a stanza for a room: a JID with a localpart on another domain."""
        to = try_parse(stanza.get("to"))
        if to is None or not to.local or to.domain == self.domain:
            return None
        return to

    async def client_presence(self, stanza: Element, origin: Any) -> bool:
        if not isinstance(origin, Session) or self._stopped:
            return False
        client = origin.jid
        account = origin.account
        if "to" not in stanza.attrib:
            # Broadcast presence: it changes the account's aggregate presence in each room.
            for occ in self.registry.rooms_of(account):
                if client in occ.joined or client in occ.pending:
                    await self._run(account, occ.room, lambda o: o.client_broadcast(client, stanza))
            return False
        to = self._room_jid(stanza)
        if to is None:
            return False
        room = to.bare
        if st.is_join(stanza):
            return await self._run(
                account,
                room,
                lambda o: o.client_join(client, stanza),
                create=to.resource or account.local,
            )
        ptype = stanza.get("type")
        if ptype == "unavailable":
            return await self._run(account, room, lambda o: o.client_leave(client, stanza))
        if ptype is None:
            return await self._run(
                account, room, lambda o: o.client_presence_to_room(client, stanza)
            )
        return False

    async def client_message(self, stanza: Element, origin: Any) -> bool:
        if not isinstance(origin, Session) or self._stopped:
            return False
        to = self._room_jid(stanza)
        if to is None:
            return False
        client = origin.jid
        return await self._run(origin.account, to.bare, lambda o: o.client_message(client, stanza))

    async def client_iq(self, stanza: Element, origin: Any) -> bool:
        if not isinstance(origin, Session) or self._stopped:
            return False
        to = self._room_jid(stanza)
        if to is None:
            return False
        client = origin.jid
        return await self._run(origin.account, to.bare, lambda o: o.client_iq(client, stanza))

    async def session_ended(self, session: Session) -> None:
        """A client went away for good (no stream resumption): detach it, tell nobody."""
        client = session.jid
        for occ in self.registry.rooms_of(session.account):
            if client in occ.joined or client in occ.pending:
                await self._run(session.account, occ.room, lambda o: o.client_gone(client))

    # ------------------------------------------------------------------ room -> account
    def _room_key(self, stanza: Element) -> Key | None:
        to = try_parse(stanza.get("to"))
        frm = try_parse(stanza.get("from"))
        if to is None or frm is None or not to.local or to.resource or not frm.local:
            return None
        if frm.domain == self.domain:
            return None  # rooms live on other domains; this is one of our own users
        return to, frm.bare

    async def room_presence(self, stanza: Element, origin: Any) -> bool:
        key = self._room_key(stanza)
        if key is None:
            return False
        if self.registry.get(*key) is None:
            # A room's word about an occupancy we no longer hold (a late answer to a leave):
            # it is for the account-join engine, not for the account's clients.
            return stanza.find(st.USER_X) is not None and stanza.get("type") != "error"
        if self._stopped:
            return True
        shared = self._shared_presence(stanza)
        try:
            await self._run(key[0], key[1], lambda o: o.room_presence(shared))
        except Exception:
            log.exception("account-join failed on a presence from %s", key[1])
        return True

    async def room_message(self, stanza: Element, origin: Any) -> bool:
        key = self._room_key(stanza)
        if key is None:
            return False
        result = stanza.find(_MAM_RESULT)
        if result is not None and result.get("queryid") in self._backfills:
            self._backfill_item(self._backfills[result.get("queryid", "")], result)
            return True
        if self.registry.get(*key) is None:
            if stanza.get("type") == "groupchat":
                self._stray_groupchat(key)
                return True  # never bounced: a bounce gets the account removed as a ghost
            return False
        if self._stopped:
            return True
        try:
            self._step(key[0], key[1], lambda o: o.room_message(stanza))
        except Exception:
            log.exception("account-join failed on a message from %s", key[1])
        return True

    def room_copies(self, stanza: Element, recipients: list[str], origin: Any) -> list[str]:
        """A room's group chat for many recipients: each account in the room takes its copy in
        one pass (the same step as :meth:`room_message`, without a copy, a routing decision
        or a serialization per account); the recipients left are routed one copy at a time."""
        if stanza.get("type") != "groupchat" or self._stopped:
            return recipients
        frm = try_parse(stanza.get("from"))
        if frm is None or not frm.local or frm.domain == self.domain:
            return recipients
        room = frm.bare
        get = self.registry.get
        domain = self.domain
        left: list[str] = []
        self._sharing = stanza

        def step(o: Occupancy) -> list[Action] | None:
            return o.room_message(stanza)

        try:
            for to in recipients:
                account = try_parse(to)
                occ = (
                    None
                    if account is None or account.resource or account.domain != domain
                    else get(account, room)
                )
                if occ is None:
                    left.append(to)
                    continue
                assert account is not None
                try:
                    self._step_on(account, room, occ, step)
                except Exception:
                    log.exception("account-join failed on a message from %s", room)
        finally:
            self._sharing = self._shared = None
        return left

    def _shared_presence(self, presence: Element) -> Element:
        """One element for every account's copy of a room presence (copies differ only in
        ``to``, which account-join never sends on): each account's occupancy holds that one,
        so it is kept once, serialized once, and an attaching client's presences are the same
        objects whichever account it is of. Copies of one broadcast share their children; a
        copy the room made for one account alone (the occupants' presences as it joined) is
        matched by its text, once."""
        kids = tuple(presence)
        if not kids:
            return presence
        by_kids = self._room_presences
        shared = by_kids.get(kids)  # elements hash and compare by identity
        if shared is not None:
            attrs, known = presence.attrib, shared.attrib
            if (
                len(attrs) - ("to" in attrs) == len(known) - ("to" in known)
                and all(attrs.get(k) == v for k, v in known.items() if k != "to")
                and shared.text == presence.text
            ):
                return shared
        text = serialize(copy_shallow(presence, to=None))
        by_text = self._room_presence_texts
        shared = by_text.get(text)
        if shared is None:
            shared = presence
            _bounded_put(by_text, text, shared)
        _bounded_put(by_kids, kids, shared)
        return shared

    def _stray_groupchat(self, key: Key) -> None:
        """Group chat from a room the account is not in (as far as we know): leave it politely."""
        now = time.monotonic()
        if now - self._strays.get(key, -math.inf) < 60:
            return
        if len(self._strays) > 4096:
            self._strays = {k: t for k, t in self._strays.items() if now - t < 60}
        self._strays[key] = now
        account, room = key
        log.info("%s receives group chat from %s without being in it; leaving", account, room)
        self._to_room(key, make("presence", to=room, from_=account, type_="unavailable"))

    async def room_iq(self, stanza: Element, origin: Any) -> bool:
        iid = stanza.get("id") or ""
        if stanza.get("type") in ("result", "error") and iid in self._waiting:
            fut = self._waiting.pop(iid)
            if not fut.done():
                fut.set_result(stanza)
            return True
        key = self._room_key(stanza)
        if key is None or self.registry.get(*key) is None:
            return False
        try:
            taken = await self._run(key[0], key[1], lambda o: o.room_iq(stanza))
        except Exception:
            log.exception("account-join failed on an iq from %s", key[1])
            return True
        if taken:
            return True
        # A get/set for the account (disco, vCard...): the server's handlers answer as the
        # account; with no handler, answer without a condition that gets occupants kicked.
        if len(stanza) == 1 and self.hooks is not None:
            if self.hooks.iq_handler(stanza.get("type", ""), stanza[0].tag, IqScope.ACCOUNT):
                return False
        reply = error_reply(stanza, StanzaError("feature-not-implemented"))
        self._to_room(key, reply)
        return True

    # ------------------------------------------------------------------ bookmarks (§7)
    async def bookmark_published(self, event: BookmarkPublished) -> None:
        account = event.account.bare
        b = event.bookmark
        room = b.room.bare
        if self.registry.get(account, room) is None and not b.autojoin:
            return
        await self._run(
            account,
            room,
            lambda o: o.bookmark_set(b.autojoin, b.nick, b.password),
            create=b.nick or account.local,
        )

    async def bookmark_retracted(self, event: BookmarkRetracted) -> None:
        account = event.account.bare
        await self._run(account, event.room.bare, lambda o: o.bookmark_removed())

    async def account_deleted(self, username: str) -> None:
        """The account is gone: it leaves every room."""
        account = JID(username, self.domain, "")
        for occ in self.registry.rooms_of(account):
            await self._run(account, occ.room, lambda o: o.account_removed())
        self.store.forget_account(str(account))

    # ------------------------------------------------------------------ gap-fill from room MAM
    async def _ask(self, key: Key, iq: Element, timeout: float = 10.0) -> Element | None:
        iid = iq.get("id") or new_id()
        iq.set("id", iid)
        fut: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._waiting[iid] = fut
        self._to_room(key, iq)
        try:
            return await asyncio.wait_for(fut, timeout)
        except (TimeoutError, asyncio.CancelledError):
            return None
        finally:
            self._waiting.pop(iid, None)

    async def _backfill(self, key: Key, after_id: str) -> None:
        """Fetch what the room archived after ``after_id`` (XEP-0313 on the room JID), when the
        room offers it; every message is archived once (deduplicated by the room's stanza-id)."""
        self._gap_fill_until[key] = math.inf
        try:
            await self._gap_fill(key, after_id)
        finally:
            self._gap_fill_until[key] = time.monotonic() + 60.0

    async def _gap_fill(self, key: Key, after_id: str) -> None:
        account, room = key
        info = make("iq", to=room, from_=account, type_="get")
        SubElement(info, tag(ns.DISCO_INFO, "query"))
        answer = await self._ask(key, info)
        if answer is None or answer.get("type") != "result":
            return
        feats = {f.get("var") for f in answer.iter(tag(ns.DISCO_INFO, "feature"))}
        if ns.MAM not in feats:
            return
        after = after_id
        self._backfilled[key] = 0
        for _ in range(_BACKFILL_PAGES):
            qid = new_id()
            self._backfills[qid] = key
            q = make("iq", to=room, from_=account, type_="set")
            query = SubElement(q, tag(ns.MAM, "query"), {"queryid": qid})
            rsm = SubElement(query, tag(ns.RSM, "set"))
            SubElement(rsm, tag(ns.RSM, "max")).text = str(_BACKFILL_PAGE)
            SubElement(rsm, tag(ns.RSM, "after")).text = after
            try:
                res = await self._ask(key, q, timeout=30.0)
            finally:
                self._backfills.pop(qid, None)
            if res is None or res.get("type") != "result":
                break
            fin = res.find(_MAM_FIN)
            if fin is None:
                break
            last = fin.findtext(f"{{{ns.RSM}}}set/{{{ns.RSM}}}last")
            if fin.get("complete") in ("true", "1") or not last:
                break
            after = last
        added = self._backfilled.pop(key, 0)
        if added:
            log.info("%s back-filled %d messages from %s", account, added, room)

    def _backfill_item(self, key: Key, result: Element) -> None:
        account, room = key
        self.store_pending()  # the archive is read below: it must hold what is on its way
        fwd = result.find(_FORWARDED)
        inner = fwd.find("{jabber:client}message") if fwd is not None else None
        rid = result.get("id")
        if inner is None or not rid or self.archive_store is None:
            return
        if self.archive_store.has_room_stanza(str(account), rid):
            return
        d = fwd.find(st.DELAY) if fwd is not None else None
        stamp = st.parse_stamp(d.get("stamp")) if d is not None else None
        msg = st.restamped(inner, str(account))
        if st.stanza_id_by(msg, str(room)) is None:
            msg.append(st.stanza_id(rid, str(room)))
        if msg.find(st.DELAY) is None and stamp is not None:
            msg.append(st.delay(stamp, str(room)))
        msg.set("to", str(account))
        if self.archive is not None:
            self.archive.store_message(
                account, msg, with_jid=room, kind="groupchat", room_stanza_id=rid, stamp=stamp
            )
            self._backfilled[key] = self._backfilled.get(key, 0) + 1
            if stamp is not None:
                occ = self.registry.get(account, room)
                if occ is not None and (occ.last_stamp is None or stamp >= occ.last_stamp):
                    occ.last_stamp = stamp
                    occ.last_room_stanza_id = rid
                    self._progress[key] = (rid, stamp)


def _keep(
    cache: dict[tuple[Element, ...], _CachedPresence],
    kids: tuple[Element, ...],
    entry: _CachedPresence,
) -> None:
    """Add to one half of the presence cache; when full, its older half goes first."""
    if len(cache) >= _PRESENCE_CACHE // 2:
        for old in list(itertools.islice(cache, len(cache) // 2)):
            del cache[old]
    cache[kids] = entry


def _restorer(m: Membership) -> Callable[[Occupancy], list[Action]]:
    return lambda occ: occ.restore(m)


def _bounded_put(table: dict[_K, Element], key: _K, value: Element) -> None:
    """``table[key] = value``, the older half of the table dropped when it is full."""
    if len(table) >= _SHARED_PRESENCES and key not in table:
        for old in list(itertools.islice(table, len(table) // 2)):
            del table[old]
    table[key] = value
