"""Personal eventing storage (XEP-0163): each account's nodes, items, affiliations, subscriptions.

A node belongs to an owner (an account's bare JID). Its configuration is a small mapping of
XEP-0060 ``pubsub#`` option names to values, kept as JSON. Items are kept in publication order;
publishing an id again replaces the item and makes it the newest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from minimix.storage.database import Database


@dataclass(slots=True)
class PubsubItem:
    id: str
    payload: str  # the serialized payload element ('' when the item carries none)
    publisher: str
    stamp: float


class PubsubStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ nodes
    def node_config(self, owner: str, node: str) -> dict[str, Any] | None:
        r = self.db.fetchone(
            "SELECT config FROM pubsub_nodes WHERE owner=? AND node=?", (owner, node)
        )
        return dict(json.loads(str(r[0]))) if r else None

    def create_node(self, owner: str, node: str, config: dict[str, Any]) -> bool:
        """False when the node exists already."""
        with self.db.transaction() as db:
            exists = db._conn.execute(
                "SELECT 1 FROM pubsub_nodes WHERE owner=? AND node=?", (owner, node)
            ).fetchone()
            if exists:
                return False
            db._conn.execute(
                "INSERT INTO pubsub_nodes (owner, node, config, created) VALUES (?,?,?,?)",
                (owner, node, json.dumps(config, sort_keys=True), time.time()),
            )
        return True

    def set_config(self, owner: str, node: str, config: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE pubsub_nodes SET config=? WHERE owner=? AND node=?",
            (json.dumps(config, sort_keys=True), owner, node),
        )

    def delete_node(self, owner: str, node: str) -> bool:
        with self.db.transaction() as db:
            n = db._conn.execute(
                "DELETE FROM pubsub_nodes WHERE owner=? AND node=?", (owner, node)
            ).rowcount
            for table in ("pubsub_items", "pubsub_affiliations", "pubsub_subscriptions"):
                db._conn.execute(f"DELETE FROM {table} WHERE owner=? AND node=?", (owner, node))
        return n > 0

    def nodes(self, owner: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (str(r[0]), dict(json.loads(str(r[1]))))
            for r in self.db.fetchall(
                "SELECT node, config FROM pubsub_nodes WHERE owner=? ORDER BY node", (owner,)
            )
        ]

    def delete_owner(self, owner: str) -> None:
        with self.db.transaction() as db:
            for table in (
                "pubsub_nodes",
                "pubsub_items",
                "pubsub_affiliations",
                "pubsub_subscriptions",
            ):
                db._conn.execute(f"DELETE FROM {table} WHERE owner=?", (owner,))

    # ------------------------------------------------------------------ items
    def publish(
        self,
        owner: str,
        node: str,
        item_id: str,
        payload: str,
        publisher: str,
        max_items: int | None,
    ) -> list[str]:
        """Store an item (replacing one with the same id); returns ids evicted by max_items."""
        with self.db.transaction() as db:
            c = db._conn
            c.execute(
                "DELETE FROM pubsub_items WHERE owner=? AND node=? AND item_id=?",
                (owner, node, item_id),
            )
            c.execute(
                "INSERT INTO pubsub_items (owner, node, item_id, payload, publisher, stamp) "
                "VALUES (?,?,?,?,?,?)",
                (owner, node, item_id, payload, publisher, time.time()),
            )
            evicted: list[str] = []
            if max_items is not None:
                rows = c.execute(
                    "SELECT seq, item_id FROM pubsub_items WHERE owner=? AND node=? "
                    "ORDER BY seq DESC LIMIT -1 OFFSET ?",
                    (owner, node, max(max_items, 1)),
                ).fetchall()
                for seq, old_id in rows:
                    c.execute("DELETE FROM pubsub_items WHERE seq=?", (seq,))
                    evicted.append(str(old_id))
        return evicted

    def retract(self, owner: str, node: str, item_id: str) -> bool:
        return (
            self.db.execute(
                "DELETE FROM pubsub_items WHERE owner=? AND node=? AND item_id=?",
                (owner, node, item_id),
            )
            > 0
        )

    def purge(self, owner: str, node: str) -> list[str]:
        """Remove every item; returns their ids."""
        ids = [i.id for i in self.items(owner, node)]
        self.db.execute("DELETE FROM pubsub_items WHERE owner=? AND node=?", (owner, node))
        return ids

    def items(
        self, owner: str, node: str, max_items: int | None = None, ids: list[str] | None = None
    ) -> list[PubsubItem]:
        """Items oldest first; ``max_items`` keeps the newest N; ``ids`` picks those ids."""
        sql = "SELECT item_id, payload, publisher, stamp FROM pubsub_items WHERE owner=? AND node=?"
        params: list[Any] = [owner, node]
        if ids is not None:
            sql += f" AND item_id IN ({','.join('?' * len(ids))})" if ids else " AND 0"
            params.extend(ids)
        if max_items is not None:
            sql += " ORDER BY seq DESC LIMIT ?"
            params.append(max_items)
            rows = list(reversed(self.db.fetchall(sql, params)))
        else:
            rows = self.db.fetchall(sql + " ORDER BY seq", params)
        return [PubsubItem(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    def last_item(self, owner: str, node: str) -> PubsubItem | None:
        got = self.items(owner, node, max_items=1)
        return got[0] if got else None

    # ------------------------------------------------------------------ access
    def affiliations(self, owner: str, node: str) -> dict[str, str]:
        return {
            str(r[0]): str(r[1])
            for r in self.db.fetchall(
                "SELECT jid, affiliation FROM pubsub_affiliations WHERE owner=? AND node=?",
                (owner, node),
            )
        }

    def set_affiliation(self, owner: str, node: str, jid: str, affiliation: str) -> None:
        if affiliation == "none":
            self.db.execute(
                "DELETE FROM pubsub_affiliations WHERE owner=? AND node=? AND jid=?",
                (owner, node, jid),
            )
        else:
            self.db.execute(
                "INSERT OR REPLACE INTO pubsub_affiliations (owner, node, jid, affiliation) "
                "VALUES (?,?,?,?)",
                (owner, node, jid, affiliation),
            )

    def subscribers(self, owner: str, node: str) -> list[str]:
        return [
            str(r[0])
            for r in self.db.fetchall(
                "SELECT jid FROM pubsub_subscriptions WHERE owner=? AND node=? ORDER BY jid",
                (owner, node),
            )
        ]

    def subscribe(self, owner: str, node: str, jid: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO pubsub_subscriptions (owner, node, jid) VALUES (?,?,?)",
            (owner, node, jid),
        )

    def unsubscribe(self, owner: str, node: str, jid: str) -> bool:
        return (
            self.db.execute(
                "DELETE FROM pubsub_subscriptions WHERE owner=? AND node=? AND jid=?",
                (owner, node, jid),
            )
            > 0
        )

    def subscriptions_of(self, owner: str, jid: str) -> list[str]:
        """The owner's nodes ``jid`` subscribed to explicitly."""
        return [
            str(r[0])
            for r in self.db.fetchall(
                "SELECT node FROM pubsub_subscriptions WHERE owner=? AND jid=? ORDER BY node",
                (owner, jid),
            )
        ]
