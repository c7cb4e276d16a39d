"""The HTTP side of minimix: XMPP over WebSocket, discovery, the web client, metrics, status."""

from minimix.web.server import WebServer

__all__ = ["WebServer"]
