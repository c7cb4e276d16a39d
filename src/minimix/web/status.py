"""What the operator status page (``/admin``) shows: clients, accounts, rooms and who is in them.

:func:`snapshot` returns plain JSON-ready data. Room data comes from the group chat service and
account-join when they offer it (``status()`` on either, returning JSON-ready data); the page
shows what there is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from minimix import __version__

if TYPE_CHECKING:
    from minimix.web.server import ServerView, _Sources


def _transport_of(link: Any) -> str:
    return "websocket" if getattr(link, "framed", False) else "tcp"


def clients(server: ServerView) -> list[dict[str, Any]]:
    """Every bound client, grouped under its account."""
    now = time.monotonic()
    by_account: dict[str, list[dict[str, Any]]] = {}
    for session in server.sessions:
        by_account.setdefault(str(session.account), []).append(
            {
                "jid": str(session.jid),
                "resource": session.jid.resource,
                "transport": _transport_of(session.link),
                "available": session.available,
                "hibernating": session.hibernating,
                "online_seconds": round(now - session.started, 1),
            }
        )
    return [
        {"jid": account, "clients": sorted(items, key=lambda c: str(c["resource"]))}
        for account, items in sorted(by_account.items())
    ]


def feature_status(feature: Any) -> Any:
    status = getattr(feature, "status", None)
    if not callable(status):
        return None
    try:
        return status()
    except Exception:
        return None


def account_joins(account_join: Any) -> list[dict[str, Any]]:
    """Every (account, room) membership account-join holds, with the clients attached to it."""
    given = feature_status(account_join)
    if isinstance(given, list):
        return given
    registry = getattr(account_join, "registry", None)
    if registry is None:
        return []
    out: list[dict[str, Any]] = []
    for occ in registry:
        phase = getattr(occ, "phase", "")
        attached = getattr(occ, "joined", None) or {}
        out.append(
            {
                "room": str(getattr(occ, "room", "")),
                "account": str(getattr(occ, "account", "")),
                "nick": str(getattr(occ, "nick", "")),
                "state": str(getattr(phase, "value", phase)),
                "attached": sorted(str(j) for j in attached),
            }
        )
    out.sort(key=lambda j: (j["room"], j["account"]))
    return out


def muc_rooms(muc: Any) -> list[dict[str, Any]]:
    """The rooms of the group chat service and their occupants (by nick, with real JIDs)."""
    given = feature_status(muc)
    if isinstance(given, list):
        return given
    rooms = getattr(muc, "rooms", None)
    if not isinstance(rooms, Mapping):
        return []
    out: list[dict[str, Any]] = []
    for name, room in sorted(rooms.items()):
        occupants = getattr(room, "occupants", None)
        people: list[dict[str, Any]] = []
        if isinstance(occupants, Mapping):
            for nick, occ in sorted(occupants.items()):
                sessions = getattr(occ, "sessions", None) or {}
                people.append(
                    {
                        "nick": str(nick),
                        "jid": str(getattr(occ, "bare", "")),
                        "role": str(getattr(occ, "role", "")),
                        "sessions": sorted(str(j) for j in sessions),
                    }
                )
        config = getattr(room, "config", None)
        out.append(
            {
                "jid": str(getattr(room, "jid", name)),
                "occupant_count": len(people),
                "occupants": people,
                "persistent": bool(getattr(config, "persistent", False)),
            }
        )
    return out


def snapshot(server: ServerView, sources: _Sources) -> dict[str, Any]:
    c = server.config
    by_transport = sources.connections_by_transport()
    sessions, accounts, hibernating = sources.session_counts()
    try:
        joins = account_joins(server.account_join)
    except Exception:  # a view of another feature's state must never break the page
        joins = []
    try:
        room_service = muc_rooms(server.muc)
    except Exception:  # a view of another feature's state must never break the page
        room_service = []
    return {
        "server": {
            "domain": c.domain,
            "muc_domain": c.muc.domain,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - sources.started, 1),
            "connections": dict(by_transport),
            "sessions": sessions,
            "accounts_online": accounts,
            "hibernating": hibernating,
        },
        "accounts": clients(server),
        "joins": joins,
        "rooms": room_service,
    }
