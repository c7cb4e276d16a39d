"""Typed hooks with named priorities.

Stanza hooks are keyed by (direction, kind). A stanza handler returns ``True`` when it has
taken the stanza (routing stops) and ``False``/``None`` to let it continue. IQ handlers are keyed
by (type, payload tag, scope) and return the result payload, or raise ``StanzaError``.
Events are plain dataclasses; subscribers are keyed by the event's class.

Copies hooks see one stanza that is to reach many recipients, each in a copy addressed to it (a
room reflecting a message to its occupants). A copies handler runs synchronously, handles the
copies it can take exactly as the inbound stanza hooks would have handled each copy, and returns
the recipients it left; the router routes a copy to each recipient left.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from minimix.protocol.xml import Element

log = logging.getLogger(__name__)


class Priority(enum.IntEnum):
    """Named priorities: higher runs first."""

    FIRST = 1000
    FILTER = 900  # access control, blocking, rate limits
    INTERCEPT = 500  # features that re-address or swallow stanzas (account-join)
    OBSERVE = 300  # features that look and copy (archive, carbons)
    NORMAL = 100
    LAST = 0


class Direction(enum.Enum):
    OUTBOUND = "outbound"  # sent by a local client, before routing
    INBOUND_BARE = "inbound-bare"  # for delivery to a local account's bare JID
    INBOUND_FULL = "inbound-full"  # for delivery to a local client's full JID
    INBOUND_HOST = "inbound-host"  # addressed to the server's own domain


class IqScope(enum.Enum):
    HOST = "host"  # to the server's domain (or no 'to')
    ACCOUNT = "account"  # to a local bare JID, handled by the server on the account's behalf
    ANY = "any"  # both


StanzaHandler = Callable[[Element, Any], Awaitable[bool | None]]
IqHandler = Callable[[Element, Any], Awaitable[Element | None]]
CopiesHandler = Callable[[Element, list[str], Any], list[str]]
E = TypeVar("E")
EventHandler = Callable[[Any], Awaitable[None]]


class Hooks:
    def __init__(self) -> None:
        self._stanza: dict[tuple[Direction, str], list[tuple[int, int, StanzaHandler]]] = (
            defaultdict(list)
        )
        self._iq: dict[tuple[str, str, IqScope], IqHandler] = {}
        self._copies: dict[str, list[tuple[int, int, CopiesHandler]]] = defaultdict(list)
        self._events: dict[type, list[EventHandler]] = defaultdict(list)
        self._seq = 0
        # Stream-level extension points used by client connections.
        self.stream_feature_providers: list[Callable[[bool, bool], list[Element]]] = []
        self.nonza_handlers: dict[str, Callable[[Element, Any], Awaitable[None]]] = {}
        self.preauth_iq: dict[str, Callable[[Element, Any], Awaitable[Element | None]]] = {}

    def on_stanza(
        self,
        direction: Direction,
        kind: str,
        handler: StanzaHandler,
        priority: Priority | int = Priority.NORMAL,
    ) -> None:
        """``kind`` is ``message``, ``presence`` or ``iq``."""
        self._seq += 1
        lst = self._stanza[(direction, kind)]
        lst.append((-int(priority), self._seq, handler))
        lst.sort(key=lambda t: (t[0], t[1]))

    def stanza_handlers(self, direction: Direction, kind: str) -> list[StanzaHandler]:
        return [h for _, _, h in self._stanza.get((direction, kind), ())]

    def on_copies(
        self, kind: str, handler: CopiesHandler, priority: Priority | int = Priority.NORMAL
    ) -> None:
        """Take copies of a ``kind`` stanza for many recipients at once (see the module doc)."""
        self._seq += 1
        lst = self._copies[kind]
        lst.append((-int(priority), self._seq, handler))
        lst.sort(key=lambda t: (t[0], t[1]))

    def copies_handlers(self, kind: str) -> list[CopiesHandler]:
        return [h for _, _, h in self._copies.get(kind, ())]

    def on_iq(self, iq_type: str, payload_tag: str, handler: IqHandler, scope: IqScope) -> None:
        """Handle ``<iq type=iq_type>`` whose first child is ``payload_tag`` ({ns}name)."""
        scopes = (IqScope.HOST, IqScope.ACCOUNT) if scope is IqScope.ANY else (scope,)
        for s in scopes:
            self._iq[(iq_type, payload_tag, s)] = handler

    def iq_handler(self, iq_type: str, payload_tag: str, scope: IqScope) -> IqHandler | None:
        return self._iq.get((iq_type, payload_tag, scope))

    def on_event(self, event_type: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        self._events[event_type].append(handler)

    async def emit(self, event: object) -> None:
        for handler in list(self._events.get(type(event), ())):
            try:
                await handler(event)
            except Exception:
                log.exception("handler for %s failed", type(event).__name__)
