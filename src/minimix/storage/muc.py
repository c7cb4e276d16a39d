"""Storage for the group chat service: persistent rooms, affiliations and discussion history.

Only persistent rooms are written. Values are plain (JSON configuration, serialized stanzas) so
this layer knows nothing of the room logic above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minimix.storage.database import Database


@dataclass(slots=True)
class StoredAffiliation:
    jid: str
    affiliation: str
    nick: str = ""
    reason: str = ""


@dataclass(slots=True)
class StoredSubject:
    text: str
    nick: str = ""
    occupant_id: str = ""
    stamp: float = 0.0


@dataclass(slots=True)
class StoredRoom:
    room: str  # the room's localpart
    config: str  # JSON
    secret: bytes
    created: float
    subject: StoredSubject | None = None
    affiliations: list[StoredAffiliation] = field(default_factory=list)
    history: list[tuple[float, str]] = field(default_factory=list)  # (stamp, stanza), oldest first


class MucStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def rooms(self) -> list[StoredRoom]:
        """Every stored room, with its affiliations and history."""
        out: dict[str, StoredRoom] = {}
        for r in self.db.fetchall(
            "SELECT room, config, secret, subject, subject_nick, subject_occupant_id, "
            "subject_stamp, created FROM muc_rooms ORDER BY room"
        ):
            subject = None if r[3] is None else StoredSubject(str(r[3]), r[4], r[5], float(r[6]))
            out[r[0]] = StoredRoom(r[0], r[1], bytes.fromhex(r[2]), float(r[7]), subject)
        for r in self.db.fetchall(
            "SELECT room, jid, affiliation, nick, reason FROM muc_affiliations ORDER BY room, jid"
        ):
            room = out.get(r[0])
            if room is not None:
                room.affiliations.append(StoredAffiliation(r[1], r[2], r[3], r[4]))
        for r in self.db.fetchall("SELECT room, stamp, stanza FROM muc_history ORDER BY id"):
            room = out.get(r[0])
            if room is not None:
                room.history.append((float(r[1]), str(r[2])))
        return list(out.values())

    def save_room(
        self,
        room: str,
        config: str,
        secret: bytes,
        created: float,
        subject: StoredSubject | None,
    ) -> None:
        self.db.execute(
            "INSERT INTO muc_rooms (room, config, secret, subject, subject_nick, "
            "subject_occupant_id, subject_stamp, created) VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT (room) DO UPDATE SET config=excluded.config, subject=excluded.subject, "
            "subject_nick=excluded.subject_nick, subject_occupant_id=excluded.subject_occupant_id, "
            "subject_stamp=excluded.subject_stamp",
            (
                room,
                config,
                secret.hex(),
                None if subject is None else subject.text,
                "" if subject is None else subject.nick,
                "" if subject is None else subject.occupant_id,
                0.0 if subject is None else subject.stamp,
                created,
            ),
        )

    def delete_room(self, room: str) -> None:
        with self.db.transaction() as db:
            for table in ("muc_rooms", "muc_affiliations", "muc_history"):
                db._conn.execute(f"DELETE FROM {table} WHERE room=?", (room,))

    def set_affiliation(self, room: str, a: StoredAffiliation) -> None:
        """Store one affiliation; ``none`` removes it."""
        if a.affiliation == "none":
            self.db.execute("DELETE FROM muc_affiliations WHERE room=? AND jid=?", (room, a.jid))
            return
        self.db.execute(
            "INSERT OR REPLACE INTO muc_affiliations (room, jid, affiliation, nick, reason) "
            "VALUES (?,?,?,?,?)",
            (room, a.jid, a.affiliation, a.nick, a.reason),
        )

    def replace_affiliations(self, room: str, affiliations: list[StoredAffiliation]) -> None:
        with self.db.transaction() as db:
            db._conn.execute("DELETE FROM muc_affiliations WHERE room=?", (room,))
            db._conn.executemany(
                "INSERT INTO muc_affiliations (room, jid, affiliation, nick, reason) "
                "VALUES (?,?,?,?,?)",
                [(room, a.jid, a.affiliation, a.nick, a.reason) for a in affiliations],
            )

    def add_history(self, room: str, stamp: float, stanza: str, keep: int) -> None:
        """Append one message and keep only the newest ``keep`` of the room."""
        with self.db.transaction() as db:
            db._conn.execute(
                "INSERT INTO muc_history (room, stamp, stanza) VALUES (?,?,?)",
                (room, stamp, stanza),
            )
            db._conn.execute(
                "DELETE FROM muc_history WHERE room=? AND id NOT IN "
                "(SELECT id FROM muc_history WHERE room=? ORDER BY id DESC LIMIT ?)",
                (room, room, keep),
            )

    def replace_history(self, room: str, entries: list[tuple[float, str]]) -> None:
        with self.db.transaction() as db:
            db._conn.execute("DELETE FROM muc_history WHERE room=?", (room,))
            db._conn.executemany(
                "INSERT INTO muc_history (room, stamp, stanza) VALUES (?,?,?)",
                [(room, stamp, stanza) for stamp, stanza in entries],
            )
