"""RFC 7622 JIDs, prepared with PRECIS (localpart, resourcepart) and IDNA2008 (domainpart).

Preparation is cached: the same string is prepared once. ``JID`` is immutable and hashable;
``jid.bare`` drops the resource. ``JID.parse`` raises :class:`InvalidJID` on bad input.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import NamedTuple

import idna
import precis_i18n

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX_PART = 1023


class InvalidJID(ValueError):
    """The string is not a valid JID (RFC 7622)."""


@lru_cache(maxsize=65536)
def prep_local(local: str) -> str:
    try:
        out: str = _USERNAME.enforce(local)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid localpart {local!r}") from exc
    if not out or len(out.encode()) > _MAX_PART or _LOCAL_FORBIDDEN.intersection(out):
        raise InvalidJID(f"invalid localpart {local!r}")
    return out


@lru_cache(maxsize=65536)
def prep_resource(resource: str) -> str:
    try:
        out: str = _OPAQUE.enforce(resource)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid resourcepart {resource!r}") from exc
    if not out or len(out.encode()) > _MAX_PART:
        raise InvalidJID(f"invalid resourcepart {resource!r}")
    return out


@lru_cache(maxsize=4096)
def prep_domain(domain: str) -> str:
    d = domain[:-1] if domain.endswith(".") else domain
    if not d or len(d.encode()) > _MAX_PART:
        raise InvalidJID(f"invalid domainpart {domain!r}")
    if d.startswith("[") and d.endswith("]"):
        try:  # RFC 7622 §3.2: an IPv6 literal in brackets
            return f"[{ipaddress.IPv6Address(d[1:-1]).compressed}]"
        except ValueError:
            raise InvalidJID(f"invalid IPv6 address {domain!r}") from None
    if d.isascii():
        low = d.lower()
        if all(c.isalnum() or c in "-." for c in low) and ".." not in low:
            labels = low.split(".")
            if all(0 < len(x) <= 63 and not x.startswith("-") for x in labels):
                if "xn--" not in low:
                    return low
                # RFC 7622 §3.2: A-labels compare as their U-labels.
                try:
                    return str(idna.decode(low))
                except idna.IDNAError as exc:
                    raise InvalidJID(f"invalid domainpart {domain!r}") from exc
        raise InvalidJID(f"invalid domainpart {domain!r}")
    try:
        ascii_form = idna.encode(d, uts46=True).decode("ascii")
        return str(idna.decode(ascii_form))
    except idna.IDNAError as exc:
        raise InvalidJID(f"invalid domainpart {domain!r}") from exc


class JID(NamedTuple):
    """An XMPP address. ``resource`` is empty for a bare JID, ``local`` for a domain JID."""

    local: str
    domain: str
    resource: str

    @staticmethod
    def parse(text: str) -> JID:
        return _parse(text)

    @staticmethod
    def make(local: str | None, domain: str, resource: str | None = None) -> JID:
        return JID(
            prep_local(local) if local else "",
            prep_domain(domain),
            prep_resource(resource) if resource else "",
        )

    @property
    def bare(self) -> JID:
        return JID(self.local, self.domain, "") if self.resource else self

    @property
    def is_bare(self) -> bool:
        return not self.resource

    @property
    def is_full(self) -> bool:
        return bool(self.resource)

    @property
    def is_domain(self) -> bool:
        return not self.local and not self.resource

    def with_resource(self, resource: str) -> JID:
        return JID(self.local, self.domain, prep_resource(resource))

    def __str__(self) -> str:
        return _format(self)

    def __repr__(self) -> str:
        return f"JID({_format(self)!r})"


@lru_cache(maxsize=131072)
def _format(jid: JID) -> str:
    out = f"{jid.local}@{jid.domain}" if jid.local else jid.domain
    return f"{out}/{jid.resource}" if jid.resource else out


@lru_cache(maxsize=131072)
def _parse(text: str) -> JID:
    if not text or len(text) > 3071:
        raise InvalidJID("empty or too long JID")
    slash = text.find("/")
    if slash >= 0:
        rest, resource = text[:slash], text[slash + 1 :]
        if not resource:
            raise InvalidJID("empty resourcepart")
    else:
        rest, resource = text, ""
    at = rest.find("@")
    if at >= 0:
        local, domain = rest[:at], rest[at + 1 :]
        if not local:
            raise InvalidJID("empty localpart")
    else:
        local, domain = "", rest
    return JID(
        prep_local(local) if local else "",
        prep_domain(domain),
        prep_resource(resource) if resource else "",
    )


def try_parse(text: str | None) -> JID | None:
    """Parse, returning None for a missing or invalid JID."""
    if text is None:
        return None
    try:
        return _parse(text)
    except InvalidJID:
        return None
