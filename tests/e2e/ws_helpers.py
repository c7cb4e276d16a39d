"""A raw RFC 7395 client on aiohttp, frame by frame, for the WebSocket transport's tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"


def open_frame(to: str = "localhost") -> str:
    return f'<open xmlns="{FRAMING}" to="{to}" version="1.0"/>'


class RawWebSocket:
    """Sends text frames and reads them back parsed, one element per frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[str] = []

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def recv(self, timeout: float = 5.0) -> ET.Element:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"expected a text frame, got {msg.type.name} {msg.data!r}")
        self.frames.append(msg.data)
        return ET.fromstring(msg.data)

    async def recv_until(self, tag: str, timeout: float = 5.0) -> ET.Element:
        while True:
            el = await self.recv(timeout)
            if el.tag == tag:
                return el

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Read until the WebSocket closes; return its close code."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return self.ws.close_code
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.frames.append(msg.data)

    async def open_stream(self, to: str = "localhost") -> tuple[ET.Element, ET.Element]:
        """Send ``<open/>``; return the server's ``<open/>`` and its ``<stream:features/>``."""
        await self.send(open_frame(to))
        opened = await self.recv()
        features = await self.recv()
        return opened, features

    async def login(self, user: str, password: str = "secret", resource: str = "raw") -> str:
        """PLAIN over the (loopback, so encrypted) WebSocket, then bind; returns the full JID."""
        await self.open_stream()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f'<auth xmlns="{SASL}" mechanism="PLAIN">{token}</auth>')
        result = await self.recv()
        if result.tag != f"{{{SASL}}}success":
            raise PermissionError(ET.tostring(result).decode())
        await self.open_stream()
        await self.send(
            f'<iq xmlns="jabber:client" type="set" id="bind1"><bind xmlns="{BIND}">'
            f"<resource>{resource}</resource></bind></iq>"
        )
        bound = await self.recv()
        jid = bound.find(f"{{{BIND}}}bind/{{{BIND}}}jid")
        assert jid is not None and jid.text, ET.tostring(bound)
        return jid.text


def stream_error_condition(el: ET.Element) -> str | None:
    if el.tag != f"{{{STREAMS}}}error":
        return None
    for child in el:
        if child.tag.startswith(f"{{{STREAM_ERRORS}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return None


@contextlib.asynccontextmanager
async def websocket(
    port: int, protocols: tuple[str, ...] = ("xmpp",), headers: dict[str, str] | None = None
) -> AsyncIterator[RawWebSocket]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"http://127.0.0.1:{port}/xmpp-websocket",
            protocols=protocols,
            headers=headers,
            max_msg_size=0,
            compress=0,
        ) as ws,
    ):
        yield RawWebSocket(ws)


async def http_get(port: int, path: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", **kwargs) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()
