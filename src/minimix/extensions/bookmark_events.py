"""Events the bookmarks feature emits (XEP-0402 and its XEP-0048/0049 compat forms).

Other server-side features (account-join) subscribe with ``hooks.on_event(...)``. Every write
path (PEP publish on ``urn:xmpp:bookmarks:1``, the legacy ``storage:bookmarks`` PEP node, and
XEP-0049 private storage) ends in the same events, so a feature never needs to know which form a
client used.
"""

from __future__ import annotations

from dataclasses import dataclass

from minimix.protocol.jid import JID


@dataclass(frozen=True, slots=True)
class Bookmark:
    room: JID
    autojoin: bool = False
    name: str | None = None
    nick: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class BookmarkPublished:
    """A bookmark was created or changed (autojoin may have flipped either way)."""

    account: JID
    bookmark: Bookmark


@dataclass(frozen=True, slots=True)
class BookmarkRetracted:
    """A bookmark was removed (retract, or its node purged or deleted: one event per room)."""

    account: JID
    room: JID
