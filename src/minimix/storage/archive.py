"""Message archive storage (XEP-0313): one ordered archive per account or room.

An archive is named by its owner's bare JID (``alice@example.org`` or ``room@conference.example``).
Each stored message gets an unpredictable id, unique within the archive and never reused: the
XEP-0359 stanza-id clients see. Order is the order of arrival (``seq``), never the timestamp alone.

Queries combine filters (``with``, time span, ``before-id``/``after-id``, ``ids``, group chat) with
XEP-0059 paging (``after``, ``before``, ``before=''`` for the last page, ``max``).
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


_INSERT = (
    "INSERT OR IGNORE INTO archive (archive, id, with_jid, with_full, stamp, kind, stanza, "
    "room_stanza_id) VALUES (?,?,?,?,?,?,?,?)"
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


def _message(r: Row) -> ArchivedMessage:
    return ArchivedMessage(
        id=str(r[0]),
        with_jid=str(r[1]),
        stamp=float(r[2]),
        stanza=str(r[3]),
        kind=str(r[4]),
        room_stanza_id=str(r[5]) if r[5] is not None else None,
    )


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

    def append_many(self, rows: Sequence[ArchiveRow]) -> None:
        """Store several messages in one transaction (all of them, or none: StorageError).

        A row whose id its archive holds already stores nothing, as with :meth:`append`.
        """
        if len(rows) == 1:
            self.db.execute(_INSERT, _values(rows[0]))  # one statement: its own transaction
        elif rows:
            self.db.executemany(_INSERT, [_values(r) for r in rows])

    def get(self, archive: str, stanza_id: str) -> ArchivedMessage | None:
        r = self.db.fetchone(
            f"SELECT {_COLUMNS} FROM archive WHERE archive=? AND id=?", (archive, stanza_id)
        )
        return _message(r) if r else None

    def has_room_stanza(self, archive: str, room_stanza_id: str) -> bool:
        return (
            self.db.fetchone(
                "SELECT 1 FROM archive WHERE archive=? AND room_stanza_id=?",
                (archive, room_stanza_id),
            )
            is not None
        )

    def last_room_stanza(self, archive: str, room: str) -> tuple[str, float] | None:
        """(room stanza-id, stamp) of the newest group chat message from ``room``."""
        r = self.db.fetchone(
            "SELECT room_stanza_id, stamp FROM archive WHERE archive=? AND with_jid=? "
            "AND kind='groupchat' AND room_stanza_id IS NOT NULL ORDER BY seq DESC LIMIT 1",
            (archive, room),
        )
        return (str(r[0]), float(r[1])) if r else None

    def bounds(self, archive: str) -> tuple[ArchivedMessage, ArchivedMessage] | None:
        """The oldest and newest message of an archive (XEP-0313 metadata)."""
        first = self.db.fetchone(
            f"SELECT {_COLUMNS} FROM archive WHERE archive=? ORDER BY seq LIMIT 1", (archive,)
        )
        last = self.db.fetchone(
            f"SELECT {_COLUMNS} FROM archive WHERE archive=? ORDER BY seq DESC LIMIT 1", (archive,)
        )
        if first is None or last is None:
            return None
        return _message(first), _message(last)

    def delete_archive(self, archive: str) -> None:
        self.db.execute("DELETE FROM archive WHERE archive=?", (archive,))
        self.db.execute("DELETE FROM archive_prefs WHERE archive=?", (archive,))

    def expire(self, archive: str | None, older_than: float) -> int:
        """Drop messages stamped before ``older_than`` (one archive, or all); returns how many."""
        if archive is None:
            return self.db.execute("DELETE FROM archive WHERE stamp < ?", (older_than,))
        return self.db.execute(
            "DELETE FROM archive WHERE archive=? AND stamp < ?", (archive, older_than)
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
            "SELECT seq FROM archive WHERE archive=? AND id=?", (archive, stanza_id)
        )
        if r is None:
            raise UnknownArchiveId(stanza_id)
        return int(r[0])

    def query(self, archive: str, q: ArchiveQuery) -> ArchivePage:
        """Run a query. Raises :class:`UnknownArchiveId` for an id the archive does not hold."""
        where = ["archive=?"]
        params: list[Any] = [archive]
        if q.with_jid is not None:
            if "/" in q.with_jid:
                where.append("with_full=?")
            else:
                where.append("with_jid=?")
            params.append(q.with_jid)
        # Stamps have microsecond resolution (XEP-0082 as we write it): compare at that grain.
        if q.start is not None:
            where.append("stamp >= ?")
            params.append(q.start - _HALF_MICROSECOND)
        if q.end is not None:
            where.append("stamp <= ?")
            params.append(q.end + _HALF_MICROSECOND)
        if q.after_id is not None:
            where.append("seq > ?")
            params.append(self._seq(archive, q.after_id))
        if q.before_id is not None:
            where.append("seq < ?")
            params.append(self._seq(archive, q.before_id))
        if q.ids is not None:
            for i in q.ids:
                self._seq(archive, i)
            where.append(f"id IN ({','.join('?' * len(q.ids))})" if q.ids else "0")
            params.extend(q.ids)
        if not q.include_groupchat:
            where.append("kind != 'groupchat'")
        base = " AND ".join(where)
        total_row = self.db.fetchone(f"SELECT COUNT(*) FROM archive WHERE {base}", params)
        total = int(total_row[0]) if total_row else 0

        page_where = [base]
        page_params = list(params)
        backwards = q.before is not None
        if q.after:
            page_where.append("seq > ?")
            page_params.append(self._seq(archive, q.after))
        if q.before:
            page_where.append("seq < ?")
            page_params.append(self._seq(archive, q.before))
        limit = max(0, q.max)
        cond = " AND ".join(page_where)
        order = "DESC" if backwards else "ASC"
        rows = self.db.fetchall(
            f"SELECT {_COLUMNS}, seq FROM archive WHERE {cond} ORDER BY seq {order} LIMIT ?",
            [*page_params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        if backwards:
            rows.reverse()
        items = [_message(r) for r in rows]
        first_index: int | None = None
        if rows:
            before_first = self.db.fetchone(
                f"SELECT COUNT(*) FROM archive WHERE {base} AND seq < ?", [*params, rows[0][6]]
            )
            first_index = int(before_first[0]) if before_first else 0
        return ArchivePage(items=items, complete=not more, count=total, first_index=first_index)
