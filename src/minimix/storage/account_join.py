"""Account-join persistence: which rooms each account is in, and which clients are attached.

The memberships survive restarts (the server rejoins them at start and back-fills the gap); the
attached clients are a live view for operators (``minimix rooms``), rewritten at every start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from minimix.storage.database import Database


@dataclass(frozen=True, slots=True)
class Membership:
    """One account's membership of one room, as persisted and shown to operators."""

    account: str
    room: str
    nick: str
    password: str | None
    origin: str  # "client" (a client joined) | "bookmark" (an autojoin bookmark)
    autojoin: bool
    last_room_stanza_id: str | None
    last_stamp: float | None
    clients: tuple[str, ...] = ()


class AccountJoinStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, m: Membership) -> None:
        """Insert or update the membership and replace its attached clients."""
        now = time.time()
        with self.db.transaction() as db:
            db._conn.execute(
                "INSERT INTO account_join_rooms (account, room, nick, password, origin, autojoin, "
                "last_room_stanza_id, last_stamp, joined_at) VALUES (?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (account, room) DO UPDATE SET nick=excluded.nick, "
                "password=excluded.password, origin=excluded.origin, autojoin=excluded.autojoin, "
                "last_room_stanza_id=COALESCE(excluded.last_room_stanza_id, last_room_stanza_id), "
                "last_stamp=COALESCE(excluded.last_stamp, last_stamp)",
                (
                    m.account,
                    m.room,
                    m.nick,
                    m.password,
                    m.origin,
                    int(m.autojoin),
                    m.last_room_stanza_id,
                    m.last_stamp,
                    now,
                ),
            )
            db._conn.execute(
                "DELETE FROM account_join_clients WHERE account=? AND room=?", (m.account, m.room)
            )
            db._conn.executemany(
                "INSERT INTO account_join_clients (account, room, client, attached_at) "
                "VALUES (?,?,?,?)",
                [(m.account, m.room, c, now) for c in m.clients],
            )

    def progress(self, account: str, room: str, room_stanza_id: str, stamp: float) -> None:
        """The newest archived room message (the gap-fill starts after it)."""
        self.db.execute(
            "UPDATE account_join_rooms SET last_room_stanza_id=?, last_stamp=? "
            "WHERE account=? AND room=? AND (last_stamp IS NULL OR last_stamp <= ?)",
            (room_stanza_id, stamp, account, room, stamp),
        )

    def forget(self, account: str, room: str) -> None:
        with self.db.transaction() as db:
            db._conn.execute(
                "DELETE FROM account_join_rooms WHERE account=? AND room=?", (account, room)
            )
            db._conn.execute(
                "DELETE FROM account_join_clients WHERE account=? AND room=?", (account, room)
            )

    def forget_account(self, account: str) -> None:
        with self.db.transaction() as db:
            db._conn.execute("DELETE FROM account_join_rooms WHERE account=?", (account,))
            db._conn.execute("DELETE FROM account_join_clients WHERE account=?", (account,))

    def clear_clients(self) -> None:
        """At start no client is attached to anything."""
        self.db.execute("DELETE FROM account_join_clients")

    def memberships(self, account: str | None = None) -> list[Membership]:
        """Every persisted membership (of one account), with its attached clients."""
        if account is None:
            rows = self.db.fetchall(
                "SELECT account, room, nick, password, origin, autojoin, last_room_stanza_id, "
                "last_stamp FROM account_join_rooms ORDER BY account, room"
            )
            crow = self.db.fetchall(
                "SELECT account, room, client FROM account_join_clients ORDER BY client"
            )
        else:
            rows = self.db.fetchall(
                "SELECT account, room, nick, password, origin, autojoin, last_room_stanza_id, "
                "last_stamp FROM account_join_rooms WHERE account=? ORDER BY room",
                (account,),
            )
            crow = self.db.fetchall(
                "SELECT account, room, client FROM account_join_clients WHERE account=? "
                "ORDER BY client",
                (account,),
            )
        clients: dict[tuple[str, str], list[str]] = {}
        for acc, room, client in crow:
            clients.setdefault((acc, room), []).append(client)
        return [
            Membership(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                bool(r[5]),
                r[6],
                r[7],
                tuple(clients.get((r[0], r[1]), ())),
            )
            for r in rows
        ]
