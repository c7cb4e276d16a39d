"""XMPP over WebSocket (RFC 7395) on aiohttp.

Every text frame holds exactly one element (``<open/>``, ``<close/>``, a stanza or a nonza). The
frames are fed to the same :class:`~minimix.core.c2s.ClientConnection` as the TCP transport, so
SASL, resource binding, stream management (resumption included) and every limit behave the same.

Differences from TCP, all required by RFC 7395:

* the WebSocket subprotocol ``xmpp`` is required; a handshake without it is refused with 400;
* there is no STARTTLS: TLS, when there is any, is the HTTP listener's;
* the per-frame size limit is the stanza limit (``[limits] max_stanza_size``); a larger frame is
  refused by the WebSocket layer with close code 1009 (message too big);
* frames are never compressed (no ``permessage-deflate``: compression under TLS leaks secrets).

Whether a WebSocket connection counts as encrypted (and so may authenticate) is decided by
:func:`connection_is_secure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from minimix.protocol.stanza import StreamError

log = logging.getLogger(__name__)

SUBPROTOCOL = "xmpp"
PATH = "/xmpp-websocket"


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def connection_is_secure(
    http_tls: bool, loopback_secure: bool, socket_peer: str, forwarded_proto: str | None
) -> bool:
    """Whether a WebSocket connection counts as encrypted.

    * The HTTP listener speaks TLS: encrypted.
    * Otherwise, a peer on the loopback interface counts as encrypted when ``[http]
      loopback_secure`` is on (the default): either the browser runs on this machine, or a reverse
      proxy on this machine terminated TLS. A proxy that says ``X-Forwarded-Proto: http`` forwards
      a plain-text connection, which does not count.
    * Anything else is plain text: with ``[c2s] require_encryption`` (the default) it is offered
      no authentication at all.
    """
    if http_tls:
        return True
    if not loopback_secure or not is_loopback(socket_peer):
        return False
    return forwarded_proto is None or forwarded_proto.strip().lower() in ("https", "wss")


def client_address(socket_peer: str, forwarded_for: str | None) -> str:
    """The address a request comes from, for limits and allow-lists.

    ``X-Forwarded-For`` is believed only from a loopback peer (a reverse proxy on this machine),
    and only its last entry: the address that proxy itself saw.
    """
    if forwarded_for and is_loopback(socket_peer):
        last = forwarded_for.split(",")[-1].strip()
        if last:
            with contextlib.suppress(ValueError):
                return str(ipaddress.ip_address(last))
    return socket_peer


def offered_subprotocols(header: str | None) -> list[str]:
    return [p.strip() for p in (header or "").split(",") if p.strip()]


@dataclass(frozen=True, slots=True)
class WebSocketPolicy:
    """What the HTTP listener's configuration says about WebSocket connections."""

    max_stanza_size: int
    http_tls: bool
    loopback_secure: bool = True
    heartbeat: float | None = 60.0


class WebSocketTransport:
    """Adapts one aiohttp WebSocket to the connection's ``Transport`` protocol.

    Frames the connection writes are queued and sent in order by one sender task; ``buffered()``
    counts what is queued plus what the socket has not taken yet, so the output-buffer limit
    disconnects a client that does not read, as on TCP.
    """

    framed = True

    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, peer: str, secure: bool
    ) -> None:
        self._ws = ws
        self._request = request
        self.peer = peer
        self._secure = secure
        self._queue: deque[str] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()
        self._closing = False
        self.conn: Any = None
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    # Transport for the connection -------------------------------------------
    @property
    def is_tls(self) -> bool:
        return self._secure

    @property
    def can_starttls(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.write_frames([data.decode()])

    def write_frames(self, frames: list[str]) -> None:
        if self._closing:
            return
        for frame in frames:
            self._queue.append(frame)
            self._queued += len(frame)
        self._wakeup.set()

    async def start_tls(self) -> bool:
        return False

    def close(self) -> None:
        """Send what is queued, then close the WebSocket."""
        self._closing = True
        self._readable.set()
        self._wakeup.set()

    def buffered(self) -> int:
        t = self._request.transport
        return self._queued + (t.get_write_buffer_size() if t is not None else 0)

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def tls_server_end_point(self) -> bytes | None:
        # TLS may end at a proxy: there is no channel this server could bind SCRAM to.
        return None

    # Running ----------------------------------------------------------------
    async def _send_loop(self) -> None:
        ws = self._ws
        try:
            while True:
                while self._queue:
                    frame = self._queue.popleft()
                    self._queued -= len(frame)
                    await ws.send_str(frame)
                if self._closing:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("WebSocket to %s: send failed (%s)", self.peer, exc)
        finally:
            self._closing = True
            self._queue.clear()
            self._queued = 0
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def run(self, conn: Any) -> None:
        """Feed every text frame to ``conn`` until the WebSocket closes."""
        self.conn = conn
        ws = self._ws
        try:
            while not self._closing:
                await self._readable.wait()
                if self._closing:
                    break
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    data = msg.data
                    conn.data_received(data.encode() if isinstance(data, str) else data)
                elif msg.type is WSMsgType.BINARY:
                    # RFC 7395 §3.2: XMPP frames are text frames.
                    conn.close(StreamError("bad-format", "XMPP frames are text frames"))
                elif msg.type is WSMsgType.ERROR:
                    self._failed(conn, ws.exception() or msg.data)
                    break
                else:  # CLOSE, CLOSING, CLOSED
                    break
        finally:
            self._closing = True
            self._wakeup.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), 5)
            if not self._sender.done():
                self._sender.cancel()
            conn.connection_lost()

    def _failed(self, conn: Any, exc: object) -> None:
        """The WebSocket layer refused input: end the stream as TCP would, or note a lost peer."""
        code = getattr(exc, "code", None)
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            conn.close(StreamError("policy-violation", "stanza too large"))
        elif isinstance(exc, WebSocketError):
            conn.close(StreamError("not-well-formed", "broken WebSocket frame"))
        else:  # a lost connection (heartbeat timeout, reset): resumable if the client asked
            log.info("WebSocket from %s failed: %s", self.peer, exc)


async def handle(
    request: web.Request,
    make_connection: Callable[[WebSocketTransport], Any],
    policy: WebSocketPolicy,
) -> web.StreamResponse:
    """The ``/xmpp-websocket`` endpoint: one XMPP stream per WebSocket."""
    if SUBPROTOCOL not in offered_subprotocols(request.headers.get("Sec-WebSocket-Protocol")):
        raise web.HTTPBadRequest(
            text="XMPP over WebSocket needs the 'xmpp' subprotocol (RFC 7395)\n"
        )
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        compress=False,
        max_msg_size=policy.max_stanza_size,
        heartbeat=policy.heartbeat,
    )
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text="expected a WebSocket handshake\n")
    await ws.prepare(request)
    socket_peer = request.remote or "?"
    secure = connection_is_secure(
        policy.http_tls,
        policy.loopback_secure,
        socket_peer,
        request.headers.get("X-Forwarded-Proto"),
    )
    peer = client_address(socket_peer, request.headers.get("X-Forwarded-For"))
    transport = WebSocketTransport(ws, request, peer, secure)
    conn = make_connection(transport)
    await transport.run(conn)
    return ws
