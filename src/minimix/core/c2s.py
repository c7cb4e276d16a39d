"""Client connections (RFC 6120): negotiation, stanza intake, stream management (XEP-0198).

A :class:`ClientConnection` drives one :class:`~minimix.stream.machine.XmppStream` over one
:class:`Transport` (TCP, TLS or WebSocket). It asks the :class:`ClientServices` to check
credentials and bind; stanzas from a bound client go to the router with ``from`` stamped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from minimix.core.limits import TokenBucket, WindowCounter
from minimix.core.router import error_for
from minimix.core.session import Session, SessionRegistry
from minimix.protocol import ns
from minimix.protocol.jid import JID, InvalidJID, prep_local, prep_resource, try_parse
from minimix.protocol.stanza import (
    STANZA_TAGS,
    StanzaError,
    StreamError,
    error_reply,
    iq_result,
)
from minimix.protocol.xml import Element, ParseError, SubElement, local_name, parse_element, tag
from minimix.stream import sasl
from minimix.stream.machine import (
    ElementReceived,
    ProtocolViolation,
    StreamClosed,
    StreamOpened,
    XmppStream,
)

if TYPE_CHECKING:
    from minimix.config import LimitsConfig
    from minimix.core.hooks import Hooks
    from minimix.core.router import Router
    from minimix.storage.stores import AccountStore

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What a connection needs from the bytes below it."""

    framed: bool
    peer: str  # remote IP address

    @property
    def is_tls(self) -> bool: ...

    @property
    def can_starttls(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def write_frames(self, frames: list[str]) -> None: ...

    async def start_tls(self) -> bool: ...

    def close(self) -> None: ...

    def buffered(self) -> int: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def tls_server_end_point(self) -> bytes | None: ...


# A connection that received nothing for this long (seconds; up to twice as long) frees its
# XML parser, about a quarter of what an idle client costs; its next input makes a new one.
_QUIET = 0.5


class QuietConnections:
    """Finds the connections that received nothing for a while, in one batch per interval:
    all a connection that receives something pays is one set insertion."""

    __slots__ = ("before", "heard", "timer")

    def __init__(self) -> None:
        self.heard: set[ClientConnection] = set()  # received something in this interval
        self.before: set[ClientConnection] = set()  # ... in the one before
        self.timer: asyncio.TimerHandle | None = None

    def note(self, conn: ClientConnection) -> None:
        self.heard.add(conn)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(_QUIET, self._sweep)

    def forget(self, conn: ClientConnection) -> None:
        self.heard.discard(conn)
        self.before.discard(conn)

    def _sweep(self) -> None:
        quiet = self.before - self.heard
        self.before, self.heard = self.heard, set()
        for conn in quiet:
            conn.quiet()
        self.timer = (
            asyncio.get_running_loop().call_later(_QUIET, self._sweep) if self.before else None
        )


# The server's load is sampled this often (seconds) while it writes to clients; above this share
# of a core it counts as busy, below the idle share it stops sampling until it writes again.
_LOAD_INTERVAL = 0.05
_BUSY_SHARE = 0.5
_IDLE_SHARE = 0.01
# A quiet server writes as soon as this many connections have something to write.
_EARLY_WRITES = 16


class Output:
    """When client connections write what they were sent.

    Each connection writes once per loop turn: everything it was sent in the turn goes out in
    one TLS record and one system call, which is what keeps the cost per delivery low under
    load. While the server is quiet (its thread used less than half a core in the last
    interval), a fan-out does not wait for the end of the turn: every ``_EARLY_WRITES``
    connections with something to write are written at once, so the first clients are reading
    while the others are still being served."""

    __slots__ = ("_cpu", "_scheduled", "_timer", "_wall", "busy", "pending")

    def __init__(self) -> None:
        self.busy = False
        self.pending: list[ClientConnection] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._cpu = 0.0
        self._wall = 0.0

    def queue(self, conn: ClientConnection) -> None:
        """``conn`` has output: write it at the end of this turn, or sooner (see above)."""
        pending = self.pending
        pending.append(conn)
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_soon(self._end_of_turn)
            if self._timer is None:
                self._cpu, self._wall = time.thread_time(), loop.time()
                self._timer = loop.call_later(_LOAD_INTERVAL, self._sample)
        elif len(pending) >= _EARLY_WRITES and not self.busy:
            self.pending = []
            for c in pending:
                c._write_early()

    def _end_of_turn(self) -> None:
        self._scheduled = False
        pending, self.pending = self.pending, []
        for conn in pending:
            conn._flush_queued()

    def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        cpu, wall = time.thread_time(), loop.time()
        share = (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        self.busy = share > _BUSY_SHARE
        if share < _IDLE_SHARE:
            self._timer = None  # idle: the next write starts sampling again
        else:
            self._timer = loop.call_later(_LOAD_INTERVAL, self._sample)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass
class ClientServices:
    """Everything shared by all client connections, wired in app.py."""

    domain: str
    router: Router
    hooks: Hooks
    sessions: SessionRegistry
    accounts: AccountStore
    limits: LimitsConfig
    require_encryption: bool = True
    connections: set[ClientConnection] = field(default_factory=set)
    unauthenticated: dict[str, int] = field(default_factory=dict)
    auth_failures_ip: WindowCounter = field(default_factory=lambda: WindowCounter(10, 60))
    auth_failures_account: WindowCounter = field(default_factory=lambda: WindowCounter(20, 60))
    hibernating: dict[str, SmState] = field(default_factory=dict)
    on_session_started: list[Callable[[Session], Awaitable[None]]] = field(default_factory=list)
    on_session_ended: list[Callable[[Session], Awaitable[None]]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    quiet: QuietConnections = field(default_factory=QuietConnections)
    output: Output = field(default_factory=Output)

    def count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1


class SmState:
    """XEP-0198 state that survives a dropped connection until resumption or timeout."""

    __slots__ = ("h_in", "h_out", "id", "queue", "queued_bytes", "resumable", "session", "timer")

    def __init__(self, session: Session, resumable: bool) -> None:
        self.id = os.urandom(12).hex()
        self.session = session
        self.resumable = resumable
        self.h_in = 0
        self.h_out = 0
        self.queue: deque[str] = deque()  # sent, not yet acknowledged (oldest first)
        self.queued_bytes = 0
        self.timer: asyncio.TimerHandle | None = None

    def acknowledge(self, h: int) -> bool:
        """Drop what the peer acknowledged; False when ``h`` is impossible."""
        acked = (h - (self.h_out - len(self.queue))) % (1 << 32)
        if acked > len(self.queue):
            return False
        for _ in range(acked):
            self.queued_bytes -= len(self.queue.popleft())
        return True


_FEATURE_BIND = tag(ns.BIND, "bind")
# One connection's input is handled for at most this long before others get a turn (seconds).
_TURN = 0.005
# A client holding output unread this long (seconds) while its input waits is disconnected.
_STALL_TIMEOUT = 60.0
_SESSION_REQUEST = tag(ns.SESSION, "session")
# services.counters keys for stanzas written to clients, by kind (read by /metrics).
_OUT_COUNTERS = {t: "out_" + t.rpartition("}")[2] for t in STANZA_TAGS}


class ClientConnection:
    """One client stream, from the first byte to the close."""

    def __init__(self, services: ClientServices, transport: Transport) -> None:
        self.services = services
        self.transport = transport
        self.framed = transport.framed
        limits = services.limits
        self.stream = XmppStream(
            max_stanza_size=limits.max_stanza_size,
            max_depth=limits.max_depth,
            framed=transport.framed,
        )
        self.stream_id = ""
        self.authenticated: JID | None = None  # the account, once SASL succeeded
        self.session: Session | None = None
        self.sm: SmState | None = None
        self._scram: sasl.ScramServer | None = None
        self._pending_user = ""
        # Events waiting to be handled: a list, as it holds a few at most (an empty deque
        # costs ten times the memory, and every idle connection has one).
        self._inbox: list[Any] = []
        self._worker: asyncio.Task[None] | None = None
        self._rate = TokenBucket(limits.rate, limits.burst)
        self._ack_requested = False
        self._closed = False
        self._clean_close = False
        self._counted_unauth = True
        self._throttled = False  # reading paused until the inbound rate debt is paid
        self._unread = False  # input held back until the client reads what it was sent
        self._unflushed = 0  # characters queued on the stream, not yet given to the transport
        self._auth_timer: asyncio.TimerHandle | None = None
        self._flush_pending = False  # stanzas queued this loop turn, written at its end
        self._loop = asyncio.get_running_loop()
        services.connections.add(self)
        ip = transport.peer
        services.unauthenticated[ip] = services.unauthenticated.get(ip, 0) + 1
        if services.unauthenticated[ip] > limits.unauthenticated_per_ip:
            log.warning("too many unauthenticated connections from %s", ip)
            self.close(StreamError("policy-violation", "too many connections from your address"))
            return
        loop = asyncio.get_running_loop()
        self._auth_timer = loop.call_later(limits.unauthenticated_timeout, self._auth_timeout)

    # ------------------------------------------------------------------ Link (for Session)
    def write_element(self, el: Element) -> None:
        self.write_text(self.stream.serialize(el), el)

    def write_text(self, text: str, el: Element | None) -> None:
        sm = self.sm
        if sm is not None and el is not None and el.tag in STANZA_TAGS:
            if not self._keep_unacknowledged(sm, (text,), len(text)):
                return
        if self._closed:
            return
        if el is not None and el.tag in _OUT_COUNTERS:
            self.services.count(_OUT_COUNTERS[el.tag])
        self.stream.send_text(text)
        self._unflushed += len(text)
        self._flush_at_end_of_turn()

    def _keep_unacknowledged(self, sm: SmState, texts: Sequence[str], size: int) -> bool:
        """XEP-0198: count stanzas sent and keep them until acknowledged, asking for an ack
        once per loop turn; False when that is more than the limits allow (the session ends)."""
        sm.h_out = (sm.h_out + len(texts)) % (1 << 32)
        sm.queue.extend(texts)
        sm.queued_bytes += size
        limits = self.services.limits
        if len(sm.queue) > limits.sm_max_queue or sm.queued_bytes > limits.max_output_buffer:
            self._unacknowledged_overflow(sm)
            return False
        if not self._ack_requested:
            self._ack_requested = True
            self._loop.call_soon(self._request_ack)
        return True

    def _flush_at_end_of_turn(self) -> None:
        # Written once the work of this loop turn is done (or sooner on a quiet server): a
        # client that receives several stanzas in one turn (a busy room) gets them in one TLS
        # record and one system call.
        if not self._flush_pending:
            self._flush_pending = True
            self.services.output.queue(self)

    def _write_early(self) -> None:
        """Written before the end of the turn (see :class:`Output`); the checks that may end
        the connection wait for the end of the turn, so whoever is sending carries on safely."""
        if self._closed:
            self._flush_pending = False
            return
        self._write_out()
        if self.transport.buffered() > self.services.limits.max_output_buffer:
            self.services.output.pending.append(self)  # checked at the end of the turn
        else:
            self._flush_pending = False

    def write_texts(self, texts: Sequence[str], kind: str) -> None:
        """Several serialized stanzas of one ``kind`` (their tag), in order, queued at once:
        :meth:`write_text` for each, but each counted once for XEP-0198 in one step."""
        if not texts:
            return
        sm = self.sm
        if sm is not None and kind in STANZA_TAGS:
            if not self._keep_unacknowledged(sm, texts, sum(map(len, texts))):
                return
        if self._closed:
            return
        counter = _OUT_COUNTERS.get(kind)
        if counter is not None:
            counters = self.services.counters
            counters[counter] = counters.get(counter, 0) + len(texts)
        stream = self.stream
        if self.framed:
            for text in texts:  # one WebSocket message each
                stream.send_text(text)
                self._unflushed += len(text)
        else:
            text = "".join(texts)
            stream.send_text(text)
            self._unflushed += len(text)
        self._flush_at_end_of_turn()

    def _flush_queued(self) -> None:
        self._flush_pending = False
        if not self._closed:
            self._flush()

    def _request_ack(self) -> None:
        if not self._closed and self.sm is not None:
            self.stream.send_text(f'<r xmlns="{ns.SM}"/>')
            self._flush()

    def _unacknowledged_overflow(self, sm: SmState) -> None:
        """Too much sent and not acknowledged (XEP-0198): end the session; what it never
        acknowledged goes back to the account (another client or the offline store)."""
        if not self._closed:
            self.close(StreamError("resource-constraint", "too many unacknowledged stanzas"))
        elif self.services.hibernating.pop(sm.id, None) is sm:
            log.info("%s: queue full while hibernating; ending the session", sm.session.jid)
            if sm.timer is not None:
                sm.timer.cancel()
                sm.timer = None
            asyncio.get_running_loop().create_task(self._end(sm.session))

    def _write_out(self) -> None:
        self._unflushed = 0
        if self.framed:
            frames = self.stream.frames_to_send()
            if frames:
                self.transport.write_frames(frames)
        else:
            data = self.stream.data_to_send()
            if data:
                self.transport.write(data)

    def _flush(self) -> None:
        self._write_out()
        if self.transport.buffered() > self.services.limits.max_output_buffer and not self._closed:
            # A peer that does not read: stop queueing for it, say why (it will read that last,
            # if ever), and drop it. Unacknowledged stanzas go back to the account.
            log.warning("%s does not read its stream; disconnecting", self.describe())
            self._clean_close = True
            self.stream.close(StreamError("resource-constraint", "you do not read your stream"))
            self._write_out()
            self.transport.close()
            self.connection_lost()

    def close(self, error: StreamError | None = None) -> None:
        if self._closed:
            return
        if error is not None:
            log.info("closing %s: %s", self.describe(), error)
        self._clean_close = True
        self.stream.close(error)
        self._flush()
        self.transport.close()
        self.connection_lost()

    def describe(self) -> str:
        return str(self.session.jid) if self.session else f"connection from {self.transport.peer}"

    # ------------------------------------------------------------------ input
    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.services.quiet.note(self)
        if self.framed:
            events = self.stream.receive_frame(data)
        else:
            events = self.stream.receive(data)
        if events:
            self._inbox.extend(events)
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._work())
        wait = self._rate.take(len(data))
        if wait > 0 and not self._closed:
            self._throttled = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(wait, self._throttle_over)
        elif len(self._inbox) > 256:
            self.transport.pause_reading()

    def quiet(self) -> None:
        """Nothing received for a while: let go of what only input needs."""
        if not self._closed:
            self.stream.release_parser()

    def _throttle_over(self) -> None:
        self._throttled = False
        self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again, unless the rate limit, a long backlog of input, or a backlog of output
        the client has not read holds reading back."""
        if not self._closed and not self._throttled and not self._unread:
            if len(self._inbox) <= 64:
                self.transport.resume_reading()

    async def _wait_for_reader(self) -> None:
        """The client does not read what it was sent: handle none of its input (a request can
        cost far more to answer than to send) until it has read most of it. A client that
        reads nothing for ``_STALL_TIMEOUT`` seconds is disconnected."""
        limit = self.services.limits.max_output_buffer
        self._unread = True
        self.transport.pause_reading()
        self._flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STALL_TIMEOUT
        try:
            while not self._closed and self.transport.buffered() > limit // 8:
                if loop.time() > deadline:
                    log.warning("%s has not read its stream; disconnecting", self.describe())
                    self.close(StreamError("resource-constraint", "you do not read your stream"))
                    return
                await asyncio.sleep(0.05)
        finally:
            self._unread = False

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        turn = loop.time()
        try:
            while self._inbox:
                backlog = self.transport.buffered() + self._unflushed
                if backlog > self.services.limits.max_output_buffer // 4:
                    await self._wait_for_reader()
                    if self._closed:
                        self._inbox.clear()
                        break
                if loop.time() - turn > _TURN:
                    await asyncio.sleep(0)  # other connections get their turn
                    turn = loop.time()
                    if self._closed:
                        self._inbox.clear()
                        break
                ev = self._inbox.pop(0)
                try:
                    await self._handle(ev)
                except Exception as exc:
                    log.exception("error while handling input from %s", self.describe())
                    if isinstance(ev, ElementReceived) and ev.element.tag in STANZA_TAGS:
                        self._reply_error(ev.element, error_for(exc))
                if self._closed:
                    self._inbox.clear()
                    break
                if len(self._inbox) == 64:
                    self._resume_reading()
        finally:
            self._worker = None
            self._resume_reading()

    async def _handle(self, ev: Any) -> None:
        if isinstance(ev, ElementReceived):
            el = ev.element
            if self.session is not None and el.tag in STANZA_TAGS:
                await self._stanza(el)
            else:
                await self._negotiate(el)
        elif isinstance(ev, StreamOpened):
            self._opened(ev)
        elif isinstance(ev, StreamClosed):
            self.close()
        elif isinstance(ev, ProtocolViolation):
            log.info("%s: stream error %s (%s)", self.describe(), ev.condition, ev.text)
            self._clean_close = True
            self._flush()
            self.transport.close()
            self.connection_lost()

    # ------------------------------------------------------------------ negotiation
    def _opened(self, ev: StreamOpened) -> None:
        domain = self.services.domain
        to = try_parse(ev.to) if ev.to else None
        self.stream_id = os.urandom(8).hex()
        if to is None or to.domain != domain or not to.is_domain:
            self.stream.open(self.stream_id, domain, None)
            self.close(StreamError("host-unknown", f"this server serves {domain}"))
            return
        if not ev.version.startswith("1."):
            self.stream.open(self.stream_id, domain, None)
            self.close(StreamError("unsupported-version"))
            return
        self.stream.open(self.stream_id, domain, self._features())
        self._flush()

    def _features(self) -> Element:
        feats = Element(tag(ns.STREAM, "features"))
        s = self.services
        if self.authenticated is None:
            tls_needed = s.require_encryption and not self.transport.is_tls
            if self.transport.can_starttls and not self.transport.is_tls:
                st = SubElement(feats, tag(ns.TLS, "starttls"))
                if tls_needed:
                    SubElement(st, tag(ns.TLS, "required"))
            if not tls_needed:
                mechs = ["SCRAM-SHA-256", "SCRAM-SHA-1"]
                if self.transport.tls_server_end_point() is not None:
                    mechs = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", *mechs]
                if self.transport.is_tls:
                    mechs.append("PLAIN")
                feats.append(sasl.mechanisms_element(mechs))
                if self.transport.tls_server_end_point() is not None:
                    cb = SubElement(feats, "{urn:xmpp:sasl-cb:0}sasl-channel-binding")
                    SubElement(
                        cb, "{urn:xmpp:sasl-cb:0}channel-binding", {"type": "tls-server-end-point"}
                    )
            for ext in s.hooks.stream_feature_providers:
                feats.extend(ext(False, False))
        else:
            SubElement(feats, _FEATURE_BIND)
            sess = SubElement(feats, tag(ns.SESSION, "session"))
            SubElement(sess, tag(ns.SESSION, "optional"))
            SubElement(feats, tag(ns.SM, "sm"))
            for ext in s.hooks.stream_feature_providers:
                feats.extend(ext(True, False))
        return feats

    async def _negotiate(self, el: Element) -> None:
        t = el.tag
        if t == f"{{{ns.TLS}}}starttls":
            await self._starttls()
        elif t.startswith(f"{{{ns.SASL}}}"):
            await self._sasl(el)
        elif t.startswith(f"{{{ns.SM}}}"):
            await self._stream_management(el)
        elif t == "{jabber:client}iq" and self.authenticated is not None and self.session is None:
            await self._bind(el)
        elif t == "{jabber:client}iq" and self.authenticated is None:
            await self._preauth_iq(el)
        elif self.session is not None:
            handler = self.services.hooks.nonza_handlers.get(t)
            if handler is not None:
                await handler(el, self.session)
            else:
                self.close(StreamError("unsupported-stanza-type"))
        elif t in STANZA_TAGS:
            self.close(StreamError("not-authorized", "authenticate first"))
        else:
            self.close(StreamError("unsupported-stanza-type"))

    async def _starttls(self) -> None:
        if self.transport.is_tls or not self.transport.can_starttls:
            self.close(StreamError("policy-violation", "TLS is already in place"))
            return
        self.stream.send_text(f'<proceed xmlns="{ns.TLS}"/>')
        self._flush()
        self.stream.reset()
        if not await self.transport.start_tls():
            self.connection_lost()

    def _auth_needs_tls(self) -> bool:
        return self.services.require_encryption and not self.transport.is_tls

    async def _sasl(self, el: Element) -> None:
        name = local_name(el)
        s = self.services
        if self.authenticated is not None or self._auth_needs_tls():
            self.close(StreamError("policy-violation", "SASL not allowed now"))
            return
        ip = self.transport.peer
        try:
            if name == "auth":
                if s.auth_failures_ip.exceeded(ip):
                    raise sasl.SaslFailure("temporary-auth-failure", "too many failures; wait")
                mech = el.get("mechanism", "")
                data = sasl.decode_payload(el.text)
                if mech == "PLAIN":
                    if not self.transport.is_tls:
                        raise sasl.SaslFailure("encryption-required")
                    await self._plain(data)
                elif mech in sasl.SCRAM_MECHANISMS:
                    binding = self.transport.tls_server_end_point()
                    if mech.endswith("-PLUS") and binding is None:
                        raise sasl.SaslFailure("invalid-mechanism")
                    gs2 = data[:2]
                    if not mech.endswith("-PLUS") and gs2 == b"y," and binding is not None:
                        raise sasl.SaslFailure("not-authorized", "channel binding downgrade")
                    user = self._username(sasl.scram_username(data))
                    self._pending_user = user
                    if s.auth_failures_account.exceeded(user):
                        raise sasl.SaslFailure("temporary-auth-failure", "too many failures; wait")
                    creds = s.accounts.credentials(user, "SHA-256" if "256" in mech else "SHA-1")
                    cb = ("tls-server-end-point", binding) if binding is not None else None
                    self._scram = sasl.ScramServer(mech, creds, cb, user)
                    out = self._scram.first(data)
                    self.stream.send(sasl.challenge(out))
                    self._flush()
                else:
                    raise sasl.SaslFailure("invalid-mechanism")
            elif name == "response":
                if self._scram is None:
                    raise sasl.SaslFailure("malformed-request")
                scram, self._scram = self._scram, None
                final = scram.final(sasl.decode_payload(el.text))
                self._success(self._pending_user, final)
            elif name == "abort":
                self._scram = None
                raise sasl.SaslFailure("aborted")
            else:
                raise sasl.SaslFailure("malformed-request")
        except sasl.SaslFailure as fail:
            self._scram = None
            if fail.condition in ("not-authorized", "temporary-auth-failure"):
                s.auth_failures_ip.hit(ip)
                user = self._pending_user
                if user:
                    s.auth_failures_account.hit(user)
                log.info("authentication failed from %s (%s)", ip, fail.condition)
            self.stream.send(sasl.failure(fail.condition, fail.text))
            self._flush()

    def _username(self, authcid: str) -> str:
        try:
            return prep_local(authcid)
        except InvalidJID:
            raise sasl.SaslFailure("not-authorized") from None

    async def _plain(self, data: bytes) -> None:
        authzid, authcid, password = sasl.parse_plain(data)
        user = self._username(authcid)
        self._pending_user = user
        s = self.services
        if s.auth_failures_account.exceeded(user):
            raise sasl.SaslFailure("temporary-auth-failure", "too many failures; wait")
        if authzid and authzid not in (user, f"{user}@{s.domain}"):
            raise sasl.SaslFailure("invalid-authzid")
        creds = s.accounts.credentials(user, "SHA-256")
        # An unknown user is checked against stable fake keys: same work, same answer.
        check = creds if creds is not None else sasl.fake_credentials(user, "SHA-256")
        ok = await asyncio.get_running_loop().run_in_executor(
            None, sasl.check_password, password, check, "SHA-256"
        )
        if not ok or creds is None:
            raise sasl.SaslFailure("not-authorized")
        self._success(user, b"")

    def _success(self, user: str, data: bytes) -> None:
        self.authenticated = JID(user, self.services.domain, "")
        self.services.auth_failures_account.clear(user)
        self.stream.send(sasl.success(data))
        self._flush()
        self.stream.reset()
        log.info("%s authenticated from %s", self.authenticated, self.transport.peer)

    async def _preauth_iq(self, iq: Element) -> None:
        payload = iq[0] if len(iq) == 1 else None
        handler = self.services.hooks.preauth_iq.get(payload.tag) if payload is not None else None
        if handler is None or self._auth_needs_tls():
            if payload is not None and payload.tag == f"{{{ns.REGISTER}}}query":
                # XEP-0077 §3.1: registration is not offered (or needs TLS first).
                self._reply_error(iq, StanzaError("service-unavailable"))
            else:
                self.close(StreamError("not-authorized", "authenticate first"))
            return
        try:
            result = await handler(iq, self)
        except StanzaError as err:
            self._reply_error(iq, err)
            return
        reply = iq_result(iq, result)
        self.stream.send(reply)
        self._flush()

    async def _bind(self, iq: Element) -> None:
        payload = iq[0] if len(iq) == 1 else None
        if payload is not None and payload.tag == tag(ns.SESSION, "session"):
            self.stream.send(iq_result(iq))
            self._flush()
            return
        if payload is None or payload.tag != _FEATURE_BIND or iq.get("type") != "set":
            self._reply_error(iq, StanzaError("not-authorized", "bind a resource first"))
            return
        account = self.authenticated
        assert account is not None
        s = self.services
        res_el = payload.find(tag(ns.BIND, "resource"))
        requested = (res_el.text or "").strip() if res_el is not None else ""
        try:
            resource = prep_resource(requested) if requested else ""
        except InvalidJID:
            self._reply_error(iq, StanzaError("bad-request", "invalid resource"))
            return
        if not resource:
            resource = os.urandom(6).hex()
        existing = s.sessions.of_account(account)
        if len(existing) >= s.limits.resources_per_account and not any(
            x.jid.resource == resource for x in existing
        ):
            self._reply_error(iq, StanzaError("resource-constraint", "too many resources"))
            return
        full = account.with_resource(resource)
        old = s.sessions.get(full)
        if old is not None:
            # RFC 6120 §7.7.2.2: the new session takes over; the old one is told why.
            old.link.close(StreamError("conflict", "replaced by a new connection"))
            if s.sessions.get(full) is old:
                await self.services_end_session(old)
        session = Session(full, self, self.stream_id)
        self.session = session
        s.sessions.add(session)
        self._left_unauthenticated()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        result = Element(_FEATURE_BIND)
        SubElement(result, tag(ns.BIND, "jid")).text = str(full)
        self.stream.send(iq_result(iq, result))
        self._flush()
        log.info("%s bound", full)
        s.count("sessions_started")
        for cb in s.on_session_started:
            await cb(session)

    async def services_end_session(self, session: Session) -> None:
        s = self.services
        if session.closed:
            return
        session.closed = True
        s.sessions.remove(session)
        log.info("%s session ended", session.jid)
        for cb in s.on_session_ended:
            try:
                await cb(session)
            except Exception:
                log.exception("session end handler failed")

    def _left_unauthenticated(self) -> None:
        if self._counted_unauth:
            self._counted_unauth = False
            ip = self.transport.peer
            n = self.services.unauthenticated.get(ip, 1) - 1
            if n <= 0:
                self.services.unauthenticated.pop(ip, None)
            else:
                self.services.unauthenticated[ip] = n

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if self.session is None and not self._closed:
            self.close(StreamError("connection-timeout", "authenticate sooner"))

    # ------------------------------------------------------------------ stanzas
    async def _stanza(self, el: Element) -> None:
        session = self.session
        assert session is not None
        if self.sm is not None:
            self.sm.h_in = (self.sm.h_in + 1) % (1 << 32)
        frm = el.get("from")
        if frm is not None and frm != str(session.jid):
            j = try_parse(frm)
            if j is None or (j != session.jid and j != session.account):
                self.close(StreamError("invalid-from", "you may only send as yourself"))
                return
        el.set("from", str(session.jid))
        to = el.get("to")
        if to is not None:
            to_jid = try_parse(to)
            if to_jid is None:
                self._reply_error(el, StanzaError("jid-malformed"))
                return
            to = str(to_jid)
            el.set("to", to)  # prepared once here: features compare addresses as strings
        if (
            len(el) == 1
            and el[0].tag == _SESSION_REQUEST
            and el.tag == "{jabber:client}iq"
            and to in (None, self.services.domain)
        ):
            # RFC 3921 session establishment, still sent after binding by some clients
            # (Strophe.js, so Converse.js) although the feature says optional: say yes.
            session.send(iq_result(el))
            return
        await self.services.router.from_client(session, el)

    def _reply_error(self, el: Element, err: StanzaError) -> None:
        if el.get("type") in ("error", "result"):
            return
        reply = error_reply(el, err)
        if self.session is not None:
            reply.set("to", str(self.session.jid))
        else:
            reply.attrib.pop("to", None)
        self.stream.send(reply)
        self._flush()

    # ------------------------------------------------------------------ stream management
    async def _stream_management(self, el: Element) -> None:
        name = local_name(el)
        sm = self.sm
        if name == "r":
            if sm is not None:
                self.stream.send_text(f'<a xmlns="{ns.SM}" h="{sm.h_in}"/>')
                self._flush()
        elif name == "a":
            self._ack_requested = False
            if sm is not None:
                try:
                    h = int(el.get("h", ""))
                except ValueError:
                    h = -1
                if h < 0 or not sm.acknowledge(h):
                    self.close(StreamError("undefined-condition", "impossible ack count"))
                elif sm.queue:
                    self._ack_requested = True
                    asyncio.get_running_loop().call_later(1.0, self._request_ack)
        elif name == "enable":
            if self.session is None or sm is not None:
                self._sm_failed("unexpected-request")
                return
            resumable = el.get("resume") in ("true", "1")
            self.sm = SmState(self.session, resumable)
            attrs = {"id": self.sm.id}
            if resumable:
                attrs["resume"] = "true"
                attrs["max"] = str(int(self.services.limits.sm_resume_timeout))
            enabled = Element(tag(ns.SM, "enabled"), attrs)
            self.stream.send(enabled)
            self._flush()
        elif name == "resume":
            await self._resume(el)
        else:
            self._sm_failed("feature-not-implemented")

    def _sm_failed(self, condition: str, h: int | None = None) -> None:
        failed = Element(tag(ns.SM, "failed"))
        if h is not None:
            failed.set("h", str(h))
        SubElement(failed, tag(ns.STANZAS, condition))
        self.stream.send(failed)
        self._flush()

    async def _resume(self, el: Element) -> None:
        s = self.services
        previd = el.get("previd", "")
        old = s.hibernating.get(previd)
        if self.authenticated is None or self.session is not None:
            self._sm_failed("unexpected-request")
            return
        if old is None:
            # It may still look connected (the client noticed the drop first).
            for conn in list(s.connections):
                if (
                    conn.sm is not None
                    and conn.sm.id == previd
                    and conn is not self
                    and conn.sm.session.account == self.authenticated
                ):
                    conn._hibernate()
                    old = s.hibernating.get(previd)
                    # Let go of the old socket: nothing more is read from or written to it.
                    conn.stream.close(StreamError("conflict", "resumed on another connection"))
                    conn._write_out()
                    conn.stream.closed = True
                    conn.transport.close()
                    break
        if old is None or old.session.account != self.authenticated:
            self._sm_failed("item-not-found")
            return
        try:
            h = int(el.get("h", ""))
        except ValueError:
            self._sm_failed("bad-request")
            return
        if not old.acknowledge(h):
            self._sm_failed("bad-request")
            return
        del s.hibernating[previd]
        if old.timer is not None:
            old.timer.cancel()
            old.timer = None
        session = old.session
        if getattr(session.link, "framed", self.framed) != self.framed:
            # Resumed over the other kind of transport (TCP <-> WebSocket): re-frame what is kept.
            old.queue = deque(self.stream.serialize(parse_element(t)) for t in old.queue)
        session.link = self
        session.hibernating = False
        self.session = session
        self.sm = old
        self._left_unauthenticated()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self.stream.send(Element(tag(ns.SM, "resumed"), {"previd": previd, "h": str(old.h_in)}))
        for text in old.queue:
            self.stream.send_text(text)
        self._flush()
        if old.queue:
            self._request_ack()
        log.info("%s resumed its stream (%d stanzas resent)", session.jid, len(old.queue))

    # ------------------------------------------------------------------ teardown
    def connection_lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stream.closed = True
        self.services.connections.discard(self)
        self.services.quiet.forget(self)
        self._left_unauthenticated()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        session = self.session
        if session is None or session.link is not self:
            return
        if self.sm is not None and self.sm.resumable and not self._clean_close:
            self._hibernate()
            return
        asyncio.get_running_loop().create_task(self._end(session))

    def _hibernate(self) -> None:
        sm = self.sm
        session = self.session
        assert sm is not None and session is not None
        self._closed = True
        self.services.connections.discard(self)
        if session.link is self:
            session.hibernating = True
            self.services.hibernating[sm.id] = sm
            log.info(
                "%s hibernating (resumable for %ss)",
                session.jid,
                self.services.limits.sm_resume_timeout,
            )
            sm.timer = asyncio.get_running_loop().call_later(
                self.services.limits.sm_resume_timeout, self._hibernation_expired, sm
            )

    def _hibernation_expired(self, sm: SmState) -> None:
        if self.services.hibernating.pop(sm.id, None) is sm:
            asyncio.get_running_loop().create_task(self._end(sm.session))

    async def _end(self, session: Session) -> None:
        sm = self.sm
        await self.services_end_session(session)
        if sm is not None and sm.queue:
            # XEP-0198 §5: what the client never acknowledged is handled as undeliverable.
            unacked = list(sm.queue)
            sm.queue.clear()
            for text in unacked:
                try:
                    el = parse_element(text)
                except ParseError:
                    continue
                if local_name(el) == "message" and not self._delivered_elsewhere(el, session):
                    await self.services.router.requeue_unacked(el, session)

    def _delivered_elsewhere(self, el: Element, session: Session) -> bool:
        """A message to the bare JID went to every available client of top priority: when
        one still online ranks as high as the ended session, it has the message already."""
        to = try_parse(el.get("to"))
        if to is None or to.resource:
            return False
        floor = max(0, session.priority)
        return any(
            other is not session and other.available and other.priority >= floor
            for other in self.services.sessions.of_account(session.account)
        )
