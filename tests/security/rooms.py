"""Feature detection and group chat helpers for the security tests.

Tests that need a feature the server does not have yet are skipped with a reason naming it.
"""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET

from tests.security.hostile import CLIENT, Peer
from tests.support import Running

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
MUC_ADMIN_NS = "http://jabber.org/protocol/muc#admin"
MUC_OWNER_NS = "http://jabber.org/protocol/muc#owner"


def module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        return True


def muc_missing() -> bool:
    return module_missing("minimix.extensions.muc.service")


def archive_missing() -> bool:
    return module_missing("minimix.extensions.archive.user")


def account_join_missing() -> bool:
    return module_missing("minimix.extensions.account_join.extension") and module_missing(
        "minimix.extensions.account_join.service"
    )


def muc_service_of(running: Running) -> str:
    return running.server.config.muc.domain


async def join_room(peer: Peer, room: str, nick: str, timeout: float = 5.0) -> ET.Element:
    """Enter ``room`` directly (XEP-0045 §7.2); returns our own presence or the error."""
    occupant = f"{room}/{nick}"
    peer.send(f"<presence to='{occupant}'><x xmlns='{MUC_NS}'/></presence>")

    def mine(el: ET.Element) -> bool:
        if el.tag != f"{{{CLIENT}}}presence" or el.get("from") != occupant:
            return False
        if el.get("type") == "error":
            return True
        codes = {s.get("code") for s in el.iter(f"{{{MUC_USER_NS}}}status")}
        return "110" in codes

    return await peer.recv_until(mine, timeout)
