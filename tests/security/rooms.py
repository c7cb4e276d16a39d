"""Feature detection and group chat building blocks for the security tests.

Tests that need a feature the server does not have yet are skipped with a reason naming it.
"""

from __future__ import annotations

import functools
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.security.hostile import CLIENT, Peer
from tests.support import Running, base_config

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
MUC_ADMIN_NS = "http://jabber.org/protocol/muc#admin"
MUC_OWNER_NS = "http://jabber.org/protocol/muc#owner"


@functools.cache
def _probe() -> tuple[frozenset[tuple[str, str]], bool, bool]:
    """Build the server as the tests configure it (without listening) and note what it wires:
    the account-scope IQ handlers, and whether the group chat service and account-join exist."""
    from minimix.app import Server
    from minimix.config import from_dict
    from minimix.core.hooks import IqScope

    with tempfile.TemporaryDirectory() as d:
        server = Server(from_dict(base_config(Path(d)), "probe"))
        handled = frozenset(
            (t, tag) for (t, tag, scope) in server.hooks._iq if scope is IqScope.ACCOUNT
        )
        wired = (handled, server.muc is not None, server.account_join is not None)
        server.db.close()
    return wired


def iq_missing(iq_type: str, payload_tag: str) -> bool:
    """True when nothing handles ``<iq type=iq_type>`` with that payload for an account."""
    return (iq_type, payload_tag) not in _probe()[0]


def archive_missing() -> bool:
    return iq_missing("set", "{urn:xmpp:mam:2}query")


def private_missing() -> bool:
    return iq_missing("get", "{jabber:iq:private}query")


def pep_missing() -> bool:
    return iq_missing("get", "{http://jabber.org/protocol/pubsub}pubsub")


def muc_missing() -> bool:
    return not _probe()[1]


def account_join_missing() -> bool:
    return not _probe()[2]


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
