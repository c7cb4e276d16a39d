"""XEP-0313 Message Archive Management for accounts: every conversation message stored once.

Outbound messages are archived when a client sends them, inbound ones when they reach the
account (bare or full JID) — before delivery, so forking to several clients, carbons and
offline storage all see one copy with one id. Each inbound copy gets an XEP-0359
``<stanza-id by='account'>``; any such element a sender put there itself is removed first.

Group chat is not archived here: account-join stores it (and MUC private messages it fans out)
through :meth:`UserArchive.store`, once each. Queries leave group chat out unless the client asks
with ``include-groupchat`` or queries ``with`` a room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from minimix.config import ArchiveConfig
from minimix.core.extension import Extension
from minimix.core.hooks import Direction, Hooks, IqScope, Priority
from minimix.core.session import Prepared, Session
from minimix.extensions.archive import protocol
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, copy_shallow, stanza_type
from minimix.protocol.xml import Element, SubElement, escape_attr, serialize, tag
from minimix.storage.archive import (
    ACCOUNT_MARK,
    ArchivePrefs,
    ArchiveRow,
    ArchiveStore,
    SharedRow,
    new_archive_id,
)
from minimix.storage.stores import AccountStore, RosterStore

log = logging.getLogger(__name__)

STANZA_ID = tag(ns.SID, "stanza-id")
_HINT_NO_STORE = (tag(ns.HINTS, "no-store"), tag(ns.HINTS, "no-permanent-store"))
_HINT_STORE = tag(ns.HINTS, "store")
# Payloads that make a message without a body worth keeping.
_WORTH_KEEPING = (
    tag(ns.EME, "encryption"),
    tag(ns.OMEMO_LEGACY, "encrypted"),
    tag(ns.OMEMO, "encrypted"),
    tag(ns.OPENPGP, "openpgp"),
    tag(ns.CONFERENCE, "x"),
    tag(ns.CHAT_MARKERS, "displayed"),
    tag(ns.CHAT_MARKERS, "received"),
    tag(ns.CHAT_MARKERS, "acknowledged"),
    tag(ns.MESSAGE_RETRACT, "retract"),
    tag(ns.REACTIONS, "reactions"),
)
# Messages that are protocol traffic, never conversation (copies, results, events).
_NEVER = (
    tag(ns.CARBONS, "sent"),
    tag(ns.CARBONS, "received"),
    tag(ns.MAM, "result"),
    tag(ns.PUBSUB_EVENT, "event"),
)
_MODES = ("always", "never", "roster")
# Archive priority: after filters (blocking) and account-join, before carbons and delivery.
ARCHIVE_PRIORITY = int(Priority.OBSERVE) + 10


def worth_archiving(stanza: Element) -> bool:
    """Whether a one-to-one message belongs in a user archive (XEP-0313 §7.1.1)."""
    if stanza_type(stanza) not in ("chat", "normal"):
        return False
    for t in _NEVER:
        if stanza.find(t) is not None:
            return False
    for t in _HINT_NO_STORE:
        if stanza.find(t) is not None:
            return False
    if stanza.find(_HINT_STORE) is not None or stanza.find("{jabber:client}body") is not None:
        return True
    if stanza.find(f"{{{ns.MUC_USER}}}x/{{{ns.MUC_USER}}}invite") is not None:
        return True
    return any(stanza.find(t) is not None for t in _WORTH_KEEPING)


def strip_stanza_ids(stanza: Element, by: str) -> None:
    """Remove every ``<stanza-id by=by>`` (XEP-0359 §5: only the archive itself may set it)."""
    for sid in stanza.findall(STANZA_ID):
        if sid.get("by") == by:
            stanza.remove(sid)


class UserArchive(Extension):
    """The account's archive: hooks that store, and the MAM query, metadata and prefs IQs."""

    def __init__(
        self,
        store: ArchiveStore,
        accounts: AccountStore,
        roster: RosterStore,
        config: ArchiveConfig,
        max_page: int,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.roster = roster
        self.config = config
        self.max_page = max(1, max_page)
        self.enabled = config.enabled
        if self.enabled:
            self.account_features = (
                ns.MAM,
                ns.MAM_EXTENDED,
                ns.MAM_GROUPCHAT_FIELD,
                ns.MAM_GROUPCHAT_AVAILABLE,
                ns.SID,
            )
        # The archived copy (with our stanza-id) of each outbound message, for carbons.
        self._sent: weakref.WeakKeyDictionary[Element, Element] = weakref.WeakKeyDictionary()
        self._expiry: asyncio.Task[None] | None = None
        self._prefs_cache: dict[str, ArchivePrefs] = {}
        self._shared: _SharedCopy | None = None  # the last room message staged

    def register(self, hooks: Hooks) -> None:
        hooks.on_stanza(Direction.INBOUND_BARE, "message", self.inbound, ARCHIVE_PRIORITY)
        hooks.on_stanza(Direction.INBOUND_FULL, "message", self.inbound, ARCHIVE_PRIORITY)
        if not self.enabled:
            return
        hooks.on_stanza(Direction.OUTBOUND, "message", self.outbound, ARCHIVE_PRIORITY)
        hooks.on_iq("set", protocol.QUERY, self.query, IqScope.ACCOUNT)
        hooks.on_iq("get", protocol.QUERY, self.query_form, IqScope.ACCOUNT)
        hooks.on_iq("get", protocol.METADATA, self.metadata, IqScope.ACCOUNT)
        hooks.on_iq("get", protocol.PREFS, self.get_prefs, IqScope.ACCOUNT)
        hooks.on_iq("set", protocol.PREFS, self.set_prefs, IqScope.ACCOUNT)

    async def start(self) -> None:
        if self.enabled and math.isfinite(self.config.retention):
            self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
            self._expiry = None

    # ------------------------------------------------------------------ storing
    def _prefs(self, account: JID) -> ArchivePrefs:
        key = str(account)
        prefs = self._prefs_cache.get(key)
        if prefs is None:
            if len(self._prefs_cache) > 10_000:
                self._prefs_cache.clear()
            prefs = self._prefs_cache[key] = self.store.prefs(key)
        return prefs

    def allowed(self, account: JID, other: JID) -> bool:
        """The account's preferences (XEP-0313 prefs) for messages with ``other``."""
        prefs = self._prefs(account)
        peer = str(other.bare)
        if peer in prefs.never:
            return False
        if peer in prefs.always:
            return True
        if prefs.default == "never":
            return False
        if prefs.default == "roster":
            return peer == str(account) or self.roster.get(account.local, peer) is not None
        return True

    def store_message(
        self,
        account: JID,
        stanza: Element,
        *,
        with_jid: JID,
        kind: str | None = None,
        room_stanza_id: str | None = None,
        stamp: float | None = None,
    ) -> Element | None:
        """Archive ``stanza`` in ``account``'s archive once; returns the copy that was stored.

        The copy is a new top-level element with our ``<stanza-id by=account>`` added (any
        spoofed one removed); deliver that copy. Returns None when archiving is off or the
        account's preferences exclude ``with_jid``. This is how account-join stores group chat
        (``with_jid`` = the room, ``room_stanza_id`` = the room's stanza-id) and MUC private
        messages; the hooks here do the same for ordinary chat.
        """
        made = self.stanza_to_store(account, stanza, with_jid)
        if made is None:
            return None
        out, sid = made
        self.store.append(
            str(account),
            str(with_jid.bare),
            serialize(out),
            kind or stanza_type(stanza),
            stamp=stamp,
            stanza_id=sid,
            room_stanza_id=room_stanza_id,
            with_full=str(with_jid) if with_jid.resource else None,
        )
        return out

    def stanza_to_store(
        self, account: JID, stanza: Element, with_jid: JID
    ) -> tuple[Element, str] | None:
        """What :meth:`store_message` stores, without storing it: the copy with our
        ``<stanza-id by=account>`` (spoofed ones removed) and that id; None when archiving is
        off or the account's preferences exclude ``with_jid``. For callers that store many
        messages at once (:meth:`store_rows`) and deliver each copy only once it is stored."""
        if not self.enabled or not self.allowed(account, with_jid):
            return None
        by = str(account)
        out = copy_shallow(stanza)
        strip_stanza_ids(out, by)
        sid = new_archive_id()
        SubElement(out, STANZA_ID, {"by": by, "id": sid})
        return out, sid

    def stage_groupchat(
        self,
        pending: list[ArchiveRow | SharedRow],
        account: JID,
        stanza: Element,
        room: JID,
        *,
        stamp: float | None = None,
        room_stanza_id: str | None = None,
    ) -> Prepared | None:
        """Add ``account``'s copy of a room's group chat message to ``pending`` (rows that
        :meth:`store_rows` stores in one transaction); returns the copy to deliver once they
        are stored (with our ``<stanza-id by=account>``), prepared. None when archiving is off
        or the account's preferences exclude the room. ``stamp`` None means now.

        The accounts a room message reaches one after the other share one :class:`SharedRow`
        (one stored text, one id; each account adds a reference): their copies differ only in
        the account's JID. A copy unlike the last one (other children or attributes), or
        carrying a stanza-id that claims to be the account's, gets a row of its own.
        """
        if not self.enabled:
            return None
        by = str(account)
        prefs = self._prefs_cache.get(by)
        if (prefs is None or prefs.never or prefs.default != "always") and not self.allowed(
            account, room
        ):
            return None
        memo = self._shared
        if (
            memo is None
            or memo.source is not stanza  # the next account's copy is most often the same one
            or len(stanza) != len(memo.key[0])
            or memo.key[2] != stamp
            or memo.key[3] != room_stanza_id
            or (memo.key[4] is not room and memo.key[4] != room)
            or not pending
            or pending[-1] is not memo.row
        ):
            attrs = dict(stanza.attrib)
            attrs.pop("to", None)
            key = (tuple(stanza), attrs, stamp, room_stanza_id, room, stanza.tag, stanza.text)
            if memo is None or memo.key != key or not pending or pending[-1] is not memo.row:
                memo = self._share(stanza, key)
                if memo is not None:
                    pending.append(memo.row)
            if memo is not None:
                memo.source = stanza
        if memo is None or by in memo.claimed:
            return self._own_row(pending, account, stanza, room, stamp, room_stanza_id)
        # copy_shallow(stanza), with our stanza-id
        out = Element(stanza.tag, stanza.attrib)
        out.text = stanza.text
        out.extend(stanza)
        SubElement(out, STANZA_ID, {"by": by, "id": memo.row.id})
        memo.row.archives.append(by)
        return memo.prepared.replaced(out, ACCOUNT_MARK, escape_attr(by))

    def _share(self, stanza: Element, key: _CopyKey) -> _SharedCopy | None:
        """The shared row for a room message: its copy with :data:`ACCOUNT_MARK` for the
        account, serialized once. None when the mark would not stand for the account alone."""
        template = copy_shallow(stanza)
        sid = new_archive_id()
        SubElement(template, STANZA_ID, {"by": ACCOUNT_MARK, "id": sid})
        prepared = Prepared(template)
        text = prepared.for_recipient(ACCOUNT_MARK)
        self._shared = None
        if text.count(ACCOUNT_MARK) != 2:  # in the stanza itself: a copy of its own each
            return None
        _kids, _attrs, stamp, room_stanza_id, room, _tag, _text = key
        row = SharedRow(
            sid,
            str(room),
            time.time() if stamp is None else stamp,
            "groupchat",
            text,
            room_stanza_id,
        )
        claimed = frozenset(str(el.get("by")) for el in stanza.findall(STANZA_ID))
        self._shared = _SharedCopy(row, prepared, key, claimed)
        return self._shared

    def _own_row(
        self,
        pending: list[ArchiveRow | SharedRow],
        account: JID,
        stanza: Element,
        room: JID,
        stamp: float | None,
        room_stanza_id: str | None,
    ) -> Prepared | None:
        made = self.stanza_to_store(account, stanza, room)
        if made is None:
            return None
        stored, archive_id = made
        prepared = Prepared(stored)
        pending.append(
            ArchiveRow(
                str(account),
                archive_id,
                str(room),
                "",
                time.time() if stamp is None else stamp,
                "groupchat",
                prepared.for_recipient(str(account)),
                room_stanza_id,
            )
        )
        return prepared

    def store_rows(self, rows: Sequence[ArchiveRow | SharedRow]) -> None:
        """Store messages made with :meth:`stanza_to_store` or :meth:`stage_groupchat`, in one
        transaction (all or none: raises StorageError)."""
        self.store.append_many(rows)

    def forget_account(self, account: str) -> None:
        """A removed account: its archive and preferences go with it."""
        self.store.delete_archive(account)
        self._prefs_cache.pop(account, None)

    def archived_copy(self, stanza: Element) -> Element | None:
        """The stored copy (with our stanza-id) of an outbound message, while it is routed."""
        return self._sent.get(stanza)

    async def outbound(self, stanza: Element, origin: Any) -> bool:
        if not isinstance(origin, Session):
            return False
        to = try_parse(stanza.get("to"))
        if to is None or to.bare == origin.account:
            return False  # to the account itself: archived once, on the way in
        if not worth_archiving(stanza):
            return False
        stored = self.store_message(origin.account, stanza, with_jid=to)
        if stored is not None:
            self._sent[stanza] = stored
        return False

    async def inbound(self, stanza: Element, origin: Any) -> bool:
        to = try_parse(stanza.get("to"))
        if to is None or not to.local:
            return False
        account = to.bare
        # The stanza is on its way to delivery and the router hands this same element on, so
        # the stanza-id goes into it here: only its own child list changes, never a shared
        # child. Every copy made after this point (clients, carbons, offline) carries the id.
        strip_stanza_ids(stanza, str(account))
        if not self.enabled or not worth_archiving(stanza):
            return False
        frm = try_parse(stanza.get("from"))
        if frm is None or not self.accounts.exists(account.local):
            return False
        if not self.allowed(account, frm):
            return False
        sid = new_archive_id()
        SubElement(stanza, STANZA_ID, {"by": str(account), "id": sid})
        self.store.append(
            str(account),
            str(frm.bare),
            serialize(stanza),
            stanza_type(stanza),
            stanza_id=sid,
            with_full=str(frm) if frm.resource else None,
        )
        return False

    # ------------------------------------------------------------------ retention
    def expire_now(self) -> int:
        """Drop what is older than ``[archive] retention``; returns how many messages."""
        if not math.isfinite(self.config.retention):
            return 0
        n = self.store.expire(None, time.time() - self.config.retention)
        if n:
            log.info("archive retention removed %d messages", n)
        return n

    async def _expire_forever(self) -> None:
        interval = min(3600.0, max(1.0, self.config.retention / 10))
        while True:
            try:
                self.expire_now()
            except Exception:
                log.exception("archive expiry failed")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ queries
    @staticmethod
    def _owner(iq: Element, origin: Any) -> Session:
        if not isinstance(origin, Session) or iq.get("to") not in (None, str(origin.account)):
            raise StanzaError("forbidden", "only your own archive")
        return origin

    async def query(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        q, queryid = protocol.parse_query(iq, self.max_page, groupchat_by_default=False)
        page = protocol.run_query(self.store, str(session.account), q)
        return await protocol.send_results(session.send, iq, page, str(session.account), queryid)

    async def query_form(self, iq: Element, origin: Any) -> Element | None:
        self._owner(iq, origin)
        out = Element(protocol.QUERY)
        out.append(protocol.form_fields([]))
        return out

    async def metadata(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        return protocol.metadata_element(self.store.bounds(str(session.account)))

    async def get_prefs(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        return prefs_element(self._prefs(session.account))

    async def set_prefs(self, iq: Element, origin: Any) -> Element | None:
        session = self._owner(iq, origin)
        el = iq[0]
        default = el.get("default", "always")
        if default not in _MODES:
            raise StanzaError("bad-request", "default must be always, never or roster")
        lists: dict[str, list[str]] = {}
        for name in ("always", "never"):
            jids: list[str] = []
            holder = el.find(tag(ns.MAM, name))
            for j in holder.findall(tag(ns.MAM, "jid")) if holder is not None else []:
                parsed = try_parse((j.text or "").strip())
                if parsed is None:
                    raise StanzaError("jid-malformed", f"not a JID: {j.text!r}")
                jids.append(str(parsed.bare))
            lists[name] = sorted(set(jids))
        prefs = ArchivePrefs(default, lists["always"], lists["never"])
        self.store.set_prefs(str(session.account), prefs)
        self._prefs_cache[str(session.account)] = prefs
        return prefs_element(prefs)


# What an account's copy of a room message must match to share the last one's row: the same
# children (the very objects), attributes but ``to``, stamp, room stanza-id, room, tag, text.
_CopyKey = tuple[
    tuple[Element, ...], dict[str, str], float | None, str | None, JID, str, str | None
]


@dataclass(slots=True)
class _SharedCopy:
    """A room message staged as a :class:`SharedRow`."""

    row: SharedRow
    prepared: Prepared  # the copy with ACCOUNT_MARK for the account
    key: _CopyKey
    claimed: frozenset[str]  # the `by` of the stanza-ids it carries
    source: Element | None = None  # the last copy found to match ``key``


def prefs_element(prefs: ArchivePrefs) -> Element:
    el = Element(protocol.PREFS, {"default": prefs.default})
    for name, jids in (("always", prefs.always), ("never", prefs.never)):
        holder = SubElement(el, tag(ns.MAM, name))
        for j in jids:
            SubElement(holder, tag(ns.MAM, "jid")).text = j
    return el
