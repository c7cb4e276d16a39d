"""The extension base class: one feature, its disco features, the hooks it registers."""

from __future__ import annotations

from minimix.core.hooks import Hooks
from minimix.protocol.xml import Element


class Extension:
    """A feature. Subclasses declare what they advertise and register their handlers.

    ``features`` are advertised in disco#info on the server's domain, ``account_features`` on
    every account's bare JID. Dependencies arrive through ``__init__`` (wired in ``app.py``).
    """

    name: str = ""
    features: tuple[str, ...] = ()
    account_features: tuple[str, ...] = ()
    identities: tuple[tuple[str, str, str], ...] = ()  # (category, type, name) on the domain
    account_identities: tuple[tuple[str, str, str], ...] = ()  # ... on every account

    def register(self, hooks: Hooks) -> None:
        """Attach handlers. Called once, before the server starts listening."""

    async def start(self) -> None:
        """Called after every extension registered, before clients connect."""

    async def stop(self) -> None:
        """Called on shutdown, before storage closes."""

    def stream_features(self, authenticated: bool, bound: bool) -> list[Element]:
        """Extra children for <stream:features> at this stage of negotiation."""
        return []
