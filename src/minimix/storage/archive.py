"""Message archive storage (XEP-0313): one ordered archive per account or room.

An archive is named by its owner's bare JID (``alice@example.org`` or ``room@conference.example``).
Each stored message gets an unpredictable id, unique within the archive and never reused: the
XEP-0359 stanza-id clients see. Order is the order of arrival (``seq``), never the timestamp alone.

Queries combine filters (``with``, time span, ``before-id``/``after-id``, ``ids``, group chat) with
XEP-0059 paging (``after``, ``before``, ``before=''`` for the last page, ``max``).

A message several accounts archive alike (a room's message, fanned out to every account in the
room) can be stored once (:class:`SharedRow`): one row of ``archive`` with the archive name
``''`` and, per account, a reference in ``archive_refs`` (the account, the row's seq). The
reference is all an account adds: one entry in one index, where a row of its own is the whole
stanza in the table and an entry in each of four indexes. An account's archive is its own rows
and the rows it references, in one order (``seq``); every query reads both alike.

References are written in batches (every :data:`_REFS_BATCH` shared rows, and before anything
reads or deletes): until then the archives a shared row was stored for are listed in
``archive_pending``, written in the same transaction as the row, so a stored message has its
references even after a crash (they are written at the next start). Each account's
references land in a page of their own: written for many messages at once, that page is
written once instead of once per transaction.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

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
# Shared rows in one statement, through the view of migration 0023: a JSON array of [id,
# with_jid, stamp, kind, stanza, room_stanza_id, archives], stored in its order, each listed
# for its archives in archive_pending. Outside a transaction, that statement is one.
_INSERT_SHARED_BATCH = "INSERT INTO archive_shared_batch (batch) VALUES (?)"
# The references that shared rows are listed for (a JSON array of archives), written; then the
# lists go.
_WRITE_REFS = (
    "INSERT OR IGNORE INTO archive_refs (archive, seq) SELECT j.value, p.seq "
    "FROM archive_pending p, json_each(p.archives) j ORDER BY 1, 2"
)
_REFS_WRITTEN = "DELETE FROM archive_pending"
# Shared rows stored before their references are written: each account's references go into a
# page of their own, written once per batch (about 50 pages for a 50-account room, whatever
# the batch size), so the larger the batch the fewer pages per reference.
_REFS_BATCH = 256
# A shared row nobody references any more goes (the archives that held it were deleted).
_DROP_UNREFERENCED = (
    "DELETE FROM archive WHERE seq=? AND archive='' "
    "AND NOT EXISTS (SELECT 1 FROM archive_refs WHERE seq=?)"
)
# An archive's own rows, then the shared rows it references: the columns of _message, seq and
# whether the row is shared. Conditions are written with {c} before the columns of `archive`
# and {s} for seq (see ArchiveStore._both).
_OWN = "SELECT id, with_jid, stamp, stanza, kind, room_stanza_id, seq, 0 FROM archive WHERE "
_REFERENCED = (
    "SELECT a.id, a.with_jid, a.stamp, a.stanza, a.kind, a.room_stanza_id, r.seq, 1 "
    "FROM archive_refs r JOIN archive a ON a.seq = r.seq WHERE "
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


def _batch(rows: Sequence[SharedRow]) -> str:
    """Shared rows as the JSON array that ``_INSERT_SHARED_BATCH`` takes."""
    return json.dumps(
        [
            [r.id, r.with_jid, round(r.stamp, 6), r.kind, r.stanza, r.room_stanza_id, r.archives]
            for r in rows
        ]
    )


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
    shared = " AND ".join(["r.archive=?", *conditions]).format(c="a.", s="r.seq")
    return own, shared


class ArchiveStore:
    """All archives in one table; every method is one short SQL transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Whatever a previous run left listed is written now (read first: no write otherwise).
        if db.fetchone("SELECT 1 FROM archive_pending LIMIT 1"):
            db.unreferenced = max(db.unreferenced, 1)
            self._write_refs()

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
        Each run of consecutive shared rows is one statement; a batch of shared rows alone is
        one statement and nothing more (its own transaction).
        """
        plain = [r for r in rows if isinstance(r, ArchiveRow)]
        if len(plain) == len(rows):
            if len(plain) == 1:
                self.db.execute(_INSERT, _values(plain[0]))  # one statement: its own transaction
            elif plain:
                self.db.executemany(_INSERT, [_values(r) for r in plain])
            return
        db = self.db
        count = len(rows) - len(plain)
        with db.lock:  # the count of unreferenced rows and what it decides go together
            refs_due = db.unreferenced + count >= _REFS_BATCH
            if not plain and not refs_due:
                # One statement, one transaction (no BEGIN and COMMIT around it).
                db.execute(_INSERT_SHARED_BATCH, (_batch(cast(Sequence[SharedRow], rows)),))
                db.unreferenced += count
                return
            with db.transaction():
                own: list[tuple[Any, ...]] = []
                shared: list[SharedRow] = []
                for r in rows:
                    if isinstance(r, ArchiveRow):
                        if shared:
                            db.execute(_INSERT_SHARED_BATCH, (_batch(shared),))
                            shared = []
                        own.append(_values(r))
                        continue
                    if own:
                        db.execute_rows(_INSERT, own)
                        own = []
                    shared.append(r)
                if shared:
                    db.execute(_INSERT_SHARED_BATCH, (_batch(shared),))
                if own:
                    db.execute_rows(_INSERT, own)
                if refs_due:
                    db.execute(_WRITE_REFS)
                    db.execute(_REFS_WRITTEN)
                    db.unreferenced = 0
                else:
                    db.unreferenced += count

    def _write_refs(self) -> None:
        """Write the references shared rows list (before the archives are read or changed)."""
        if self.db.unreferenced:
            with self.db.transaction() as db:
                if db.unreferenced:
                    db.execute(_WRITE_REFS)
                    db.execute(_REFS_WRITTEN)
                    db.unreferenced = 0

    def get(self, archive: str, stanza_id: str) -> ArchivedMessage | None:
        self._write_refs()
        own, shared = _both(["{c}id=?"])
        r = self.db.fetchone(
            f"{_OWN}{own} UNION ALL {_REFERENCED}{shared} LIMIT 1",
            (archive, stanza_id, archive, stanza_id),
        )
        return _message(r, archive) if r else None

    def has_room_stanza(self, archive: str, room_stanza_id: str) -> bool:
        self._write_refs()
        return (
            self.db.fetchone(
                "SELECT 1 FROM archive WHERE archive=? AND room_stanza_id=? UNION ALL "
                "SELECT 1 FROM archive a WHERE a.archive='' AND a.room_stanza_id=? AND EXISTS "
                "(SELECT 1 FROM archive_refs r WHERE r.archive=? AND r.seq=a.seq) LIMIT 1",
                (archive, room_stanza_id, room_stanza_id, archive),
            )
            is not None
        )

    def last_room_stanza(self, archive: str, room: str) -> tuple[str, float] | None:
        """(room stanza-id, stamp) of the newest group chat message from ``room``."""
        self._write_refs()
        r = self.db.fetchone(
            "SELECT * FROM (SELECT room_stanza_id, stamp, seq FROM archive WHERE archive=? "
            "AND with_jid=? AND kind='groupchat' AND room_stanza_id IS NOT NULL "
            "ORDER BY seq DESC LIMIT 1) UNION ALL "
            "SELECT * FROM (SELECT a.room_stanza_id, a.stamp, a.seq FROM archive a "
            "WHERE a.archive='' AND a.with_jid=? AND a.kind='groupchat' "
            "AND a.room_stanza_id IS NOT NULL AND EXISTS "
            "(SELECT 1 FROM archive_refs r WHERE r.archive=? AND r.seq=a.seq) "
            "ORDER BY a.seq DESC LIMIT 1) ORDER BY 3 DESC LIMIT 1",
            (archive, room, room, archive),
        )
        return (str(r[0]), float(r[1])) if r else None

    def bounds(self, archive: str) -> tuple[ArchivedMessage, ArchivedMessage] | None:
        """The oldest and newest message of an archive (XEP-0313 metadata)."""
        self._write_refs()
        own, shared = _both([])
        ends = []
        for order in ("ASC", "DESC"):
            r = self.db.fetchone(
                f"{_OWN}{own} UNION ALL {_REFERENCED}{shared} ORDER BY 7 {order} LIMIT 1",
                (archive, archive),
            )
            if r is None:
                return None
            ends.append(_message(r, archive))
        return ends[0], ends[1]

    def delete_archive(self, archive: str) -> None:
        self._write_refs()
        with self.db.transaction() as db:
            db.execute("DELETE FROM archive WHERE archive=?", (archive,))
            self._unreference(
                db.fetchall("DELETE FROM archive_refs WHERE archive=? RETURNING seq", (archive,))
            )
            db.execute("DELETE FROM archive_prefs WHERE archive=?", (archive,))

    def expire(self, archive: str | None, older_than: float) -> int:
        """Drop messages stamped before ``older_than`` (one archive, or all); returns how many
        (each archive's copy counts, a shared row once for each archive that held it)."""
        self._write_refs()
        old = "SELECT seq FROM archive WHERE archive='' AND stamp < ?"
        with self.db.transaction() as db:
            if archive is None:
                n = db.execute(
                    "DELETE FROM archive WHERE stamp < ? AND archive != ''", (older_than,)
                )
                n += db.execute(f"DELETE FROM archive_refs WHERE seq IN ({old})", (older_than,))
                db.execute("DELETE FROM archive WHERE archive='' AND stamp < ?", (older_than,))
                return n
            n = db.execute(
                "DELETE FROM archive WHERE archive=? AND stamp < ?", (archive, older_than)
            )
            seqs = db.fetchall(
                f"DELETE FROM archive_refs WHERE archive=? AND seq IN ({old}) RETURNING seq",
                (archive, older_than),
            )
            self._unreference(seqs)
            return n + len(seqs)

    def _unreference(self, seqs: list[Row]) -> None:
        """Drop the shared rows among ``seqs`` that no archive references any more."""
        self.db.execute_rows(_DROP_UNREFERENCED, [(r[0], r[0]) for r in seqs])

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
        own, shared = _both(["{c}id=?"])
        r = self.db.fetchone(
            f"SELECT seq FROM archive WHERE {own} UNION ALL "
            f"SELECT r.seq FROM archive_refs r JOIN archive a ON a.seq = r.seq WHERE {shared} "
            "LIMIT 1",
            (archive, stanza_id, archive, stanza_id),
        )
        if r is None:
            raise UnknownArchiveId(stanza_id)
        return int(r[0])

    def _count(self, archive: str, conditions: list[str], params: list[Any]) -> int:
        own, shared = _both(conditions)
        joined = any("{c}" in c for c in conditions)
        refs = "archive_refs r JOIN archive a ON a.seq = r.seq" if joined else "archive_refs r"
        r = self.db.fetchone(
            f"SELECT (SELECT COUNT(*) FROM archive WHERE {own}) + "
            f"(SELECT COUNT(*) FROM {refs} WHERE {shared})",
            [archive, *params, archive, *params],
        )
        return int(r[0]) if r else 0

    def query(self, archive: str, q: ArchiveQuery) -> ArchivePage:
        """Run a query. Raises :class:`UnknownArchiveId` for an id the archive does not hold."""
        self._write_refs()
        where: list[str] = []
        params: list[Any] = []
        if q.with_jid is not None:
            if "/" in q.with_jid:
                where.append("{c}with_full=?")
            else:
                where.append("{c}with_jid=?")
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
        if q.after:
            page_where.append("{s} > ?")
            page_params.append(self._seq(archive, q.after))
        if q.before:
            page_where.append("{s} < ?")
            page_params.append(self._seq(archive, q.before))
        limit = max(0, q.max)
        own, shared = _both(page_where)
        order = "DESC" if backwards else "ASC"
        rows = self.db.fetchall(
            f"{_OWN}{own} UNION ALL {_REFERENCED}{shared} ORDER BY 7 {order} LIMIT ?",
            [archive, *page_params, archive, *page_params, limit + 1],
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
