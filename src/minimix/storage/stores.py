"""The core stores: accounts, roster, offline messages, per-account documents.

Each is a small class over :class:`Database`; extensions receive only the store they need.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from minimix.storage.database import Database
from minimix.stream.sasl import ScramCredentials, make_credentials


def _encode(c: ScramCredentials) -> str:
    return json.dumps(
        {
            "salt": base64.b64encode(c.salt).decode(),
            "stored": base64.b64encode(c.stored_key).decode(),
            "server": base64.b64encode(c.server_key).decode(),
            "i": c.iterations,
        }
    )


def _decode(text: str) -> ScramCredentials:
    d = json.loads(text)
    return ScramCredentials(
        base64.b64decode(d["salt"]),
        base64.b64decode(d["stored"]),
        base64.b64decode(d["server"]),
        int(d["i"]),
    )


# Tables other features keep per account, keyed by the account's bare JID.
_ACCOUNT_KEYED = (
    ("archive", "archive"),
    ("archive_prefs", "archive"),
    ("pubsub_items", "owner"),
    ("pubsub_affiliations", "owner"),
    ("pubsub_subscriptions", "owner"),
    ("pubsub_nodes", "owner"),
    ("account_join_clients", "account"),
    ("account_join_rooms", "account"),
)


class AccountStore:
    """Accounts and their SCRAM keys (never plaintext passwords)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, username: str, password: str) -> bool:
        """False when the account exists."""
        if self.exists(username):
            return False
        self.db.execute(
            "INSERT INTO accounts (username, scram_sha1, scram_sha256, created) VALUES (?,?,?,?)",
            (
                username,
                _encode(make_credentials(password, "SHA-1")),
                _encode(make_credentials(password, "SHA-256")),
                time.time(),
            ),
        )
        return True

    def set_password(self, username: str, password: str) -> bool:
        return (
            self.db.execute(
                "UPDATE accounts SET scram_sha1=?, scram_sha256=? WHERE username=?",
                (
                    _encode(make_credentials(password, "SHA-1")),
                    _encode(make_credentials(password, "SHA-256")),
                    username,
                ),
            )
            > 0
        )

    def delete(self, username: str, bare_jid: str | None = None) -> bool:
        """Remove the account and everything stored for it (``bare_jid`` keys the data that
        other features store by address: archive, PEP nodes, room memberships)."""
        with self.db.transaction() as db:
            n = db._conn.execute("DELETE FROM accounts WHERE username=?", (username,)).rowcount
            for table in ("roster", "roster_version", "offline", "documents"):
                db._conn.execute(f"DELETE FROM {table} WHERE username=?", (username,))
            if bare_jid:
                present = {
                    r[0]
                    for r in db._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                for table, column in _ACCOUNT_KEYED:
                    if table in present:
                        db._conn.execute(f"DELETE FROM {table} WHERE {column}=?", (bare_jid,))
        return n > 0

    def exists(self, username: str) -> bool:
        return self.db.fetchone("SELECT 1 FROM accounts WHERE username=?", (username,)) is not None

    def credentials(self, username: str, hash_name: str) -> ScramCredentials | None:
        col = "scram_sha1" if hash_name == "SHA-1" else "scram_sha256"
        row = self.db.fetchone(f"SELECT {col} FROM accounts WHERE username=?", (username,))
        return _decode(row[0]) if row else None

    def list(self) -> list[str]:
        return [r[0] for r in self.db.fetchall("SELECT username FROM accounts ORDER BY username")]


@dataclass(slots=True)
class RosterItem:
    contact: str
    name: str | None = None
    subscription: str = "none"  # none | to | from | both
    ask: str | None = None  # 'subscribe' when an outbound request is pending
    approved: bool = False  # pre-approved inbound subscription
    groups: list[str] = field(default_factory=list)
    pending_in: bool = False  # an inbound request awaits the user's answer (not in the roster)


class RosterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def items(self, username: str) -> list[RosterItem]:
        rows = self.db.fetchall(
            "SELECT contact, name, subscription, ask, approved, groups FROM roster "
            "WHERE username=? ORDER BY contact",
            (username,),
        )
        return [_item(r) for r in rows]

    def get(self, username: str, contact: str) -> RosterItem | None:
        r = self.db.fetchone(
            "SELECT contact, name, subscription, ask, approved, groups FROM roster "
            "WHERE username=? AND contact=?",
            (username, contact),
        )
        return _item(r) if r else None

    def put(self, username: str, item: RosterItem) -> int:
        """Store an item; returns the new roster version."""
        with self.db.transaction() as db:
            db._conn.execute(
                "INSERT OR REPLACE INTO roster (username, contact, name, subscription, ask, "
                "approved, groups) VALUES (?,?,?,?,?,?,?)",
                (
                    username,
                    item.contact,
                    item.name,
                    item.subscription,
                    item.ask,
                    int(item.approved),
                    json.dumps(item.groups),
                ),
            )
            return self._bump(db, username)

    def remove(self, username: str, contact: str) -> int:
        with self.db.transaction() as db:
            db._conn.execute(
                "DELETE FROM roster WHERE username=? AND contact=?", (username, contact)
            )
            return self._bump(db, username)

    def version(self, username: str) -> int:
        r = self.db.fetchone("SELECT version FROM roster_version WHERE username=?", (username,))
        return int(r[0]) if r else 0

    @staticmethod
    def _bump(db: Database, username: str) -> int:
        db._conn.execute(
            "INSERT INTO roster_version (username, version) VALUES (?, 1) "
            "ON CONFLICT(username) DO UPDATE SET version = version + 1",
            (username,),
        )
        row = db._conn.execute(
            "SELECT version FROM roster_version WHERE username=?", (username,)
        ).fetchone()
        return int(row[0])


def _item(r: tuple[object, ...]) -> RosterItem:
    return RosterItem(
        contact=str(r[0]),
        name=str(r[1]) if r[1] is not None else None,
        subscription=str(r[2]),
        ask=str(r[3]) if r[3] is not None else None,
        approved=bool(r[4]),
        groups=list(json.loads(str(r[5]) or "[]")),
    )


class OfflineStore:
    """Messages kept for an account with no available client (XEP-0160)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def count(self, username: str) -> int:
        r = self.db.fetchone("SELECT COUNT(*) FROM offline WHERE username=?", (username,))
        return int(r[0]) if r else 0

    def push(self, username: str, stanza: str) -> None:
        self.db.execute(
            "INSERT INTO offline (username, stanza, stamp) VALUES (?,?,?)",
            (username, stanza, time.time()),
        )

    def peek(self, username: str) -> list[tuple[int, str, float]]:
        return [
            (int(r[0]), str(r[1]), float(r[2]))
            for r in self.db.fetchall(
                "SELECT id, stanza, stamp FROM offline WHERE username=? ORDER BY id", (username,)
            )
        ]

    def delete(self, username: str, ids: list[int]) -> None:
        self.db.executemany(
            "DELETE FROM offline WHERE username=? AND id=?", [(username, i) for i in ids]
        )


class DocumentStore:
    """Per-account documents by (store, key): vCards, private XML, blocking lists."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, username: str, store: str, key: str) -> str | None:
        r = self.db.fetchone(
            "SELECT value FROM documents WHERE username=? AND store=? AND key=?",
            (username, store, key),
        )
        return str(r[0]) if r else None

    def set(self, username: str, store: str, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute(
                "DELETE FROM documents WHERE username=? AND store=? AND key=?",
                (username, store, key),
            )
        else:
            self.db.execute(
                "INSERT OR REPLACE INTO documents (username, store, key, value) VALUES (?,?,?,?)",
                (username, store, key, value),
            )

    def keys(self, username: str, store: str) -> list[str]:
        return [
            str(r[0])
            for r in self.db.fetchall(
                "SELECT key FROM documents WHERE username=? AND store=? ORDER BY key",
                (username, store),
            )
        ]
