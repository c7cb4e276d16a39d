"""Connection-method discovery (XEP-0156): ``/.well-known/host-meta`` and ``host-meta.json``."""

from __future__ import annotations

import json
from xml.sax.saxutils import quoteattr

WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"
XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"


def websocket_url(secure: bool, host: str, path: str) -> str:
    return f"{'wss' if secure else 'ws'}://{host}{path}"


def xrd(url: str) -> str:
    """The XML (XRD) form, the one most web clients read."""
    return (
        "<?xml version='1.0' encoding='utf-8'?>\n"
        f"<XRD xmlns='{XRD_NS}'>\n"
        f"  <Link rel='{WEBSOCKET_REL}' href={quoteattr(url)}/>\n"
        "</XRD>\n"
    )


def jrd(url: str) -> str:
    """The JSON (JRD) form, RFC 6415 appendix A."""
    return json.dumps({"links": [{"rel": WEBSOCKET_REL, "href": url}]}, indent=2) + "\n"
