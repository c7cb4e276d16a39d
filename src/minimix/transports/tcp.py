"""TCP transport with STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class TcpTransport(asyncio.Protocol):
    """Adapts an asyncio transport to the connection's :class:`Transport` protocol."""

    framed = False

    def __init__(
        self,
        make_connection: Callable[[TcpTransport], Any],
        tls_context: ssl.SSLContext | None,
        direct_tls: bool,
        end_point: bytes | None,
    ) -> None:
        self._make = make_connection
        self._ctx = tls_context
        self._direct = direct_tls
        self._end_point = end_point
        self._transport: asyncio.Transport | None = None
        self._tls = direct_tls
        self._paused = False
        self.peer = "?"
        self.conn: Any = None

    # asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        try:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.conn = self._make(self)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.data_received(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.conn is not None:
            self.conn.connection_lost()

    # Transport for the connection -----------------------------------------
    @property
    def is_tls(self) -> bool:
        return self._tls

    @property
    def can_starttls(self) -> bool:
        return self._ctx is not None and not self._tls

    def write(self, data: bytes) -> None:
        t = self._transport
        if t is not None and not t.is_closing():
            t.write(data)

    def write_frames(self, frames: list[str]) -> None:
        self.write("".join(frames).encode())

    async def start_tls(self) -> bool:
        t = self._transport
        if t is None or self._ctx is None:
            return False
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(
                t, self, self._ctx, server_side=True, ssl_handshake_timeout=30
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            if t is not None:
                t.abort()
            return False
        if new is None:
            return False
        self._transport = new
        self._tls = True
        return True

    def close(self) -> None:
        t = self._transport
        if t is not None:
            t.close()

    def buffered(self) -> int:
        t = self._transport
        return t.get_write_buffer_size() if t is not None else 0

    def pause_reading(self) -> None:
        t = self._transport
        if t is not None and not self._paused:
            self._paused = True
            try:
                t.pause_reading()
            except (RuntimeError, AttributeError):
                pass

    def resume_reading(self) -> None:
        t = self._transport
        if t is not None and self._paused:
            self._paused = False
            try:
                t.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    def tls_server_end_point(self) -> bytes | None:
        return self._end_point if self._tls else None
