"""XEP-0077 In-Band Registration: account creation (when open), password change, removal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from minimix.core.extension import Extension
from minimix.core.hooks import Hooks, IqScope
from minimix.core.limits import WindowCounter
from minimix.core.session import Session
from minimix.protocol import ns
from minimix.protocol.jid import InvalidJID, prep_local
from minimix.protocol.stanza import StanzaError, StreamError
from minimix.protocol.xml import Element, SubElement, tag
from minimix.storage.stores import AccountStore
from minimix.stream.sasl import SaslFailure, prepare_password

log = logging.getLogger(__name__)
_QUERY = tag(ns.REGISTER, "query")


class Registration(Extension):
    def __init__(
        self,
        accounts: AccountStore,
        open_registration: bool,
        throttle_per_ip: int,
        on_account_deleted: Callable[[str], Awaitable[None]],
    ) -> None:
        self.accounts = accounts
        self.open = open_registration
        self.throttle = WindowCounter(throttle_per_ip, 3600)
        self.on_account_deleted = on_account_deleted
        self.features = (ns.REGISTER,)
        self._tasks: set[asyncio.Task[None]] = set()

    async def _removed(self, user: str, origin: Session) -> None:
        await self.on_account_deleted(user)
        origin.link.close(StreamError("not-authorized", "account removed"))

    def register(self, hooks: Hooks) -> None:
        if self.open:
            hooks.preauth_iq[_QUERY] = self.preauth
        hooks.on_iq("get", _QUERY, self.form, IqScope.ANY)
        hooks.on_iq("set", _QUERY, self.change, IqScope.ANY)

    def stream_features(self, authenticated: bool, bound: bool) -> list[Element]:
        if self.open and not authenticated:
            return [Element(tag(ns.REGISTER_FEATURE, "register"))]
        return []

    @staticmethod
    def _form(registered: str | None = None) -> Element:
        q = Element(_QUERY)
        if registered is not None:
            SubElement(q, tag(ns.REGISTER, "registered"))
            SubElement(q, tag(ns.REGISTER, "username")).text = registered
        else:
            SubElement(q, tag(ns.REGISTER, "instructions")).text = "Choose a username and password."
            SubElement(q, tag(ns.REGISTER, "username"))
        SubElement(q, tag(ns.REGISTER, "password"))
        return q

    @staticmethod
    def _fields(q: Element) -> tuple[str | None, str | None]:
        user = q.findtext(tag(ns.REGISTER, "username"))
        password = q.findtext(tag(ns.REGISTER, "password"))
        return user, password

    async def preauth(self, iq: Element, conn: Any) -> Element | None:
        q = iq[0]
        if iq.get("type") == "get":
            return self._form()
        user, password = self._fields(q)
        if not user or not password:
            raise StanzaError("not-acceptable", "username and password are required")
        try:
            user = prep_local(user)
            prepare_password(password)
        except (InvalidJID, SaslFailure):
            raise StanzaError("not-acceptable", "invalid username or password") from None
        ip = getattr(getattr(conn, "transport", None), "peer", "?")
        if self.throttle.exceeded(ip):
            raise StanzaError(
                "resource-constraint", "too many registrations; try later", error_type="wait"
            )
        if not self.accounts.create(user, password):
            raise StanzaError("conflict", "that username is taken")
        self.throttle.hit(ip)
        log.info("account %s registered in-band from %s", user, ip)
        return None

    async def form(self, iq: Element, origin: Any) -> Element | None:
        if isinstance(origin, Session):
            return self._form(origin.account.local)
        raise StanzaError("service-unavailable")

    async def change(self, iq: Element, origin: Any) -> Element | None:
        if not isinstance(origin, Session):
            raise StanzaError("service-unavailable")
        q = iq[0]
        user = origin.account.local
        if q.find(tag(ns.REGISTER, "remove")) is not None:
            self.accounts.delete(user, str(origin.account))
            log.info("account %s removed itself", user)
            # XEP-0077 §3.2: the result goes out first, then the account's streams close.
            task = asyncio.get_running_loop().create_task(self._removed(user, origin))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None
        name, password = self._fields(q)
        if not password or (name and name != user):
            raise StanzaError("bad-request", "give your own username and a new password")
        try:
            prepare_password(password)
        except SaslFailure:
            raise StanzaError("not-acceptable", "invalid password") from None
        self.accounts.set_password(user, password)
        log.info("account %s changed its password", user)
        return None
