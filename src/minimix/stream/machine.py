"""Sans-I/O XMPP stream (RFC 6120 §4; RFC 7395 framing for WebSocket).

Feed received bytes with :meth:`XmppStream.receive`; it returns events. Queue output with
:meth:`send` and friends, then take the bytes to write with :meth:`data_to_send`. The stream knows
nothing of sockets, TLS objects or passwords: negotiation decisions are the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass

from minimix.protocol import ns
from minimix.protocol.stanza import StreamError
from minimix.protocol.xml import Element, ParseError, StreamHeader, StreamParser, escape_attr
from minimix.protocol.xml import serialize as _serialize


@dataclass(slots=True)
class StreamOpened:
    """The peer opened (or re-opened) its stream."""

    to: str
    version: str
    lang: str
    content_ns: str


@dataclass(slots=True)
class ElementReceived:
    element: Element


@dataclass(slots=True)
class StreamClosed:
    """The peer closed its stream."""


@dataclass(slots=True)
class ProtocolViolation:
    """The peer broke the protocol; the stream has queued the stream error and closed."""

    condition: str
    text: str


StreamEvent = StreamOpened | ElementReceived | StreamClosed | ProtocolViolation


class XmppStream:
    """One side of a server stream (client-to-server, component, or WebSocket framed)."""

    def __init__(
        self,
        *,
        content_ns: str = ns.CLIENT,
        max_stanza_size: int = 262144,
        max_depth: int = 64,
        framed: bool = False,
    ) -> None:
        self.content_ns = content_ns
        self.framed = framed
        self._parser = StreamParser(max_stanza_size, max_depth, framed=framed)
        self._out: list[str] = []
        self._opened_out = False
        self.closed = False
        self.header_received = False

    # ------------------------------------------------------------------ input
    def receive(self, data: bytes) -> list[StreamEvent]:
        if self.closed:
            return []
        events: list[StreamEvent] = []
        try:
            for ev in self._parser.feed(data):
                if isinstance(ev, StreamHeader):
                    events.append(self._on_header(ev))
                    if self.closed:  # a bad header: nothing after it counts
                        break
                elif ev is None:
                    events.append(StreamClosed())
                else:
                    events.append(ElementReceived(ev))
        except ParseError as exc:
            events.append(self._violation(exc.condition, exc.text))
        except StreamError as exc:
            events.append(self._violation(exc.condition, exc.text or ""))
        return events

    def receive_frame(self, data: bytes) -> list[StreamEvent]:
        """WebSocket (RFC 7395): one frame holds exactly one element."""
        if self.closed:
            return []
        try:
            el = self._parser.feed_frame(data)
        except ParseError as exc:
            return [self._violation(exc.condition, exc.text)]
        if el.tag == f"{{{ns.FRAMING}}}open":
            return [self._on_header(StreamHeader(el.tag, dict(el.attrib)))]
        if el.tag == f"{{{ns.FRAMING}}}close":
            return [StreamClosed()]
        return [ElementReceived(el)]

    def _on_header(self, header: StreamHeader) -> StreamEvent:
        expected = f"{{{ns.FRAMING}}}open" if self.framed else f"{{{ns.STREAM}}}stream"
        if header.tag != expected:
            return self._violation("invalid-namespace", "unexpected stream root")
        content = header.attrs.get("xmlns", self.content_ns) if not self.framed else self.content_ns
        if content != self.content_ns:
            return self._violation("invalid-namespace", "unexpected content namespace")
        self.header_received = True
        return StreamOpened(
            to=header.attrs.get("to", ""),
            version=header.attrs.get("version", ""),
            lang=header.attrs.get("{" + ns.XML + "}lang", "en"),
            content_ns=content,
        )

    def _violation(self, condition: str, text: str) -> ProtocolViolation:
        self.close(StreamError(condition, text or None))
        return ProtocolViolation(condition, text)

    def release_parser(self) -> bool:
        """Free the XML parser of a stream that is between stanzas (an idle one); the next
        bytes received make a new one. False when it is in the middle of a stanza."""
        return self._parser.release()

    def reset(self) -> None:
        """Forget the peer's stream after STARTTLS or SASL success; expect a new header."""
        self._parser.reset()
        self._opened_out = False
        self.header_received = False

    # ------------------------------------------------------------------ output
    def open(self, stream_id: str, from_: str, features: Element | None, lang: str = "en") -> None:
        """Send our stream header (and features, when given)."""
        if self.framed:
            self._out.append(
                f'<open xmlns="{ns.FRAMING}" id="{escape_attr(stream_id)}" '
                f'from="{escape_attr(from_)}" version="1.0" xml:lang="{escape_attr(lang)}"/>'
            )
        else:
            self._out.append(
                "<?xml version='1.0'?>"
                f'<stream:stream xmlns="{self.content_ns}" xmlns:stream="{ns.STREAM}" '
                f'id="{escape_attr(stream_id)}" from="{escape_attr(from_)}" version="1.0" '
                f'xml:lang="{escape_attr(lang)}">'
            )
        self._opened_out = True
        if features is not None:
            self.send(features)

    def serialize(self, el: Element) -> str:
        if el.tag.startswith("{" + ns.STREAM + "}"):
            name = el.tag[len(ns.STREAM) + 2 :]
            decl = f' xmlns:stream="{ns.STREAM}"' if self.framed else ""
            inner = "".join(_serialize(c, ns.STREAM) for c in el)
            return f"<stream:{name}{decl}>{inner}</stream:{name}>"
        if self.framed:
            return _serialize(el, "")
        return _serialize(el, self.content_ns)

    def send(self, el: Element) -> None:
        if not self.closed:
            self._out.append(self.serialize(el))

    def send_text(self, text: str) -> None:
        """Queue already-serialized XML (the output of :meth:`serialize` on this kind of stream)."""
        if not self.closed:
            self._out.append(text)

    def close(self, error: StreamError | None = None) -> None:
        if self.closed:
            return
        if not self._opened_out:
            self.open("error", "", None)
        if error is not None:
            el = error.to_element()
            self._out.append(self.serialize(el))
        self._out.append(f'<close xmlns="{ns.FRAMING}"/>' if self.framed else "</stream:stream>")
        self.closed = True

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        out = "".join(self._out).encode()
        self._out.clear()
        return out

    def frames_to_send(self) -> list[str]:
        """WebSocket: each queued piece is one frame."""
        out = self._out
        self._out = []
        return out
