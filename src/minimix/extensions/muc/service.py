"""XEP-0045 Multi-User Chat service: the component on ``[muc] domain``.

Reached only through the router (``receive``), it answers with ``router.route`` like any remote
room service would. Stanzas are handled one at a time in arrival order: a stanza that arrives
while another is being handled (including an error bouncing back from a delivery) waits in the
inbox, so a room's output keeps its order and nothing re-enters a room half-way.

Room logic is in ``room.py`` (pure); this module does the I/O: routing, persistence of
persistent rooms (``MucStore``), the room archive (``ArchiveStore``, XEP-0313 on the room JID),
disco on the service, room creation policy, ghost removal (333) and the shutdown notice (332).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable

from minimix.config import MucConfig
from minimix.core.extension import Extension
from minimix.core.router import Router, error_for
from minimix.extensions.archive.protocol import (
    QUERY as MAM_QUERY,
)
from minimix.extensions.archive.protocol import (
    form_fields,
    metadata_element,
    parse_query,
    run_query,
    send_results,
)
from minimix.extensions.disco import info_element
from minimix.extensions.muc.admin import admin_get, admin_set, owner_get, owner_set
from minimix.extensions.muc.config import RoomConfig
from minimix.extensions.muc.history import HistoryEntry
from minimix.extensions.muc.room import Affiliation, Copies, Effects, Room, Subject
from minimix.protocol import ns
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, error_reply, iq_result, make
from minimix.protocol.xml import Element, ParseError, SubElement, parse_element, serialize, tag
from minimix.storage.archive import ArchiveRow, ArchiveStore, new_archive_id
from minimix.storage.muc import MucStore, StoredAffiliation, StoredRoom, StoredSubject

log = logging.getLogger(__name__)

# Errors that mean the occupant's client is gone (XEP-0045 §18.1.2; the conditions Prosody uses).
GHOST_CONDITIONS = frozenset(
    (
        "gone",
        "internal-server-error",
        "item-not-found",
        "jid-malformed",
        "recipient-unavailable",
        "redirect",
        "remote-server-not-found",
        "remote-server-timeout",
        "service-unavailable",
    )
)

_MUC_X = tag(ns.MUC, "x")
_MUC_USER_X = tag(ns.MUC_USER, "x")
_DISCO_INFO = tag(ns.DISCO_INFO, "query")
_DISCO_ITEMS = tag(ns.DISCO_ITEMS, "query")
_ROOMUSER_NODE = "x-roomuser-item"


class MucService(Extension):
    """The group chat service: a component owning ``domain``."""

    name = "muc"

    def __init__(
        self,
        config: MucConfig,
        router: Router,
        store: MucStore,
        archive: ArchiveStore | None,
        *,
        server_domain: str,
        admins: list[str],
        max_occupants: int = 1000,
        max_rooms_per_account: int = 0,
        archive_page_size: int = 250,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.domain = config.domain
        self.router = router
        self.store = store
        self.archive = archive
        self.server_domain = server_domain
        self.admins = {str(j) for a in admins if (j := try_parse(a)) is not None}
        self.max_occupants = max_occupants
        self.max_rooms_per_account = max_rooms_per_account
        self.archive_page_size = archive_page_size
        self.clock = clock
        self.rooms: dict[str, Room] = {}
        self._persisted: set[str] = set()
        self._inbox: deque[Element] = deque()
        self._busy = False
        self._resumer: asyncio.Task[None] | None = None
        self._stopped = False
        # The room archive is written in one transaction per loop turn. Until the messages
        # waiting for it are stored, everything the service sends waits too, in order:
        self._held: deque[Element | Copies] | None = None  # what waits to be sent (None: nothing)
        self._rows: list[ArchiveRow] = []  # archive rows waiting to be stored
        self._row_sources: list[
            tuple[Element | None, list[Element | Copies]]
        ] = []  # stanza, outputs
        self._releaser: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for stored in self.store.rooms():
            try:
                room = self._restore(stored)
            except (ValueError, KeyError, TypeError):
                log.exception("room %s could not be restored", stored.room)
                continue
            self.rooms[stored.room] = room
            self._persisted.add(stored.room)
        if self.rooms:
            log.info("restored %d persistent rooms on %s", len(self.rooms), self.domain)

    async def stop(self) -> None:
        """Tell every occupant the service is going away (110 + 332, XEP-0045 §11.2)."""
        self._stopped = True
        if self._releaser is not None:
            await self._releaser  # what waits for the archive goes out first
        for room in list(self.rooms.values()):
            fx = room.shutdown()
            for el in fx.out:
                await self._emit(el)
            if not room.config.persistent:
                self._close(room, destroyed=False)

    def _restore(self, stored: StoredRoom) -> Room:
        config = RoomConfig.from_json(stored.config)
        history: list[HistoryEntry] = []
        for stamp, text in stored.history:
            try:
                history.append(HistoryEntry(parse_element(text), stamp, len(text) + 48))
            except ParseError:
                continue
        subject = None
        if stored.subject is not None:
            s = stored.subject
            subject = Subject(s.text, s.nick, s.occupant_id, s.stamp)
        return Room(
            JID(stored.room, self.domain, ""),
            config,
            stored.secret,
            created=stored.created,
            affiliations={
                JID.parse(a.jid): Affiliation(a.affiliation, a.nick, a.reason)
                for a in stored.affiliations
            },
            subject=subject,
            history=history,
            max_occupants=self.max_occupants,
            archive_available=self.archive is not None,
            id_factory=new_archive_id,
        )

    # ------------------------------------------------------------------ component
    async def receive(self, stanza: Element) -> None:
        """Take a stanza from the router; handled in arrival order (see the module docstring).

        Returns once what it caused has been sent, archived first: stanzas that arrive from
        several callers meanwhile share one archive transaction.
        """
        self._inbox.append(stanza)
        if not self._busy:
            await self._drain()
        releaser = self._releaser
        if releaser is not None and releaser is not asyncio.current_task():
            await asyncio.shield(releaser)

    async def _drain(self) -> None:
        self._busy = True
        try:
            while self._inbox:
                el = self._inbox.popleft()
                try:
                    await self._handle(el)
                except Exception:
                    log.exception("the group chat service failed on a stanza")
                    await self._refuse(el, StanzaError("internal-server-error"))
        finally:
            self._busy = False
            if self._inbox:
                # The task draining the inbox was cancelled: finish in a task of our own.
                self._resumer = asyncio.get_running_loop().create_task(self._drain())

    async def _send(self, el: Element | Copies) -> None:
        if isinstance(el, Copies):
            self.router.count("muc_stanzas_out", len(el.recipients))
            await self.router.route_copies(el.stanza, el.recipients, self)
            return
        self.router.count("muc_stanzas_out")
        await self.router.route(el, self)

    async def _emit(self, el: Element | Copies) -> None:
        """Send ``el`` now, or after what waits for the room archive (order is kept)."""
        if self._held is not None:
            self._held.append(el)
        else:
            await self._send(el)

    async def _release(self) -> None:
        """Store what waits for the room archive, then send what waited, in order; more may
        arrive meanwhile (stored before whatever was queued after it is sent)."""
        held = self._held
        assert held is not None
        try:
            while True:
                if self._rows:
                    self._store_rows()
                if not held:
                    break
                el = held.popleft()
                try:
                    await self._send(el)
                except Exception:
                    log.exception("the group chat service could not send a stanza")
        finally:
            self._held = None
            self._releaser = None

    def _store_rows(self) -> None:
        """One transaction for the rows waiting. If it fails, what their messages caused is
        not sent: each sender gets an error instead (nothing reflected is unarchived)."""
        rows, sources = self._rows, self._row_sources
        self._rows, self._row_sources = [], []
        assert self.archive is not None
        try:
            self.archive.append_many(rows)
        except Exception as exc:
            log.exception("the room archive could not store %d messages", len(rows))
            held = self._held
            if held is None:
                return
            dropped = {id(el) for _, outs in sources for el in outs}
            kept = [el for el in held if id(el) not in dropped]
            held.clear()
            held.extend(kept)
            for stanza, _ in sources:
                if stanza is not None:
                    reply = self._refusal(stanza, error_for(exc))
                    if reply is not None:
                        held.append(reply)

    def _flush_archive(self) -> None:
        """Store what waits now (before reading or deleting a room archive)."""
        if self._rows:
            self._store_rows()

    async def _refuse(self, stanza: Element, err: StanzaError, room: JID | None = None) -> None:
        """Answer ``stanza`` with an error (never an error to an error or a result)."""
        reply = self._refusal(stanza, err, room)
        if reply is not None:
            await self._emit(reply)

    def _refusal(
        self, stanza: Element, err: StanzaError, room: JID | None = None
    ) -> Element | None:
        stype = stanza.get("type")
        kind = stanza.tag.rsplit("}", 1)[-1]
        if stype == "error" or (kind == "iq" and stype == "result") or "from" not in stanza.attrib:
            return None
        if room is not None and err.by is None:
            err.by = str(room)
        if kind == "presence":
            if stype == "unavailable":
                return None
            reply = make(
                "presence",
                to=stanza.get("from"),
                from_=stanza.get("to"),
                type_="error",
                id_=stanza.get("id"),
            )
            reply.append(Element(_MUC_X))
            reply.append(err.to_element())
        else:
            reply = error_reply(stanza, err)
            if "from" not in reply.attrib:
                reply.set("from", self.domain)
        return reply

    async def _handle(self, stanza: Element) -> None:
        to = try_parse(stanza.get("to"))
        frm = try_parse(stanza.get("from"))
        if to is None or frm is None:
            return
        kind = stanza.tag.rsplit("}", 1)[-1]
        if stanza.get("type") == "error":
            await self._error_received(stanza, kind, frm, to)
            return
        if not to.local:
            await self._service_stanza(stanza, kind, frm, to)
            return
        room = self.rooms.get(to.local)
        room_jid = to.bare
        try:
            if kind == "presence":
                self._check_rooms_per_account(stanza, frm, room)
            if room is None:
                await self._no_room(stanza, kind, frm, to)
                return
            if kind == "presence":
                fx = room.handle_presence(
                    stanza, frm, to.resource, self.clock(), raw_nick=_raw_nick(stanza)
                )
            elif kind == "message":
                if to.resource:
                    fx = room.handle_private(stanza, frm, to.resource)
                elif stanza.get("type") == "groupchat":
                    fx = room.handle_groupchat(stanza, frm, self.clock())
                else:
                    fx = room.handle_room_message(stanza, frm, self.clock())
            elif to.resource:
                fx = room.handle_occupant_iq(stanza, frm, to.resource)
            else:
                await self._room_iq(room, stanza, frm)
                return
        except StanzaError as err:
            await self._refuse(stanza, err, room_jid)
            return
        await self._apply(room, fx, stanza)

    # ------------------------------------------------------------------ effects
    async def _apply(self, room: Room, fx: Effects, stanza: Element | None = None) -> None:
        """Persist and archive first (a client may query right after), then route: what a
        message to be archived causes is sent once the archive holds it (see ``_release``)."""
        self._persist(room, fx)
        if self.archive is not None and fx.archive:
            archive_jid = room.name
            self._rows.extend(
                ArchiveRow(
                    archive_jid,
                    item.stanza_id,
                    item.with_jid,
                    item.with_jid,
                    item.stamp,
                    "groupchat",
                    serialize(item.stanza),
                )
                for item in fx.archive
            )
            self._row_sources.append((stanza, fx.out))
            if self._held is None:
                self._held = deque()
                self._releaser = asyncio.get_running_loop().create_task(self._release())
        if fx.closed:
            self._close(room, destroyed=fx.destroyed)
        for el in fx.out:
            await self._emit(el)

    def _persist(self, room: Room, fx: Effects) -> None:
        name = room.jid.local
        if fx.closed or room.locked:
            return
        if not room.config.persistent:
            if name in self._persisted:
                self.store.delete_room(name)
                self._persisted.discard(name)
            return
        if name not in self._persisted:
            self._save_room(room)
            self.store.replace_affiliations(
                name, [_stored_affiliation(j, a) for j, a in room.affiliations.items()]
            )
            self.store.replace_history(
                name, [(e.stamp, serialize(e.stanza)) for e in room.history.entries()]
            )
            self._persisted.add(name)
            return
        if fx.save:
            self._save_room(room)
        for bare in fx.affiliations:
            a = room.affiliations.get(bare)
            self.store.set_affiliation(
                name, _stored_affiliation(bare, a) if a else StoredAffiliation(str(bare), "none")
            )
        for entry in fx.history:
            self.store.add_history(
                name, entry.stamp, serialize(entry.stanza), max(room.history.length, 1)
            )

    def _save_room(self, room: Room) -> None:
        s = room.subject
        self.store.save_room(
            room.jid.local,
            room.config.to_json(),
            room.secret,
            room.created,
            None if s is None else StoredSubject(s.text, s.nick, s.occupant_id, s.stamp),
        )

    def _close(self, room: Room, *, destroyed: bool) -> None:
        """Forget a room: destroyed, or temporary and empty (its archive goes with it)."""
        name = room.jid.local
        if self.rooms.get(name) is room:
            del self.rooms[name]
        if destroyed or name in self._persisted:
            self.store.delete_room(name)
            self._persisted.discard(name)
        if self.archive is not None and (destroyed or not room.config.persistent):
            self._flush_archive()  # nothing of it is stored after it is gone
            self.archive.delete_archive(room.name)

    # ------------------------------------------------------------------ errors coming back
    async def _error_received(self, stanza: Element, kind: str, frm: JID, to: JID) -> None:
        """A delivery error from an occupant's real JID makes it a ghost (§18.1.2, 333)."""
        room = self.rooms.get(to.local) if to.local else None
        if room is None:
            return
        if kind == "iq":
            if to.resource:
                await self._apply(room, room.handle_occupant_iq(stanza, frm, to.resource))
            return
        err = StanzaError.from_stanza(stanza)
        if err is None or err.condition not in GHOST_CONDITIONS:
            return
        await self._apply(room, room.remove_session(frm))

    # ------------------------------------------------------------------ rooms that do not exist
    async def _no_room(self, stanza: Element, kind: str, frm: JID, to: JID) -> None:
        room_jid = to.bare
        if kind == "presence":
            ptype = stanza.get("type")
            if ptype is not None:
                return
            if stanza.find(_MUC_X) is None:
                raise StanzaError("item-not-found", "no such room")
            if not to.resource:
                raise StanzaError("jid-malformed", "a nickname is required to enter a room")
            if not self.may_create(frm):
                raise StanzaError("not-allowed", "you may not create rooms here")
            if self._stopped:
                raise StanzaError("service-unavailable", "the service is stopping", "wait")
            now = self.clock()
            room = Room(
                room_jid,
                RoomConfig(
                    history_length=min(self.config.default_history, self.config.max_history),
                    logging=self.config.archive_by_default,
                ),
                os.urandom(32),
                created=now,
                locked=True,
                affiliations={frm.bare: Affiliation("owner")},
                max_occupants=self.max_occupants,
                archive_available=self.archive is not None,
                id_factory=new_archive_id,
            )
            fx = room.handle_presence(
                stanza, frm, to.resource, now, raw_nick=_raw_nick(stanza), created=True
            )
            self.rooms[to.local] = room
            await self._apply(room, fx, stanza)
            return
        if kind == "iq" and stanza.get("type") not in ("get", "set"):
            return
        raise StanzaError("item-not-found", "no such room")

    def _check_rooms_per_account(self, stanza: Element, frm: JID, room: Room | None) -> None:
        """``limits.rooms_per_account``: an account of this server is in at most that many
        rooms at once (directly or through account-join); one more join is refused."""
        limit = self.max_rooms_per_account
        if limit <= 0 or stanza.get("type") is not None or stanza.find(_MUC_X) is None:
            return
        if frm.domain != self.server_domain or not frm.local:
            return
        bare = frm.bare

        def present(r: Room) -> bool:
            return any(o.bare == bare for o in r.occupants.values())

        if room is not None and present(room):
            return  # another client of the account, or a nick change
        if sum(1 for r in self.rooms.values() if present(r)) >= limit:
            raise StanzaError("resource-constraint", "you are in too many rooms", "wait")

    def may_create(self, frm: JID) -> bool:
        """``[muc] creation``: "local" accounts of this server, "admins", or "anyone"."""
        policy = self.config.creation
        if policy == "anyone":
            return True
        if policy == "admins":
            return str(frm.bare) in self.admins
        return frm.domain == self.server_domain and bool(frm.local)

    # ------------------------------------------------------------------ the service's own JID
    async def _service_stanza(self, stanza: Element, kind: str, frm: JID, to: JID) -> None:
        if kind != "iq":
            if kind == "message":
                await self._refuse(stanza, StanzaError("service-unavailable"))
            return
        itype = stanza.get("type")
        if itype not in ("get", "set") or len(stanza) != 1:
            if itype in ("get", "set"):
                await self._refuse(stanza, StanzaError("bad-request"))
            return
        payload = stanza[0]
        try:
            if itype == "get" and payload.tag == _DISCO_INFO:
                if payload.get("node"):
                    raise StanzaError("item-not-found")
                result = info_element(
                    [("conference", "text", "Chatrooms")],
                    [
                        ns.DISCO_INFO,
                        ns.DISCO_ITEMS,
                        ns.MUC,
                        ns.MUC_STABLE_ID,
                        ns.OCCUPANT_ID,
                        ns.PING,
                    ],
                )
            elif itype == "get" and payload.tag == _DISCO_ITEMS:
                result = Element(_DISCO_ITEMS)
                if payload.get("node"):
                    result.set("node", payload.get("node", ""))
                else:
                    for name in sorted(self.rooms):
                        room = self.rooms[name]
                        if room.config.public and not room.locked:
                            attrs = {"jid": room.name}
                            if room.config.name:
                                attrs["name"] = room.config.name
                            SubElement(result, tag(ns.DISCO_ITEMS, "item"), attrs)
            elif itype == "get" and payload.tag == tag(ns.PING, "ping"):
                result = None
            else:
                raise StanzaError("service-unavailable")
        except StanzaError as err:
            await self._refuse(stanza, err)
            return
        await self._emit(iq_result(stanza, result))

    # ------------------------------------------------------------------ IQs to a room
    async def _room_iq(self, room: Room, iq: Element, frm: JID) -> None:
        itype = iq.get("type")
        if itype not in ("get", "set"):
            return
        if len(iq) != 1:
            raise StanzaError("bad-request", "an iq needs exactly one child")
        payload = iq[0]
        ptag = payload.tag
        max_history = self.config.max_history
        fx: Effects | None = None
        result: Element | None = None
        if ptag == _DISCO_INFO and itype == "get":
            result = self._room_info(room, payload, frm)
        elif ptag == _DISCO_ITEMS and itype == "get":
            result = self._room_items(room, frm)
        elif ptag == tag(ns.MUC_ADMIN, "query"):
            if itype == "get":
                result = admin_get(room, payload, frm)
            else:
                fx = admin_set(room, payload, frm)
        elif ptag == tag(ns.MUC_OWNER, "query"):
            if itype == "get":
                result = owner_get(room, payload, frm, max_history)
            else:
                fx = owner_set(room, payload, frm, max_history)
        elif ptag == MAM_QUERY:
            result = await self._archive_query(room, iq, frm)
        elif ptag == tag(ns.MAM, "metadata") and itype == "get":
            self._check_archive_access(room, frm)
            assert self.archive is not None
            self._flush_archive()
            result = metadata_element(self.archive.bounds(room.name))
        elif ptag == tag(ns.PING, "ping") and itype == "get":
            result = None
        else:
            raise StanzaError("service-unavailable")
        reply = iq_result(iq, result)
        if fx is None:
            await self._emit(reply)
            return
        # The requester learns of success after the removed occupants, before the others
        # (§8.2); the whole of a change is applied before anything is sent.
        self._persist(room, fx)
        if fx.closed:
            self._close(room, destroyed=fx.destroyed)
        await self._emit(reply)
        for el in fx.out:
            await self._emit(el)

    def _room_info(self, room: Room, query: Element, frm: JID) -> Element:
        node = query.get("node")
        if room.locked and room.affiliation(frm.bare) != "owner":
            raise StanzaError("item-not-found", "no such room")
        if node == _ROOMUSER_NODE:
            q = Element(_DISCO_INFO, {"node": node})
            a = room.affiliations.get(frm.bare)
            if a is not None and a.nick:
                SubElement(
                    q,
                    tag(ns.DISCO_INFO, "identity"),
                    {"category": "conference", "type": "text", "name": a.nick},
                )
            return q
        if node:
            raise StanzaError("item-not-found")
        return info_element(
            [("conference", "text", room.config.name or room.jid.local)],
            room.features(),
            forms=[room.info_form()],
        )

    def _room_items(self, room: Room, frm: JID) -> Element:
        """Occupants are listed to occupants only."""
        q = Element(_DISCO_ITEMS)
        if room.locked:
            return q
        bare = frm.bare
        if any(o.bare == bare for o in room.occupants.values()):
            for nick in room.occupants:
                SubElement(q, tag(ns.DISCO_ITEMS, "item"), {"jid": f"{room.name}/{nick}"})
        return q

    # ------------------------------------------------------------------ room archive
    def _check_archive_access(self, room: Room, frm: JID) -> None:
        if self.archive is None:
            raise StanzaError("service-unavailable", "no archive here")
        if not room.may_read_archive(frm.bare):
            raise StanzaError("forbidden", "you may not read this room's archive")

    async def _archive_query(self, room: Room, iq: Element, frm: JID) -> Element:
        """XEP-0313 on the room JID: results go to the requester, then the <fin/>."""
        self._check_archive_access(room, frm)
        assert self.archive is not None
        if iq.get("type") == "get":
            q = Element(MAM_QUERY)
            q.append(form_fields([]))
            return q
        query, queryid = parse_query(iq, self.archive_page_size)
        self._flush_archive()
        page = run_query(self.archive, room.name, query)
        if not room.sees_real_jids(frm.bare):
            for item in page.items:
                item.stanza = _without_real_jid(item.stanza)
        return await send_results(self._emit, iq, page, room.name, queryid)


def _raw_nick(stanza: Element) -> str | None:
    to = stanza.get("to") or ""
    slash = to.find("/")
    return to[slash + 1 :] if slash >= 0 else None


def _stored_affiliation(jid: JID, a: Affiliation) -> StoredAffiliation:
    return StoredAffiliation(str(jid), a.affiliation, a.nick, a.reason)


def _without_real_jid(text: str) -> str:
    """An archived message as semi-anonymous rooms show it: without the sender's real JID."""
    try:
        el = parse_element(text)
    except ParseError:
        return text
    for x in el.findall(_MUC_USER_X):
        el.remove(x)
    return serialize(el)
