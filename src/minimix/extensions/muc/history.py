"""Discussion history (XEP-0045 §7.2.13-14): the last messages of a room, sent on entry.

Pure: entries are kept in memory, newest last; :func:`select` applies a joining client's
``<history maxchars maxstanzas seconds since/>`` request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from minimix.protocol import ns
from minimix.protocol.dates import format_datetime, parse_datetime
from minimix.protocol.xml import Element, tag


@dataclass(slots=True)
class HistoryEntry:
    """One message as every occupant received it (no ``to``), with its ``<delay/>`` added."""

    stanza: Element
    stamp: float
    size: int  # characters of the serialized stanza, for ``maxchars``


@dataclass(slots=True)
class HistoryRequest:
    """The attributes of a client's ``<history/>``; ``None`` means not given."""

    maxchars: int | None = None
    maxstanzas: int | None = None
    seconds: int | None = None
    since: float | None = None

    @staticmethod
    def parse(el: Element | None) -> HistoryRequest:
        """Read ``<history/>``; malformed attributes are ignored (the service's default applies)."""
        req = HistoryRequest()
        if el is None:
            return req
        for attr in ("maxchars", "maxstanzas", "seconds"):
            raw = el.get(attr)
            if raw is not None and raw.strip().isdigit():
                setattr(req, attr, int(raw))
        since = el.get("since")
        if since:
            req.since = parse_datetime(since)
        return req


def delay(room: str, stamp: float) -> Element:
    """``<delay xmlns='urn:xmpp:delay' from=room stamp=.../>`` (XEP-0203)."""
    return Element(tag(ns.DELAY, "delay"), {"from": room, "stamp": format_datetime(stamp)})


class History:
    """The room's last ``length`` messages."""

    def __init__(self, length: int, entries: Iterable[HistoryEntry] = ()) -> None:
        self.length = max(length, 0)
        self._entries: deque[HistoryEntry] = deque(entries, maxlen=self.length)

    def resize(self, length: int) -> None:
        self.length = max(length, 0)
        self._entries = deque(self._entries, maxlen=self.length)

    def append(self, entry: HistoryEntry) -> None:
        if self.length <= 0:
            return
        self._entries.append(entry)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[HistoryEntry]:
        return list(self._entries)

    def select(self, req: HistoryRequest, now: float) -> list[HistoryEntry]:
        """The smallest set meeting every limit given (§7.2.14), oldest first."""
        return select(self._entries, req, now)


def select(entries: Iterable[HistoryEntry], req: HistoryRequest, now: float) -> list[HistoryEntry]:
    items = list(entries)
    if req.maxstanzas is not None:
        items = items[len(items) - req.maxstanzas :] if req.maxstanzas else []
    if req.seconds is not None:
        cutoff = now - req.seconds
        items = [e for e in items if e.stamp >= cutoff]
    if req.since is not None:
        since = req.since
        items = [e for e in items if e.stamp >= since]
    if req.maxchars is not None:
        budget = req.maxchars
        kept: list[HistoryEntry] = []
        for e in reversed(items):
            if e.size > budget:
                break
            budget -= e.size
            kept.append(e)
        kept.reverse()
        items = kept
    return items
