"""The router: sorts every stanza by how it is addressed and offers it to the hooks.

Client stanzas pass the OUTBOUND hooks first (the server stamps ``from``). Then delivery goes by
``to``: the server's own domain (INBOUND_HOST), a local account's bare JID (INBOUND_BARE) or a
client's full JID (INBOUND_FULL), a component's domain (the component receives it), or a remote
domain. IQs nobody takes get ``service-unavailable``; nothing is forwarded as raw bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from minimix.core.hooks import Direction, Hooks, IqScope
from minimix.core.session import Session, SessionRegistry
from minimix.protocol.jid import JID, try_parse
from minimix.protocol.stanza import StanzaError, copy_shallow, error_reply, iq_result, stanza_type
from minimix.protocol.xml import Element, local_name
from minimix.storage.database import StorageError

log = logging.getLogger(__name__)


def error_for(exc: Exception) -> StanzaError:
    """The stanza error for a handler that failed with ``exc`` (never silence)."""
    if isinstance(exc, StanzaError):
        return exc
    if isinstance(exc, StorageError):
        return exc.stanza_error()
    return StanzaError("internal-server-error")


class Component(Protocol):
    """Anything that owns a domain and receives stanzas for it (MUC service, XEP-0114)."""

    domain: str

    async def receive(self, stanza: Element) -> None: ...


class Router:
    def __init__(self, domain: str, hooks: Hooks, sessions: SessionRegistry) -> None:
        self.domain = domain
        self.hooks = hooks
        self.sessions = sessions
        self.components: dict[str, Component] = {}
        self.counters: dict[str, int] = {}
        # Called when a stanza could not be delivered to any client of an account.
        self.undeliverable: list[Callable[[Element], Awaitable[bool]]] = []
        # Whether a local account (by localpart) exists; wired to the account store.
        self.account_exists: Callable[[str], bool] = lambda _user: True

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    # ------------------------------------------------------------------ components
    def register_component(self, component: Component) -> None:
        self.components[component.domain] = component

    def unregister_component(self, component: Component) -> None:
        if self.components.get(component.domain) is component:
            del self.components[component.domain]

    def is_local(self, jid: JID) -> bool:
        return jid.domain == self.domain

    # ------------------------------------------------------------------ entry points
    async def from_client(self, session: Session, stanza: Element) -> None:
        """A stanza sent by a bound client: ``from`` already stamped by the connection."""
        kind = local_name(stanza)
        self.count(f"in_{kind}")
        if await self._run(Direction.OUTBOUND, stanza, session):
            return  # taken, or refused with an error to the sender
        if kind == "presence" and "to" not in stanza.attrib:
            return  # broadcast presence is the presence extension's
        if "to" not in stanza.attrib:
            stanza.set("to", str(session.account))
        await self.route(stanza, session)

    async def route(self, stanza: Element, origin: Any = None) -> None:
        """Deliver a stanza to wherever its ``to`` points."""
        to_attr = stanza.get("to")
        to = try_parse(to_attr) if to_attr else JID("", self.domain, "")
        if to is None:
            await self.bounce(stanza, StanzaError("jid-malformed"))
            return
        if to.domain == self.domain:
            if to.local:
                if to.resource:
                    await self._to_full(stanza, to, origin)
                else:
                    await self._to_bare(stanza, to, origin)
            elif to.resource:
                await self.bounce(stanza, StanzaError("service-unavailable"))
            else:
                await self._to_host(stanza, origin)
            return
        component = self.components.get(to.domain)
        if component is not None:
            self.count("to_component")
            try:
                await component.receive(stanza)
            except StanzaError as err:
                await self.bounce(stanza, err)
            except Exception as exc:
                log.exception("component %s failed on a stanza", to.domain)
                await self.bounce(stanza, error_for(exc))
            return
        await self.bounce(stanza, StanzaError("remote-server-not-found"))

    async def route_copies(
        self, stanza: Element, recipients: list[str], origin: Any = None
    ) -> None:
        """A copy of ``stanza`` to each of ``recipients`` (``to`` set per copy), as routing each
        copy would: the copies hooks take what they can in one pass (account-join takes the
        accounts in the room, blocking drops what an account blocks), the rest is routed one
        copy at a time, in the order given."""
        left = recipients
        for handler in self.hooks.copies_handlers(local_name(stanza)):
            try:
                left = handler(stanza, left, origin)
            except Exception:
                log.exception("handler failed on copies of a %s", local_name(stanza))
            if not left:
                return
        for to in left:
            await self.route(copy_shallow(stanza, to=to), origin)

    # ------------------------------------------------------------------ delivery
    async def _run(self, direction: Direction, stanza: Element, origin: Any) -> bool:
        for handler in self.hooks.stanza_handlers(direction, local_name(stanza)):
            try:
                if await handler(stanza, origin):
                    return True
            except StanzaError as err:
                await self.bounce(stanza, err)
                return True
            except Exception as exc:
                log.exception("handler failed on a %s stanza", direction.value)
                await self.bounce(stanza, error_for(exc))
                return True
        return False

    async def _to_host(self, stanza: Element, origin: Any) -> None:
        if await self._run(Direction.INBOUND_HOST, stanza, origin):
            return
        if local_name(stanza) == "iq":
            await self.dispatch_iq(stanza, IqScope.HOST, origin)

    def _known(self, account: JID) -> bool:
        return self.sessions.has_account(account) or self.account_exists(account.local)

    async def _no_such_account(self, stanza: Element, to: JID) -> None:
        """RFC 6121 §8.5.1: messages and iqs bounce; a subscription request is answered with
        ``unsubscribed``; other presence is dropped."""
        kind = local_name(stanza)
        if kind != "presence":
            await self.bounce(stanza, StanzaError("service-unavailable"))
            return
        sender = try_parse(stanza.get("from"))
        if stanza.get("type") == "subscribe" and sender is not None:
            reply = Element(
                "{jabber:client}presence",
                {"from": str(to.bare), "to": str(sender.bare), "type": "unsubscribed"},
            )
            await self.route(reply, None)

    async def _to_bare(self, stanza: Element, to: JID, origin: Any) -> None:
        if not self._known(to):
            await self._no_such_account(stanza, to)
            return
        if await self._run(Direction.INBOUND_BARE, stanza, origin):
            return
        kind = local_name(stanza)
        if kind == "iq":
            await self.dispatch_iq(stanza, IqScope.ACCOUNT, origin)
        elif kind == "message":
            await self.deliver_message_to_account(stanza, to)
        else:
            for s in self.sessions.of_account(to):
                if s.available:
                    s.send(stanza)

    async def deliver_message_to_account(self, stanza: Element, to: JID) -> None:
        """RFC 6121 §8.5.2: a message to a bare JID."""
        mtype = stanza_type(stanza)
        targets = [s for s in self.sessions.of_account(to) if s.available and s.priority >= 0]
        if mtype == "groupchat":
            await self.bounce(stanza, StanzaError("service-unavailable"))
            return
        if mtype == "error":
            return
        if targets:
            if mtype == "headline" or len(targets) == 1:
                for s in targets:
                    s.send(stanza)
            else:
                top = max(s.priority for s in targets)
                for s in targets:
                    if s.priority == top:
                        s.send(stanza)
            self.count("delivered_message")
            return
        if mtype == "headline":
            return
        for handler in self.undeliverable:
            try:
                if await handler(stanza):
                    return
            except StanzaError as err:  # e.g. the offline store is full
                await self.bounce(stanza, err)
                return
            except Exception as exc:  # e.g. the disk is full: the sender must know
                log.exception("storing an undeliverable message failed")
                await self.bounce(stanza, error_for(exc))
                return
        await self.bounce(stanza, StanzaError("service-unavailable"))

    async def _to_full(self, stanza: Element, to: JID, origin: Any) -> None:
        if not self._known(to.bare):
            await self._no_such_account(stanza, to)
            return
        if await self._run(Direction.INBOUND_FULL, stanza, origin):
            return
        session = self.sessions.get(to)
        kind = local_name(stanza)
        if session is not None:
            session.send(stanza)
            return
        if kind == "message":
            mtype = stanza_type(stanza)
            if mtype in ("normal", "chat"):
                await self.deliver_message_to_account(stanza, to.bare)
            elif mtype == "groupchat":
                await self.bounce(stanza, StanzaError("service-unavailable"))
        elif kind == "iq":
            await self.bounce(stanza, StanzaError("service-unavailable"))
        # presence to an unavailable resource is dropped (RFC 6121 §8.5.3.2.2)

    async def requeue_unacked(self, stanza: Element, session: Session) -> None:
        """A message a client never acknowledged before its session ended (XEP-0198 §5).

        Chat and normal messages with content go to the account again (another client, or the
        offline store); group chat is in the archive already; carbons were copies.
        """
        mtype = stanza_type(stanza)
        if mtype not in ("normal", "chat"):
            return
        if (
            stanza.find("{urn:xmpp:carbons:2}received") is not None
            or stanza.find("{urn:xmpp:carbons:2}sent") is not None
        ):
            return
        if stanza.find("{jabber:client}body") is None:
            return
        stanza.set("to", str(session.account))
        await self.deliver_message_to_account(stanza, session.account)

    # ------------------------------------------------------------------ iq
    async def dispatch_iq(self, iq: Element, scope: IqScope, origin: Any) -> None:
        itype = iq.get("type")
        if itype not in ("get", "set"):
            if itype not in ("result", "error"):
                await self.bounce(iq, StanzaError("bad-request"))
            return
        if len(iq) != 1:
            await self.bounce(iq, StanzaError("bad-request", "an iq needs exactly one child"))
            return
        payload = iq[0]
        handler = self.hooks.iq_handler(itype, payload.tag, scope)
        if handler is None:
            await self.bounce(iq, StanzaError("service-unavailable"))
            return
        try:
            result = await handler(iq, origin)
        except StanzaError as err:
            await self.bounce(iq, err)
            return
        except Exception as exc:
            log.exception("iq handler for %s failed", payload.tag)
            await self.bounce(iq, error_for(exc))
            return
        reply = iq_result(iq, result)
        if "from" not in reply.attrib:
            reply.set("from", str(JID("", self.domain, "")) if scope is IqScope.HOST else "")
            if not reply.get("from"):
                del reply.attrib["from"]
        await self.deliver_reply(reply, origin)

    async def deliver_reply(self, reply: Element, origin: Any) -> None:
        """Send a reply to a client directly when it came from one (works before routing)."""
        if isinstance(origin, Session) and reply.get("to") == str(origin.jid):
            origin.send(reply)
        else:
            await self.route(reply, None)

    async def bounce(self, stanza: Element, error: StanzaError) -> None:
        """Return an error to the sender, unless the stanza was itself an error or result."""
        t = stanza.get("type")
        if t == "error" or (t == "result" and local_name(stanza) == "iq"):
            return
        if "from" not in stanza.attrib:
            return
        if local_name(stanza) == "presence" and t in (None, "unavailable", "probe"):
            if t is not None:
                return
        self.count("errors")
        reply = error_reply(stanza, error)
        if "from" not in reply.attrib:
            reply.set("from", self.domain)
        sender = try_parse(stanza.get("from"))
        if sender is not None and sender.resource and sender.domain == self.domain:
            s = self.sessions.get(sender)
            if s is not None:
                s.send(reply)
                return
        await self.route(reply, None)
