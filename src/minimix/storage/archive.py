"""Message archive storage (XEP-0313): one ordered archive per account or room.

An archive is named by its owner's bare JID (``alice@example.org`` or ``room@conference.example``).
Each stored message gets an unpredictable id, unique within the archive and never reused: the
XEP-0359 stanza-id clients see. Order is the order of arrival (``seq``), never the timestamp alone.

Queries combine filters (``with``, time span, ``before-id``/``after-id``, ``ids``, group chat) with
XEP-0059 paging (``after``, ``before``, ``before=''`` for the last page, ``max``).

A message several accounts archive alike (a room's message, fanned out to every account in the
room) can be stored once (:class:`SharedRow`): one row of ``archive`` with the archive name
``''``. Which archives hold it is written as spans (``archive_spans``): an archive holds the
shared rows of one ``with_jid`` whose seq lies in its span. An account in a room has one span
per stretch of time it was there, growing while it stays (its end is :data:`_OPEN`): storing a
room message for fifty accounts writes the row alone, and a span changes only when the set of
archives a with_jid's rows are stored for changes (an account joins, leaves, or takes a copy of
its own). An account's archive is its own rows and the shared rows its spans cover, in one
order (``seq``); every query reads both alike.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from minimix.protocol.xml import escape_attr
from minimix.storage.database import Database, Row


@dataclass(slots=True)
class ArchivedMessage:
    id: str  # the XEP-0359 stanza-id this archive assigned
    with_jid: str  # bare JID of the other party (a room's bare JID for its group chat)
    stamp: float  # unix time
    stanza: str  # the stored stanza, serialized (as delivered, with the stanza-ids)
    kind: str  # 'chat' | 'groupchat' | 'normal' | 'headline' ...
    room_stanza_id: str | None = None  # for group chat: the room's stanza-id


@dataclass(slots=True)
class ArchiveQuery:
    with_jid: str | None = None  # bare JID: matches any resource; full JID: exactly that one
    start: float | None = None
    end: float | None = None
    before_id: str | None = None
    after_id: str | None = None
    ids: list[str] | None = None
    max: int = 50
    before: str | None = None  # '' = the last page
    after: str | None = None
    flip: bool = False
    include_groupchat: bool = True


@dataclass(slots=True)
class ArchivePage:
    items: list[ArchivedMessage]
    complete: bool
    count: int
    first_index: int | None = None  # position of items[0] among all matches


@dataclass(slots=True)
class ArchivePrefs:
    """XEP-0313 preferences: ``default`` is 'always', 'never' or 'roster'."""

    default: str = "always"
    always: list[str] = field(default_factory=list)
    never: list[str] = field(default_factory=list)


class UnknownArchiveId(LookupError):
    """An id given in a query (``after``, ``before``, ``after-id``...) is not in the archive."""

    def __init__(self, archive_id: str) -> None:
        super().__init__(archive_id)
        self.archive_id = archive_id


def new_archive_id() -> str:
    """A fresh archive id (also usable before :meth:`ArchiveStore.append`): the time in
    milliseconds (6 bytes) then 9 bytes from the system's random source, URL-safe base64.

    The random part makes ids unguessable and unique; the time in front makes ids made close
    together sort close together, so each new message lands in the index pages the last ones
    used instead of a random page of an ever larger index (a transaction storing a room message
    in fifty accounts' archives then writes about fifty pages per index, not one per row).
    """
    stamp = time.time_ns() // 1_000_000
    raw = stamp.to_bytes(8, "big")[2:] + _POOL.take(9)
    return base64.urlsafe_b64encode(raw).decode("ascii")


class _RandomPool:
    """Bytes from the system's random source, each handed out once (emptied in a forked child)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.data = b""
        self.used = 0

    def take(self, n: int) -> bytes:
        if self.used + n > len(self.data):
            self.data = secrets.token_bytes(self.size)
            self.used = 0
        out = self.data[self.used : self.used + n]
        self.used += n
        return out

    def empty(self) -> None:
        self.data = b""
        self.used = 0


_POOL = _RandomPool()
os.register_at_fork(after_in_child=_POOL.empty)


_HALF_MICROSECOND = 5e-7
_COLUMNS = "id, with_jid, stamp, stanza, kind, room_stanza_id"


@dataclass(slots=True)
class ArchiveRow:
    """One message to store (see :meth:`ArchiveStore.append`)."""

    archive: str
    id: str
    with_jid: str
    with_full: str
    stamp: float
    kind: str
    stanza: str
    room_stanza_id: str | None = None


# Where each archive's own JID goes in the stanza of a shared row (never in XML text).
ACCOUNT_MARK = "\x01"
_SHARED = ""  # the archive name of shared rows


@dataclass(slots=True)
class SharedRow:
    """One message stored once for several archives (see :meth:`ArchiveStore.append_many`).

    Each archive in ``archives`` holds it under the same ``id``, a new one (from
    :func:`new_archive_id`: no archive holds it yet). ``stanza`` has
    :data:`ACCOUNT_MARK` wherever the archive's own JID goes (its ``to``, the ``by`` of its
    stanza-id): each archive reads it back with its JID there.
    """

    id: str
    with_jid: str
    stamp: float
    kind: str
    stanza: str
    room_stanza_id: str | None = None
    archives: list[str] = field(default_factory=list)


_INSERT = (
    "INSERT OR IGNORE INTO archive (archive, id, with_jid, with_full, stamp, kind, stanza, "
    "room_stanza_id) VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_SHARED = (
    "INSERT OR IGNORE INTO archive (archive, id, with_jid, with_full, stamp, kind, stanza, "
    "room_stanza_id) VALUES ('',?,?,'',?,?,?,?)"
)
# The end of a span still growing: it holds every shared row of its with_jid stored from its
# start on.
_OPEN = (1 << 63) - 1
_OPEN_SPANS = "SELECT archive FROM archive_spans WHERE with_jid=? AND last_seq=?"
_END_SPAN = "UPDATE archive_spans SET last_seq=? WHERE archive=? AND with_jid=? AND last_seq=?"
_START_SPAN = "INSERT OR REPLACE INTO archive_spans VALUES (?,?,?,?)"
# Whether the archive (the first ?) holds shared row ``a``.
_HELD = (
    "EXISTS (SELECT 1 FROM archive_spans s WHERE s.archive=? AND s.with_jid=a.with_jid "
    "AND s.first_seq <= a.seq AND s.last_seq >= a.seq)"
)
# Whether any archive holds shared row ``a``.
_HELD_BY_ANY = (
    "EXISTS (SELECT 1 FROM archive_spans s WHERE s.with_jid=a.with_jid "
    "AND s.last_seq >= a.seq AND s.first_seq <= a.seq)"
)
# Up to this many spans, a page is read span by span (each in seq order from its index, merged
# by SQLite, whose compound statements take up to 500 parts); beyond, from one join, sorted.
_MERGED_SPANS = 400
# An archive's own rows, then the shared rows it holds: the columns of _message, seq and
# whether the row is shared. Conditions are written with {c} before the columns of `archive`
# and {s} for seq (see ArchiveStore._both).
_COLUMNS_OWN = "id, with_jid, stamp, stanza, kind, room_stanza_id, seq, 0"
_COLUMNS_SHARED = "a.id, a.with_jid, a.stamp, a.stanza, a.kind, a.room_stanza_id, a.seq, 1"
_OWN = f"SELECT {_COLUMNS_OWN} FROM archive WHERE "
_SPANNED = (
    "archive_spans r JOIN archive a ON a.archive='' AND a.with_jid=r.with_jid "
    "AND a.seq BETWEEN r.first_seq AND r.last_seq"
)


def _values(r: ArchiveRow) -> tuple[Any, ...]:
    return (
        r.archive,
        r.id,
        r.with_jid,
        r.with_full,
        round(r.stamp, 6),
        r.kind,
        r.stanza,
        r.room_stanza_id,
    )


def _shared_values(r: SharedRow) -> tuple[Any, ...]:
    return (r.id, r.with_jid, round(r.stamp, 6), r.kind, r.stanza, r.room_stanza_id)


def _message(r: Row, archive: str) -> ArchivedMessage:
    """A row of ``_OWN`` / ``_REFERENCED`` as ``archive`` holds it."""
    stanza = str(r[3])
    if r[7]:
        stanza = stanza.replace(ACCOUNT_MARK, escape_attr(archive))
    return ArchivedMessage(
        id=str(r[0]),
        with_jid=str(r[1]),
        stamp=float(r[2]),
        stanza=stanza,
        kind=str(r[4]),
        room_stanza_id=str(r[5]) if r[5] is not None else None,
    )


def _both(conditions: Sequence[str]) -> tuple[str, str]:
    """``conditions`` (written with ``{c}`` and ``{s}``) for an archive's own rows and for the
    shared rows it references; each starts with the archive's name (``?``)."""
    own = " AND ".join(["archive=?", *conditions]).format(c="", s="seq")
    shared = " AND ".join(["r.archive=?", *conditions]).format(c="a.", s="a.seq")
    return own, shared


class ArchiveStore:
    """All archives in one table; every method is one short SQL transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ writing
    def append(
        self,
        archive: str,
        with_jid: str,
        stanza: str,
        kind: str,
        *,
        stamp: float | None = None,
        stanza_id: str | None = None,
        room_stanza_id: str | None = None,
        with_full: str | None = None,
    ) -> str:
        """Store one message; returns its stanza-id.

        ``stanza_id`` lets the caller put the id into the stanza before serializing it (see
        :func:`new_archive_id`); appending an id the archive already holds stores nothing and
        returns that id. ``with_full`` is the other party's full JID when known (for ``with``
        queries on a full JID).
        """
        sid = stanza_id or new_archive_id()
        self.append_many(
            [
                ArchiveRow(
                    archive,
                    sid,
                    with_jid,
                    with_full or "",
                    time.time() if stamp is None else stamp,
                    kind,
                    stanza,
                    room_stanza_id,
                )
            ]
        )
        return sid

    def append_many(self, rows: Sequence[ArchiveRow | SharedRow]) -> None:
        """Store several messages in one transaction (all of them, or none: StorageError), in
        the order given: each archive holds them in that order.

        A row whose id its archive holds already stores nothing, as with :meth:`append`.
        A shared row stored for the archives the last one of its with_jid was stored for is
        its row alone; otherwise the spans of the archives that come or go change with it.
        """
        db = self.db
        if len(rows) == 1 and isinstance(rows[0], ArchiveRow):
            db.execute(_INSERT, _values(rows[0]))  # one statement: its own transaction
            return
        with db.lock:
            spans = db.archive_spans
            changed: dict[str, frozenset[str]] = {}
            with db.transaction():
                run: list[tuple[Any, ...]] = []  # rows of one kind, stored with one call
                run_shared = False
                for r in rows:
                    if isinstance(r, ArchiveRow):
                        if run and run_shared:
                            db.execute_rows(_INSERT_SHARED, run)
                            run = []
                        run_shared = False
                        run.append(_values(r))
                        continue
                    if run and not run_shared:
                        db.execute_rows(_INSERT, run)
                        run = []
                    run_shared = True
                    values = _shared_values(r)
                    room = r.with_jid
                    holding = changed.get(room)
                    if holding is None:
                        holding = spans.get(room)
                        if holding is None:
                            holding = self._open_spans(room)
                    wanted = frozenset(r.archives)
                    if wanted == holding:
                        run.append(values)
                        continue
                    if run:
                        db.execute_rows(_INSERT_SHARED, run)
                        run = []
                    stored = db.fetchone(_INSERT_SHARED + " RETURNING seq", values)
                    if stored is None:
                        continue  # its id is taken: nothing stored
                    seq = int(stored[0])
                    db.execute_rows(
                        _END_SPAN, [(seq - 1, a, room, _OPEN) for a in holding - wanted]
                    )
                    db.execute_rows(_START_SPAN, [(a, room, seq, _OPEN) for a in wanted - holding])
                    changed[room] = wanted
                if run:
                    db.execute_rows(_INSERT_SHARED if run_shared else _INSERT, run)
            spans.update(changed)

    def _open_spans(self, with_jid: str) -> frozenset[str]:
        """The archives whose span for ``with_jid`` grows (read once, then kept up to date)."""
        db = self.db
        holding = frozenset(str(r[0]) for r in db.fetchall(_OPEN_SPANS, (with_jid, _OPEN)))
        db.archive_spans[with_jid] = holding
        return holding

    def _forget_open_spans(self) -> None:
        """After spans were changed in bulk: read them again when next needed."""
        self.db.archive_spans.clear()

    def get(self, archive: str, stanza_id: str) -> ArchivedMessage | None:
        r = self.db.fetchone(
            f"{_OWN}archive=? AND id=? UNION ALL SELECT {_COLUMNS_SHARED} FROM archive a "
            f"WHERE a.archive='' AND a.id=? AND {_HELD} LIMIT 1",
            (archive, stanza_id, stanza_id, archive),
        )
        return _message(r, archive) if r else None

    def has_room_stanza(self, archive: str, room_stanza_id: str) -> bool:
        return (
            self.db.fetchone(
                "SELECT 1 FROM archive WHERE archive=? AND room_stanza_id=? UNION ALL "
                f"SELECT 1 FROM archive a WHERE a.archive='' AND a.room_stanza_id=? AND {_HELD} "
                "LIMIT 1",
                (archive, room_stanza_id, room_stanza_id, archive),
            )
            is not None
        )

    def last_room_stanza(self, archive: str, room: str) -> tuple[str, float] | None:
        """(room stanza-id, stamp) of the newest group chat message from ``room``."""
        found = self._page(
            archive,
            ["{c}with_jid=?", "{c}kind='groupchat'", "{c}room_stanza_id IS NOT NULL"],
            [room],
            "DESC",
            1,
            with_jid=room,
        )
        return (str(found[0][5]), float(found[0][2])) if found else None

    def bounds(self, archive: str) -> tuple[ArchivedMessage, ArchivedMessage] | None:
        """The oldest and newest message of an archive (XEP-0313 metadata)."""
        ends = []
        for order in ("ASC", "DESC"):
            found = self._page(archive, [], [], order, 1)
            if not found:
                return None
            ends.append(_message(found[0], archive))
        return ends[0], ends[1]

    def delete_archive(self, archive: str) -> None:
        with self.db.lock:
            try:
                with self.db.transaction() as db:
                    db.execute("DELETE FROM archive WHERE archive=?", (archive,))
                    spans = db.fetchall(
                        "DELETE FROM archive_spans WHERE archive=? "
                        "RETURNING with_jid, first_seq, last_seq",
                        (archive,),
                    )
                    self._drop_unheld(spans)
                    db.execute("DELETE FROM archive_prefs WHERE archive=?", (archive,))
            finally:
                self._forget_open_spans()

    def expire(self, archive: str | None, older_than: float) -> int:
        """Drop messages stamped before ``older_than`` (one archive, or all); returns how many
        (each archive's copy counts, a shared row once for each archive that held it)."""
        with self.db.lock:
            try:
                with self.db.transaction():
                    if archive is None:
                        return self._expire_all(older_than)
                    return self._expire_one(archive, older_than)
            finally:
                self._forget_open_spans()

    def _expire_all(self, older_than: float) -> int:
        db = self.db
        n = db.execute("DELETE FROM archive WHERE stamp < ? AND archive != ''", (older_than,))
        held = db.fetchone(f"SELECT COUNT(*) FROM {_SPANNED} WHERE a.stamp < ?", (older_than,))
        n += int(held[0]) if held else 0
        db.execute("DELETE FROM archive WHERE archive='' AND stamp < ?", (older_than,))
        # Spans over nothing any more go (a growing one stays: it holds what comes).
        db.execute(
            "DELETE FROM archive_spans WHERE last_seq != ? AND NOT EXISTS (SELECT 1 FROM "
            "archive a WHERE a.archive='' AND a.with_jid=archive_spans.with_jid "
            "AND a.seq BETWEEN archive_spans.first_seq AND archive_spans.last_seq)",
            (_OPEN,),
        )
        return n

    def _expire_one(self, archive: str, older_than: float) -> int:
        """One archive lets go of its old shared rows: each of its spans is cut around them."""
        db = self.db
        n = db.execute("DELETE FROM archive WHERE archive=? AND stamp < ?", (archive, older_than))
        spans = db.fetchall(
            "SELECT with_jid, first_seq, last_seq FROM archive_spans WHERE archive=?", (archive,)
        )
        dropped: list[Row] = []
        for with_jid, first, last in spans:
            rows = db.fetchall(
                "SELECT seq, stamp < ? FROM archive WHERE archive='' AND with_jid=? "
                "AND seq BETWEEN ? AND ? ORDER BY seq",
                (older_than, with_jid, first, last),
            )
            old = [int(r[0]) for r in rows if r[1]]
            if not old:
                continue
            n += len(old)
            db.execute(
                "DELETE FROM archive_spans WHERE archive=? AND with_jid=? AND first_seq=?",
                (archive, with_jid, first),
            )
            dropped.append((with_jid, first, last))
            # What is left between the old rows, as spans (a growing span keeps growing).
            kept: list[tuple[int, int]] = []
            start: int | None = None
            end = 0
            for seq, is_old in rows:
                if is_old:
                    if start is not None:
                        kept.append((start, end))
                    start = None
                    continue
                start = int(seq) if start is None else start
                end = int(seq)
            if start is not None:
                kept.append((start, end))
            if last == _OPEN:
                if kept and kept[-1][1] == int(rows[-1][0]):
                    kept[-1] = (kept[-1][0], _OPEN)
                else:
                    kept.append((old[-1] + 1, _OPEN))
            db.execute_rows(
                "INSERT INTO archive_spans VALUES (?,?,?,?)",
                [(archive, with_jid, a, b) for a, b in kept],
            )
        self._drop_unheld(dropped)
        return n

    def _drop_unheld(self, spans: Sequence[Row]) -> None:
        """Drop the shared rows within ``spans`` (with_jid, first, last) no archive holds."""
        self.db.execute_rows(
            "DELETE FROM archive AS a WHERE a.archive='' AND a.with_jid=? "
            f"AND a.seq BETWEEN ? AND ? AND NOT {_HELD_BY_ANY}",
            [tuple(s) for s in spans],
        )

    # ------------------------------------------------------------------ preferences
    def prefs(self, archive: str) -> ArchivePrefs:
        r = self.db.fetchone(
            "SELECT default_mode, always, never FROM archive_prefs WHERE archive=?", (archive,)
        )
        if r is None:
            return ArchivePrefs()
        return ArchivePrefs(str(r[0]), list(json.loads(str(r[1]))), list(json.loads(str(r[2]))))

    def set_prefs(self, archive: str, prefs: ArchivePrefs) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO archive_prefs (archive, default_mode, always, never) "
            "VALUES (?,?,?,?)",
            (archive, prefs.default, json.dumps(prefs.always), json.dumps(prefs.never)),
        )

    # ------------------------------------------------------------------ querying
    def _seq(self, archive: str, stanza_id: str) -> int:
        r = self.db.fetchone(
            "SELECT seq FROM archive WHERE archive=? AND id=? UNION ALL "
            f"SELECT a.seq FROM archive a WHERE a.archive='' AND a.id=? AND {_HELD} LIMIT 1",
            (archive, stanza_id, stanza_id, archive),
        )
        if r is None:
            raise UnknownArchiveId(stanza_id)
        return int(r[0])

    def _count(self, archive: str, conditions: list[str], params: list[Any]) -> int:
        own, shared = _both(conditions)
        r = self.db.fetchone(
            f"SELECT (SELECT COUNT(*) FROM archive WHERE {own}) + "
            f"(SELECT COUNT(*) FROM {_SPANNED} WHERE {shared})",
            [archive, *params, archive, *params],
        )
        return int(r[0]) if r else 0

    def _page(
        self,
        archive: str,
        conditions: list[str],
        params: list[Any],
        order: str,
        limit: int,
        *,
        with_jid: str | None = None,
        after: int | None = None,
        before: int | None = None,
    ) -> list[Row]:
        """Up to ``limit`` rows (as ``_OWN`` selects them) of the archive meeting
        ``conditions``, in seq ``order``. ``with_jid``: only shared rows of that with_jid can
        meet them; ``after`` and ``before``: only rows between these seqs can (spans wholly
        outside are not read)."""
        db = self.db
        own, shared = _both(conditions)
        if with_jid is None:
            spans = db.fetchall(
                "SELECT with_jid, first_seq, last_seq FROM archive_spans WHERE archive=?",
                (archive,),
            )
        else:
            spans = db.fetchall(
                "SELECT with_jid, first_seq, last_seq FROM archive_spans "
                "WHERE archive=? AND with_jid=?",
                (archive, with_jid),
            )
        if after is not None or before is not None:
            low = -1 if after is None else after
            high = _OPEN if before is None else before
            spans = [r for r in spans if r[2] > low and r[1] < high]
        arms = [f"SELECT * FROM ({_OWN}{own} ORDER BY seq {order} LIMIT ?)"]
        args: list[Any] = [archive, *params, limit]
        if len(spans) <= _MERGED_SPANS:
            # Each span read in order from the index on (archive, with_jid, seq), up to the
            # limit; SQLite merges them.
            in_span = " AND ".join(
                ["a.archive=''", "a.with_jid=?", "a.seq BETWEEN ? AND ?", *conditions]
            ).format(c="a.", s="a.seq")
            for span in spans:
                arms.append(
                    f"SELECT * FROM (SELECT {_COLUMNS_SHARED} FROM archive a WHERE {in_span} "
                    f"ORDER BY a.seq {order} LIMIT ?)"
                )
                args.extend([*span, *params, limit])
        elif spans:
            arms.append(f"SELECT {_COLUMNS_SHARED} FROM {_SPANNED} WHERE {shared}")
            args.extend([archive, *params])
        return db.fetchall(f"{' UNION ALL '.join(arms)} ORDER BY 7 {order} LIMIT ?", [*args, limit])

    def query(self, archive: str, q: ArchiveQuery) -> ArchivePage:
        """Run a query. Raises :class:`UnknownArchiveId` for an id the archive does not hold."""
        where: list[str] = []
        params: list[Any] = []
        with_room: str | None = None
        if q.with_jid is not None:
            if "/" in q.with_jid:
                where.append("{c}with_full=?")
            else:
                where.append("{c}with_jid=?")
                with_room = q.with_jid
            params.append(q.with_jid)
        # Stamps have microsecond resolution (XEP-0082 as we write it): compare at that grain.
        if q.start is not None:
            where.append("{c}stamp >= ?")
            params.append(q.start - _HALF_MICROSECOND)
        if q.end is not None:
            where.append("{c}stamp <= ?")
            params.append(q.end + _HALF_MICROSECOND)
        if q.after_id is not None:
            where.append("{s} > ?")
            params.append(self._seq(archive, q.after_id))
        if q.before_id is not None:
            where.append("{s} < ?")
            params.append(self._seq(archive, q.before_id))
        if q.ids is not None:
            for i in q.ids:
                self._seq(archive, i)
            where.append(f"{{c}}id IN ({','.join('?' * len(q.ids))})" if q.ids else "0")
            params.extend(q.ids)
        if not q.include_groupchat:
            where.append("{c}kind != 'groupchat'")
        total = self._count(archive, where, params)

        page_where = list(where)
        page_params = list(params)
        backwards = q.before is not None
        after = before = None
        if q.after:
            after = self._seq(archive, q.after)
            page_where.append("{s} > ?")
            page_params.append(after)
        if q.before:
            before = self._seq(archive, q.before)
            page_where.append("{s} < ?")
            page_params.append(before)
        limit = max(0, q.max)
        order = "DESC" if backwards else "ASC"
        rows = self._page(
            archive,
            page_where,
            page_params,
            order,
            limit + 1,
            with_jid=with_room,
            after=after,
            before=before,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        if backwards:
            rows.reverse()
        items = [_message(r, archive) for r in rows]
        first_index: int | None = None
        if rows:
            first_index = self._count(archive, [*where, "{s} < ?"], [*params, rows[0][6]])
        return ArchivePage(items=items, complete=not more, count=total, first_index=first_index)
