"""A lean asyncio XMPP load generator and the benchmark scenarios built on it.

The client speaks raw XMPP over TCP: STARTTLS, in-band registration (XEP-0077), SASL SCRAM-SHA-256
or SCRAM-SHA-1 (PLAIN over TLS as a last resort), resource binding, session establishment when the
server requires it, initial presence and group chat joins (XEP-0045). It does not parse XML: it
finds what it waits for with byte patterns, and once a client is set up it only counts the bodies
of benchmark messages (``<body>bmSEQ</body>``) in the bytes it receives. Every client keeps a
bitmap of the sequence numbers it has seen, so each run checks that every client received every
message exactly once.

Each scenario returns a JSON-able dict. Run one directly against a server that is already up::

    python -m bench.loadgen --port 5222 --scenario fanout --accounts 10 --devices 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import secrets
import ssl
import time
from array import array
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar, cast

from bench import procinfo

T = TypeVar("T")

NS_CLIENT = "jabber:client"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_REGISTER = "jabber:iq:register"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_DATA = "jabber:x:data"

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")

RE_FEATURES = re.compile(rb"<stream:features\b[^>]*?(?:/>|>.*?</stream:features>)", re.S)
RE_PROCEED = re.compile(rb"<(proceed|failure)\b[^>]*" + NS_TLS.encode())
RE_SASL_REPLY = re.compile(rb"<(challenge|success|failure)\b[^>]*?(?:/>|>(.*?)</\1>)", re.S)
RE_MECHANISM = re.compile(rb"<mechanism>([^<]+)</mechanism>")
RE_SESSION = re.compile(
    rb"<session\b[^>]*" + NS_SESSION.encode() + rb"[^>]*?(/>|>.*?</session>)", re.S
)
RE_JID = re.compile(rb"<jid>([^<]+)</jid>")
RE_TYPE = re.compile(rb"\btype=['\"]([a-z]+)['\"]")
RE_JOINED = re.compile(rb"code=['\"]110['\"]|<presence\b[^>]*\btype=['\"]error['\"]")
RE_BODY = re.compile(rb"<body[^>]*>bm(\d+)</body>")
TAIL_KEEP = 96  # longer than any benchmark body element, so a split one is kept whole

SCAN_OVERLAP = 65536  # a pattern searched again after new data starts this far back
# A join waits for its self-presence (status 110) or an error, after every occupant's presence:
# what arrives is looked at once, with plain byte searches (a regular expression runs only
# where one of these occurs), so the client's cost stays far below any server's.
JOIN_NEEDLES = (b"'110'", b'"110"', b"error")
JOIN_OVERLAP = 4096  # longer than any presence's start tag


class XmppError(Exception):
    """The server refused or broke a step of the conversation."""


class Probe(Protocol):
    """What the scenarios read from the server under test (a running ServerHandle fits)."""

    host: str
    port: int
    domain: str
    muc_domain: str

    def cpu_seconds(self) -> float: ...

    def rss_bytes(self) -> int: ...

    def metric(self, name: str) -> float | None: ...


@dataclass
class Target:
    """A server reached by address only; CPU and memory are read from ``pid`` when given."""

    host: str = "127.0.0.1"
    port: int = 5222
    domain: str = "localhost"
    muc_domain: str = "conference.localhost"
    pid: int | None = None

    def cpu_seconds(self) -> float:
        return procinfo.cpu_seconds(self.pid) if self.pid else float("nan")

    def rss_bytes(self) -> int:
        return procinfo.rss_bytes(self.pid) if self.pid else 0

    def metric(self, name: str) -> float | None:
        return None


def tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the servers under test use self-signed certificates
    return context


TLS_CONTEXT = tls_context()


def raise_fd_limit(wanted: int = 1 << 20) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (servers started afterwards inherit it).

    Without the privilege to raise the hard limit, the soft limit goes up to the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (wanted, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop factory when uvloop is installed, else None (the default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh event loop (uvloop when installed), without changing policy."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coroutine)


def xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")
    )


# --- SCRAM -------------------------------------------------------------------------------------

_salted_cache: dict[tuple[str, str, bytes, int], tuple[bytes, bytes, bytes]] = {}


def _scram_keys(
    hash_name: str, password: str, salt: bytes, iterations: int
) -> tuple[bytes, bytes, bytes]:
    """ClientKey, StoredKey and ServerKey, cached like a real client caches its salted password."""
    key = (hash_name, password, salt, iterations)
    keys = _salted_cache.get(key)
    if keys is None:
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        stored_key = hashlib.new(hash_name, client_key).digest()
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        keys = (client_key, stored_key, server_key)
        _salted_cache[key] = keys
    return keys


class ScramClient:
    """The client side of SCRAM (RFC 5802 / RFC 7677) without channel binding."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.hash_name = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mechanism]
        self.password = password
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self.client_first_bare = f"n={name},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return b"n,," + self.client_first_bare.encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise XmppError("SCRAM: server nonce does not extend ours")
        client_key, stored_key, server_key = _scram_keys(
            self.hash_name, self.password, salt, iterations
        )
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.client_first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self.hash_name)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = hmac.digest(server_key, auth_message, self.hash_name)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        text = server_final.decode()
        if not text.startswith("v=") or base64.b64decode(text[2:]) != self.server_signature:
            raise XmppError(f"SCRAM: bad server signature {text!r}")


# --- Tracking deliveries -----------------------------------------------------------------------


class Tracker:
    """Send times and outstanding receivers per message sequence number, and delivery latencies.

    A message is complete when every client expected to receive it has received it once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sent_at = array("d", bytes(8 * capacity))
        self.remaining = array("i", bytes(4 * capacity))
        self.latencies = array("d")
        self.sent = 0
        self.completed = 0
        self.last_completion = 0.0
        self.on_complete: Callable[[], None] | None = None
        self._drained: asyncio.Event | None = None

    def new(self, receivers: int) -> int:
        """Reserve the next sequence number for a message about to be written."""
        seq = self.sent
        if seq >= self.capacity:
            raise XmppError("tracker capacity exceeded")
        self.sent = seq + 1
        self.remaining[seq] = receivers
        self.sent_at[seq] = time.perf_counter()
        return seq

    def complete(self) -> None:
        self.completed += 1
        self.last_completion = time.perf_counter()
        if self.on_complete is not None:
            self.on_complete()
        if self._drained is not None and self.completed >= self.sent:
            self._drained.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every message sent so far is complete; False on timeout."""
        if self.completed >= self.sent:
            return True
        self._drained = asyncio.Event()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._drained = None


# --- The client --------------------------------------------------------------------------------

BUFFERING, COUNTING, DISCARDING, CLOSING = 0, 1, 2, 3
SSL_SHUTDOWN_TIMEOUT = 30.0  # as asyncio's and uvloop's TLS transports: how long close() waits

# Counting clients decrypt into one buffer they share (the event loop runs one callback at a
# time); between reads a client keeps only what may be a body or a tag cut in two.
PLAIN_SIZE = 1 << 18
PLAIN_READ = 1 << 15  # more than the plaintext of one TLS record (16 KiB)
PLAIN_FULL = PLAIN_SIZE - PLAIN_READ  # past this, count what is there before decrypting more
_plain = bytearray(PLAIN_SIZE)
_plain_view = memoryview(_plain)
ReadInto = Callable[[int, memoryview], int]  # SSLObject.read given a buffer (typeshed says bytes)


def _no_tls(size: int, buffer: memoryview) -> int:
    raise XmppError("no TLS")


@dataclass(slots=True)
class Waiter:
    """What :meth:`Client.expect` waits for (see there)."""

    pattern: re.Pattern[bytes]
    future: asyncio.Future[re.Match[bytes]]
    overlap: int
    needles: tuple[bytes, ...]


class Client(asyncio.Protocol):
    """One XMPP client connection.

    While being set up it buffers what it receives and ``expect()`` searches that buffer; after
    ``count()`` or ``discard()`` it keeps nothing but benchmark message counts.

    TLS runs in the client itself, on an ``ssl.SSLObject`` over memory buffers under the plain
    TCP transport, as asyncio's TLS transports do (the same handshake, records and closing
    handshake), so that a counting client decrypts each read's records straight into a reused
    buffer and counts the bodies in all of them at once.
    """

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.transport: asyncio.Transport | None = None
        self.mode = BUFFERING
        self.buf = bytearray()
        self.scanned = 0
        self.waiter: Waiter | None = None
        self.closed = False
        self.close_reason = ""
        self.jid = ""
        self.mechanism = ""
        # TLS, once STARTTLS has been accepted.
        self.tls: ssl.SSLObject | None = None
        self.tls_in = ssl.MemoryBIO()
        self.tls_out = ssl.MemoryBIO()
        self.tls_read: ReadInto = _no_tls
        self.handshake: asyncio.Future[None] | None = None
        self.tls_error = ""
        self.shutdown_timer: asyncio.TimerHandle | None = None
        # Counting state.
        self.tracker: Tracker | None = None
        self.seen = bytearray()
        self.tail = b""
        self.unique = 0
        self.duplicates = 0
        self.errors = 0
        self.expected = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but provide its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        mode = self.mode
        if mode == COUNTING and self.tls is not None:
            self._count_records(data)
            return
        if self.tls is None:
            if mode == COUNTING:
                data = self.tail + data
                self._scan(data, len(data))
            elif mode == BUFFERING:
                self._buffer(data)
            return
        self.tls_in.write(data)
        if mode == BUFFERING:
            self._read_records()
        elif mode == DISCARDING:
            self._read_into_void()  # the TLS stream stays whole, for the closing handshake
        elif mode == CLOSING:
            self._shutdown_step()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.shutdown_timer is not None:
            self.shutdown_timer.cancel()
            self.shutdown_timer = None
        self.close_reason = self.tls_error or (str(exc) if exc else "closed by server")
        handshake, self.handshake = self.handshake, None
        if handshake is not None and not handshake.done():
            handshake.set_exception(XmppError(f"connection lost ({self.close_reason})"))
        if self.waiter is not None:
            future = self.waiter.future
            self.waiter = None
            if not future.done():
                tail = bytes(self.buf[-300:])
                future.set_exception(XmppError(f"connection lost ({self.close_reason}): {tail!r}"))

    # TLS

    def _start_tls(self) -> asyncio.Future[None]:
        """Begin the TLS handshake; the future is done when it is."""
        self.handshake = asyncio.get_running_loop().create_future()
        self.tls = TLS_CONTEXT.wrap_bio(self.tls_in, self.tls_out, server_hostname=self.domain)
        self.tls_read = cast(ReadInto, self.tls.read)
        future = self.handshake
        self._handshake_step()
        return future

    def _handshake_step(self) -> None:
        tls, future = self.tls, self.handshake
        assert tls is not None and future is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return
        except ssl.SSLError as exc:
            self.handshake = None
            self._flush_tls()  # the alert, if any
            if not future.done():
                future.set_exception(XmppError(f"TLS handshake failed: {exc}"))
            return
        self.handshake = None
        self._flush_tls()
        if not future.done():
            future.set_result(None)

    def _flush_tls(self) -> None:
        out = self.tls_out
        if out.pending:
            assert self.transport is not None
            self.transport.write(out.read())

    def _tls_failed(self, exc: ssl.SSLError) -> None:
        self.tls_error = f"TLS: {exc}"
        self.mode = DISCARDING
        if self.transport is not None:
            self.transport.abort()

    def _read_records(self) -> None:
        """Setup time: finish the handshake, then decrypt what has arrived into the buffer."""
        if self.handshake is not None:
            self._handshake_step()
            if self.handshake is not None or self.tls_in.pending == 0:
                return
        incoming = self.tls_in
        read = self.tls_read
        size = 0
        try:
            while incoming.pending:
                size = read(PLAIN_SIZE, _plain_view)
                if not size:
                    break
                self.buf += _plain_view[:size]
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass  # the rest of a record is still on its way, or the server's close_notify came
        except ssl.SSLError as exc:
            self._tls_failed(exc)
            return
        if size and self.waiter is not None:
            self._try_waiter()

    def _read_into_void(self) -> None:
        """Decrypt and drop what has arrived."""
        incoming = self.tls_in
        read = self.tls_read
        try:
            while incoming.pending and read(PLAIN_SIZE, _plain_view):
                pass
        except ssl.SSLError:
            pass  # a record not whole yet, the server's close_notify, or a broken stream

    def _shutdown_step(self) -> None:
        """The closing handshake: drop what arrives until the server's close_notify answers ours,
        then close the connection (what asyncio's TLS transports do on close())."""
        tls, transport = self.tls, self.transport
        assert tls is not None and transport is not None
        try:
            self._read_into_void()
            tls.unwrap()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return
        except ssl.SSLError:
            transport.abort()
            return
        self._flush_tls()
        transport.close()

    def _shutdown_timed_out(self) -> None:
        self.shutdown_timer = None
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # Setup-time reading

    def _buffer(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None:
            self._try_waiter()

    def _try_waiter(self) -> None:
        waiter = self.waiter
        assert waiter is not None
        future = waiter.future
        buf = self.buf
        # Only what arrived since the last look, and a little before it (a match may straddle).
        new = max(0, self.scanned - waiter.overlap)
        self.scanned = len(buf)
        start = new
        match = None
        if waiter.needles:
            found = [at for n in waiter.needles if (at := buf.find(n, new)) >= 0]
            if found:  # a match holds a needle and starts at most ``overlap`` before it
                start = max(new, min(found) - waiter.overlap)
                match = waiter.pattern.search(bytes(buf[start:]))
        else:
            match = waiter.pattern.search(bytes(buf[start:]))
        if match is None:
            at = buf.find(b"<stream:error", new)
            if at >= 0:
                self.waiter = None
                error = bytes(buf[at : at + 400])
                future.set_exception(XmppError(f"stream error: {error!r}"))
            return
        del self.buf[: start + match.end()]
        self.scanned = 0
        self.waiter = None
        if not future.done():
            future.set_result(match)

    async def expect(
        self,
        pattern: re.Pattern[bytes],
        timeout: float = 30.0,
        *,
        overlap: int = SCAN_OVERLAP,
        needles: tuple[bytes, ...] = (),
    ) -> re.Match[bytes]:
        """Wait for ``pattern`` in what has arrived; consume the data up to the end of the match.

        ``overlap``: how far back from new data a match may start. ``needles``: byte strings of
        which every match holds one; the pattern is searched only where one of them occurs."""
        if self.closed:
            raise XmppError(f"connection closed ({self.close_reason})")
        future: asyncio.Future[re.Match[bytes]] = asyncio.get_running_loop().create_future()
        self.waiter = Waiter(pattern, future, overlap, needles)
        self.scanned = 0
        self._try_waiter()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise XmppError(
                f"timed out waiting for {pattern.pattern[:60]!r}: {bytes(self.buf[-300:])!r}"
            ) from None
        finally:
            self.waiter = None

    def send(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        tls = self.tls
        if tls is None:
            transport.write(data)
        else:
            tls.write(data)
            transport.write(self.tls_out.read())

    # Counting-time reading

    def count(self, tracker: Tracker) -> None:
        """From now on, count benchmark messages (sequence numbers below the tracker's capacity)."""
        self.tracker = tracker
        self.seen = bytearray(tracker.capacity)
        self.mode = COUNTING
        pending, self.buf = bytes(self.buf), bytearray()
        self.tail = b""
        if pending:
            self._scan(pending, len(pending))

    def discard(self) -> None:
        """From now on, drop everything received."""
        self.mode = DISCARDING
        self.buf = bytearray()

    def _count_records(self, data: bytes) -> None:
        """Decrypt the records that have arrived, after what was kept of the previous read, into
        the shared buffer, then count the bodies in all of it at once (one clock reading per
        read: a delivery's receipt time)."""
        incoming = self.tls_in
        incoming.write(data)
        read = self.tls_read
        size = len(self.tail)
        try:
            if size:
                _plain[:size] = self.tail
                size += read(PLAIN_READ, _plain_view[size:])
            else:
                size = read(PLAIN_READ, _plain_view)
            while incoming.pending:  # whole records: no exception after the last one
                got = read(PLAIN_READ, _plain_view[size:])
                if not got:
                    break
                size += got
                if size > PLAIN_FULL:
                    self._scan(_plain, size)
                    size = len(self.tail)
                    _plain[:size] = self.tail
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass  # the rest of a record is still on its way, or the server's close_notify came
        except ssl.SSLError as exc:
            self._tls_failed(exc)
        if size:
            self._scan(_plain, size)
        else:
            self.tail = b""

    def _scan(self, data: bytes | bytearray, size: int) -> None:
        """Count the benchmark bodies in ``data[:size]``; keep in ``tail`` what may be the start
        of a body or of a tag that the end of the data cut in two."""
        if data.find(b"error", 0, size) >= 0 and (
            data.find(b"type='error'", 0, size) >= 0 or data.find(b'type="error"', 0, size) >= 0
        ):
            self.errors += 1
        low = size - TAIL_KEEP if size > TAIL_KEEP else 0
        cut = data.rfind(b"<body", low, size)
        if cut >= 0 and data.find(b"</body>", cut, size) < 0:
            self.tail = bytes(data[cut:size])  # a body without its end: counted next time
        elif data[size - 1] != 62:  # not ending with ">": keep the tag cut in two, if any
            cut = max(data.rfind(b"<", low, size), low)
            self.tail = bytes(data[cut:size])
            cut = size  # a complete body holds "<": there is none in the tail
        else:
            self.tail = b""
            cut = size
        found = RE_BODY.findall(data, 0, cut)
        if not found:
            return
        tracker = self.tracker
        assert tracker is not None
        now = time.perf_counter()
        seen = self.seen
        sent_at = tracker.sent_at
        remaining = tracker.remaining
        latencies = tracker.latencies
        for raw in found:
            seq = int(raw)
            if seen[seq]:
                self.duplicates += 1
                continue
            seen[seq] = 1
            self.unique += 1
            latencies.append(now - sent_at[seq])
            left = remaining[seq] - 1
            remaining[seq] = left
            if left == 0:
                tracker.complete()

    # Stream setup

    async def open_stream(self, timeout: float) -> bytes:
        self.send(
            f"<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}' "
            f"to='{self.domain}' version='1.0'>".encode()
        )
        return (await self.expect(RE_FEATURES, timeout)).group(0)

    async def starttls(self, timeout: float) -> None:
        self.send(f"<starttls xmlns='{NS_TLS}'/>".encode())
        if (await self.expect(RE_PROCEED, timeout)).group(1) != b"proceed":
            raise XmppError("STARTTLS refused")
        self.buf.clear()
        await asyncio.wait_for(self._start_tls(), timeout)

    async def iq(
        self, stanza_id: str, payload: str, timeout: float, to: str = ""
    ) -> tuple[str, bytes]:
        """Send an iq of type set; return the reply's type and whole text."""
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq type='set' id='{stanza_id}'{to_attr}>{payload}</iq>".encode())
        pattern = re.compile(
            rb"<iq\b[^>]*\bid=['\"]"
            + re.escape(stanza_id.encode())
            + rb"['\"][^>]*?(?:/>|>.*?</iq>)",
            re.S,
        )
        reply = (await self.expect(pattern, timeout)).group(0)
        kind = RE_TYPE.search(reply[: reply.index(b">")])
        return (kind.group(1).decode() if kind else ""), reply

    async def register(self, username: str, password: str, timeout: float) -> bool:
        """XEP-0077 registration; True if created, False if the account already existed."""
        kind, reply = await self.iq(
            "reg",
            f"<query xmlns='{NS_REGISTER}'><username>{xml_escape(username)}</username>"
            f"<password>{xml_escape(password)}</password></query>",
            timeout,
        )
        if kind == "result":
            return True
        if b"<conflict" in reply:
            return False
        raise XmppError(f"registration of {username} failed: {reply[:400]!r}")

    async def authenticate(
        self, features: bytes, username: str, password: str, prefer: Sequence[str], timeout: float
    ) -> str:
        offered = {m.decode() for m in RE_MECHANISM.findall(features)}
        mechanism = next((m for m in prefer if m in offered), None)
        if mechanism is None:
            raise XmppError(f"no usable SASL mechanism among {sorted(offered)}")
        if mechanism == "PLAIN":
            initial = b"\0" + username.encode() + b"\0" + password.encode()
            self._sasl_auth(mechanism, initial)
            name, data = await self._sasl_reply(timeout)
            if name != b"success":
                raise XmppError(f"PLAIN failed: {data[:200]!r}")
            return mechanism
        scram = ScramClient(mechanism, username, password)
        self._sasl_auth(mechanism, scram.first())
        name, data = await self._sasl_reply(timeout)
        if name != b"challenge":
            raise XmppError(f"{mechanism} refused: {data[:200]!r}")
        response = base64.b64encode(scram.final(base64.b64decode(data)))
        self.send(b"<response xmlns='" + NS_SASL.encode() + b"'>" + response + b"</response>")
        name, data = await self._sasl_reply(timeout)
        if name == b"challenge":  # some servers send the server-final message as a challenge
            scram.verify(base64.b64decode(data))
            self.send(b"<response xmlns='" + NS_SASL.encode() + b"'/>")
            name, data = await self._sasl_reply(timeout)
            if name != b"success":
                raise XmppError(f"{mechanism} failed: {data[:200]!r}")
        elif name == b"success":
            scram.verify(base64.b64decode(data))
        else:
            raise XmppError(f"{mechanism} failed: {data[:200]!r}")
        return mechanism

    def _sasl_auth(self, mechanism: str, initial: bytes) -> None:
        self.send(
            f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>".encode()
            + base64.b64encode(initial)
            + b"</auth>"
        )

    async def _sasl_reply(self, timeout: float) -> tuple[bytes, bytes]:
        match = await self.expect(RE_SASL_REPLY, timeout)
        data = match.group(2) or b""
        if match.group(1) == b"failure":
            return b"failure", match.group(0)
        return match.group(1), data.strip()

    async def bind(self, features: bytes, resource_name: str, timeout: float) -> str:
        kind, reply = await self.iq(
            "bind",
            f"<bind xmlns='{NS_BIND}'><resource>{xml_escape(resource_name)}</resource></bind>",
            timeout,
        )
        found = RE_JID.search(reply)
        if kind != "result" or found is None:
            raise XmppError(f"bind failed: {reply[:300]!r}")
        self.jid = found.group(1).decode()
        session = RE_SESSION.search(features)
        if session is not None and b"<optional" not in session.group(0):
            kind, reply = await self.iq("sess", f"<session xmlns='{NS_SESSION}'/>", timeout)
            if kind != "result":
                raise XmppError(f"session failed: {reply[:300]!r}")
        return self.jid

    async def join_room(self, room: str, nick: str, create: bool, timeout: float) -> None:
        """Join ``room`` (XEP-0045) without history; the creator unlocks it as an instant room."""
        self.send(
            f"<presence to='{room}/{xml_escape(nick)}'><x xmlns='{NS_MUC}'>"
            f"<history maxstanzas='0'/></x></presence>".encode()
        )
        match = await self.expect(RE_JOINED, timeout, overlap=JOIN_OVERLAP, needles=JOIN_NEEDLES)
        if match.group(0).startswith(b"<presence"):
            raise XmppError(f"join of {room} refused: {bytes(self.buf[:400])!r}")
        if create:
            kind, reply = await self.iq(
                "own",
                f"<query xmlns='{NS_MUC_OWNER}'><x xmlns='{NS_DATA}' type='submit'/></query>",
                timeout,
                to=room,
            )
            if kind != "result":
                raise XmppError(f"instant room configuration failed: {reply[:300]!r}")

    def close(self) -> None:
        """End the stream and close the connection, without waiting: the closing TLS handshake
        goes on in the background."""
        if self.transport is None or self.closed or self.mode == CLOSING:
            return
        try:
            if self.tls is None:
                self.mode = DISCARDING
                self.transport.write(b"</stream:stream>")
                self.transport.close()
            elif self.handshake is not None:
                self.mode = DISCARDING
                self.transport.abort()  # mid-handshake: nothing to end politely
            else:
                self.mode = CLOSING
                self.send(b"</stream:stream>")
                self.shutdown_timer = asyncio.get_running_loop().call_later(
                    SSL_SHUTDOWN_TIMEOUT, self._shutdown_timed_out
                )
                self._shutdown_step()
        except (OSError, RuntimeError, ssl.SSLError):
            self.transport.abort()


@dataclass
class Credentials:
    username: str
    password: str

    @staticmethod
    def for_name(username: str) -> Credentials:
        return Credentials(username, f"pw-{username}")


async def connect(
    target: Probe,
    creds: Credentials,
    resource_name: str = "bench",
    *,
    register: bool = False,
    login: bool = True,
    presence: bool = True,
    prefer: Sequence[str] = MECHANISMS,
    timeout: float = 30.0,
) -> Client:
    """A client through STARTTLS, optional registration, SASL, bind and initial presence."""
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: Client(target.domain), target.host, target.port), timeout
    )
    try:
        features = await client.open_stream(timeout)
        if b"<starttls" not in features:
            raise XmppError("server does not offer STARTTLS")
        await client.starttls(timeout)
        features = await client.open_stream(timeout)
        if register:
            await client.register(creds.username, creds.password, timeout)
        if not login:
            return client
        client.mechanism = await client.authenticate(
            features, creds.username, creds.password, prefer, timeout
        )
        features = await client.open_stream(timeout)
        await client.bind(features, resource_name, timeout)
        if presence:
            client.send(b"<presence/>")
    except BaseException:
        client.close()
        raise
    return client


async def bounded(tasks: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the task factories with at most ``limit`` at once; the first failure cancels the rest."""
    semaphore = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await factory()

    async with asyncio.TaskGroup() as group:
        futures = [group.create_task(run(factory)) for factory in tasks]
    return [future.result() for future in futures]


async def register_accounts(
    target: Probe, names: Sequence[str], concurrency: int, timeout: float
) -> None:
    """Create accounts by in-band registration; accounts that already exist are fine."""

    async def one(name: str) -> None:
        client = await connect(
            target, Credentials.for_name(name), register=True, login=False, timeout=timeout
        )
        client.close()

    await bounded([partial(one, n) for n in names], concurrency)


def close_all(clients: Iterable[Client]) -> None:
    for client in clients:
        client.close()


# --- Measuring ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def latency_summary(values: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


@dataclass
class Snapshot:
    """Server and load generator counters at one moment."""

    wall: float
    server_cpu: float
    loadgen_cpu: float
    machine_cpu: float
    muc_out: float | None

    @staticmethod
    def take(target: Probe) -> Snapshot:
        return Snapshot(
            wall=time.perf_counter(),
            server_cpu=target.cpu_seconds(),
            loadgen_cpu=time.process_time(),
            machine_cpu=procinfo.machine_busy_seconds(),
            muc_out=target.metric("minimix_muc_stanzas_out_total"),
        )


def cost_figures(
    target: Probe, before: Snapshot, after: Snapshot, messages: int, deliveries: int
) -> dict[str, Any]:
    """CPU per 1,000 deliveries, the load generator's own cost, server memory, room stanzas."""
    server_cpu = after.server_cpu - before.server_cpu
    loadgen_cpu = after.loadgen_cpu - before.loadgen_cpu
    wall = max(after.wall - before.wall, 1e-9)
    figures: dict[str, Any] = {
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_s_per_1k_deliveries": round(server_cpu / deliveries * 1000, 5)
        if deliveries
        else None,
        "server_cpu_share": round(server_cpu / wall, 3),
        "server_rss_mb": round(target.rss_bytes() / 2**20, 1),
        "loadgen_cpu_us_per_message": round(loadgen_cpu / messages * 1e6, 1) if messages else None,
        "loadgen_cpu_us_per_delivery": round(loadgen_cpu / deliveries * 1e6, 2)
        if deliveries
        else None,
        "loadgen_cpu_share": round(loadgen_cpu / wall, 3),
        # CPU used by anything else on the machine meanwhile: high values mean noisy figures.
        "other_cpu_share": round(
            max(0.0, after.machine_cpu - before.machine_cpu - server_cpu - loadgen_cpu) / wall, 3
        ),
    }
    if before.muc_out is not None and after.muc_out is not None and messages:
        figures["room_stanzas_per_message"] = round((after.muc_out - before.muc_out) / messages, 2)
    else:
        figures["room_stanzas_per_message"] = None
    return figures


def check_exactly_once(
    clients: Sequence[Client], expected: Callable[[Client], int]
) -> dict[str, Any]:
    """Every client received every message meant for it exactly once, and no error stanza."""
    missing = sum(max(0, expected(c) - c.unique) for c in clients)
    extra = sum(max(0, c.unique - expected(c)) for c in clients)
    duplicates = sum(c.duplicates for c in clients)
    errors = sum(c.errors for c in clients)
    disconnected = sum(1 for c in clients if c.closed)
    return {
        "ok": missing == 0 and extra == 0 and duplicates == 0 and errors == 0 and disconnected == 0,
        "clients": len(clients),
        "missing": missing,
        "unexpected": extra,
        "duplicates": duplicates,
        "error_stanzas": errors,
        "disconnected": disconnected,
    }


@dataclass
class PhaseResult:
    messages: int
    deliveries: int
    seconds: float
    drained: bool
    latencies: array[float] = field(repr=False)

    def figures(self) -> dict[str, Any]:
        seconds = max(self.seconds, 1e-9)
        return {
            "messages": self.messages,
            "deliveries": self.deliveries,
            "seconds": round(self.seconds, 3),
            "messages_per_s": round(self.messages / seconds, 1),
            "deliveries_per_s": round(self.deliveries / seconds, 1),
            "drained": self.drained,
            "latency": latency_summary(self.latencies),
        }


async def closed_loop(
    tracker: Tracker,
    send: Callable[[int], None],
    receivers: int,
    *,
    count: int,
    duration: float,
    window: int,
    drain_timeout: float,
) -> PhaseResult:
    """Send as fast as completions allow, with at most ``window`` messages outstanding."""
    semaphore = asyncio.Semaphore(window)
    tracker.on_complete = semaphore.release
    tracker.latencies = array("d")
    first = tracker.sent
    start = time.perf_counter()
    stop_at = start + duration
    try:
        while tracker.sent - first < count and time.perf_counter() < stop_at:
            await semaphore.acquire()
            send(tracker.new(receivers))
        drained = await tracker.drain(drain_timeout)
    finally:
        tracker.on_complete = None
    end = tracker.last_completion if drained else time.perf_counter()
    return PhaseResult(
        tracker.sent - first, len(tracker.latencies), end - start, drained, tracker.latencies
    )


async def fixed_rate(
    tracker: Tracker,
    send: Callable[[int], None],
    receivers: int,
    *,
    rate: float,
    count: int,
    drain_timeout: float,
) -> PhaseResult:
    """Send ``count`` messages at ``rate`` per second, whatever the completions."""
    tracker.latencies = array("d")
    first = tracker.sent
    start = time.perf_counter()
    for index in range(count):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        send(tracker.new(receivers))
    drained = await tracker.drain(drain_timeout)
    end = max(tracker.last_completion, start + count / rate) if drained else time.perf_counter()
    return PhaseResult(
        tracker.sent - first, len(tracker.latencies), end - start, drained, tracker.latencies
    )


def run_tag() -> str:
    return secrets.token_hex(3)


# --- Scenarios ---------------------------------------------------------------------------------


async def join_all(
    clients: Sequence[Client], room: str, nicks: Sequence[str], concurrency: int, timeout: float
) -> None:
    """The first client creates and unlocks the room, then the others join."""
    await clients[0].join_room(room, nicks[0], create=True, timeout=timeout)
    await bounded(
        [
            partial(c.join_room, room, n, False, timeout)
            for c, n in zip(clients[1:], nicks[1:], strict=True)
        ],
        concurrency,
    )


async def connect_devices(
    target: Probe,
    names: Sequence[str],
    devices: int,
    concurrency: int,
    timeout: float,
    presence: bool = True,
) -> list[list[Client]]:
    """Register the accounts, then log each in from ``devices`` clients (resources d0, d1, ...)."""
    await register_accounts(target, names, concurrency, timeout)
    opened: list[Client] = []

    async def one(name: str, device: int) -> Client:
        client = await connect(
            target, Credentials.for_name(name), f"d{device}", presence=presence, timeout=timeout
        )
        opened.append(client)
        return client

    try:
        flat = await bounded(
            [partial(one, n, d) for n in names for d in range(devices)], concurrency
        )
    except BaseException:
        close_all(opened)
        raise
    return [flat[i * devices : (i + 1) * devices] for i in range(len(names))]


async def group_fanout(
    target: Probe,
    *,
    accounts: int,
    devices: int,
    senders: int = 5,
    window: int = 20,
    duration: float = 10.0,
    max_messages: int = 100_000,
    max_deliveries: int = 2_000_000,
    warmup: int = 20,
    rate: float | None = 20.0,
    rate_seconds: float = 5.0,
    concurrency: int = 50,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Group fan-out: ``accounts`` accounts with ``devices`` clients each in one room.

    Runs a closed loop (fastest sustained rate) and, when ``rate`` is set, a fixed-rate phase.
    Deliveries are messages times receiving clients (every client receives every message,
    the sending client included).
    """
    tag = run_tag()
    names = [f"f{tag}a{i}" for i in range(accounts)]
    room = f"fan{tag}@{target.muc_domain}"
    receivers = accounts * devices
    fixed_count = int(rate * rate_seconds) if rate else 0
    budget = max(1, max_deliveries // receivers)
    closed_count = max(10, min(max_messages, budget - warmup - fixed_count))
    tracker = Tracker(warmup + closed_count + fixed_count)
    setup_start = time.perf_counter()
    by_account = await connect_devices(target, names, devices, concurrency, timeout)
    clients = [c for group in by_account for c in group]
    try:
        nicks = [name for name in names for _ in range(devices)]
        await join_all(clients, room, nicks, concurrency, timeout)
        for client in clients:
            client.count(tracker)
        setup_seconds = time.perf_counter() - setup_start
        sender_clients = [group[0] for group in by_account[: max(1, min(senders, accounts))]]
        room_b = room.encode()

        def send(seq: int) -> None:
            sender_clients[seq % len(sender_clients)].send(
                b"<message to='%s' type='groupchat' id='m%d'><body>bm%d</body></message>"
                % (room_b, seq, seq)
            )

        await closed_loop(
            tracker,
            send,
            receivers,
            count=warmup,
            duration=timeout,
            window=window,
            drain_timeout=timeout,
        )
        result: dict[str, Any] = {
            "accounts": accounts,
            "devices": devices,
            "clients": receivers,
            "senders": len(sender_clients),
            "window": window,
            "setup_s": round(setup_seconds, 2),
        }
        before = Snapshot.take(target)
        phase = await closed_loop(
            tracker,
            send,
            receivers,
            count=closed_count,
            duration=duration,
            window=window,
            drain_timeout=timeout,
        )
        after = Snapshot.take(target)
        result["closed_loop"] = phase.figures() | cost_figures(
            target, before, after, phase.messages, phase.deliveries
        )
        if rate and fixed_count:
            before = Snapshot.take(target)
            phase = await fixed_rate(
                tracker, send, receivers, rate=rate, count=fixed_count, drain_timeout=timeout
            )
            after = Snapshot.take(target)
            result["fixed_rate"] = (
                {"target_messages_per_s": rate}
                | phase.figures()
                | cost_figures(target, before, after, phase.messages, phase.deliveries)
            )
        result["delivery"] = check_exactly_once(clients, lambda _c: tracker.sent)
        return result
    finally:
        close_all(clients)


async def second_client(
    target: Probe,
    *,
    occupants: int = 500,
    samples: int = 5,
    concurrency: int = 50,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Time for another client of an account already in a room of ``occupants`` to join it.

    Timed from sending the join presence to receiving the self-presence (status 110). For
    comparison, the same for a client of an account that is not yet in the room.
    """
    tag = run_tag()
    names = [f"s{tag}a{i}" for i in range(occupants)]
    room = f"big{tag}@{target.muc_domain}"
    setup_start = time.perf_counter()
    by_account = await connect_devices(target, names, 1, concurrency, timeout, presence=False)
    clients = [group[0] for group in by_account]
    extra: list[Client] = []
    try:
        await join_all(clients, room, names, concurrency, timeout)
        for client in clients:
            client.discard()
        setup_seconds = time.perf_counter() - setup_start
        await asyncio.sleep(0.5)
        attach_ms: list[float] = []
        fresh_ms: list[float] = []
        fresh_names = [f"s{tag}new{i}" for i in range(samples)]
        await register_accounts(target, fresh_names, concurrency, timeout)
        for index in range(samples):
            for name, times in ((names[index], attach_ms), (fresh_names[index], fresh_ms)):
                client = await connect(
                    target, Credentials.for_name(name), "second", presence=False, timeout=timeout
                )
                extra.append(client)
                start = time.perf_counter()
                await client.join_room(room, name, create=False, timeout=timeout)
                times.append((time.perf_counter() - start) * 1000)
                client.discard()
                await asyncio.sleep(0.2)
        attach_ms.sort()
        fresh_ms.sort()
        return {
            "occupants": occupants,
            "samples": samples,
            "setup_s": round(setup_seconds, 2),
            "attach_ms_p50": round(percentile(attach_ms, 0.5), 2),
            "attach_ms_max": round(attach_ms[-1], 2),
            "fresh_join_ms_p50": round(percentile(fresh_ms, 0.5), 2),
            "server_rss_mb": round(target.rss_bytes() / 2**20, 1),
        }
    finally:
        close_all(clients)
        close_all(extra)


async def idle_connections(
    target: Probe,
    *,
    levels: Sequence[int] = (1000, 10000),
    resources_per_account: int = 10,
    presence: bool = True,
    concurrency: int = 64,
    settle: float = 2.0,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Server memory per idle authenticated TLS client, at each of ``levels`` clients."""
    tag = run_tag()
    top = max(levels)
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if top + 256 > fd_limit:
        raise XmppError(f"{top} clients need more file descriptors than the limit of {fd_limit}")
    account_count = -(-top // resources_per_account)
    names = [f"i{tag}a{i}" for i in range(account_count)]
    await register_accounts(target, names, concurrency, timeout)
    await asyncio.sleep(settle)
    base_rss = target.rss_bytes()
    clients: list[Client] = []
    results: list[dict[str, Any]] = []
    try:
        for level in sorted(levels):
            start = time.perf_counter()
            first = len(clients)

            async def one(index: int) -> Client:
                name = names[index % account_count]
                client = await connect(
                    target,
                    Credentials.for_name(name),
                    f"r{index // account_count}",
                    presence=presence,
                    timeout=timeout,
                )
                client.discard()
                clients.append(client)
                return client

            await bounded([partial(one, i) for i in range(first, level)], concurrency)
            connect_seconds = time.perf_counter() - start
            await asyncio.sleep(settle)
            rss = target.rss_bytes()
            results.append(
                {
                    "clients": level,
                    "server_rss_mb": round(rss / 2**20, 1),
                    "kb_per_client": round((rss - base_rss) / level / 1024, 1),
                    "connect_s": round(connect_seconds, 2),
                    "still_connected": sum(1 for c in clients if not c.closed),
                }
            )
        return {
            "resources_per_account": resources_per_account,
            "presence": presence,
            "baseline_rss_mb": round(base_rss / 2**20, 1),
            "levels": results,
        }
    finally:
        close_all(clients)


async def logins(
    target: Probe,
    *,
    accounts: int = 20,
    concurrency: int = 20,
    duration: float = 5.0,
    max_logins: int = 100_000,
    prefer: Sequence[str] = MECHANISMS,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Full logins per second: TCP, STARTTLS, SASL (SCRAM-SHA-256 preferred), bind, close."""
    tag = run_tag()
    names = [f"l{tag}a{i}" for i in range(accounts)]
    await register_accounts(target, names, concurrency, timeout)
    mechanisms: dict[str, int] = {}
    times: list[float] = []
    failures: list[str] = []
    counter = 0
    stop_at = 0.0

    async def worker(index: int) -> None:
        nonlocal counter
        while time.perf_counter() < stop_at and counter < max_logins:
            counter += 1
            name = names[(index + counter) % accounts]
            start = time.perf_counter()
            try:
                client = await connect(
                    target,
                    Credentials.for_name(name),
                    f"l{counter}",
                    presence=False,
                    prefer=prefer,
                    timeout=timeout,
                )
            except (XmppError, OSError) as exc:
                failures.append(str(exc)[:200])
                continue
            times.append(time.perf_counter() - start)
            mechanisms[client.mechanism] = mechanisms.get(client.mechanism, 0) + 1
            client.close()

    before = Snapshot.take(target)
    stop_at = before.wall + duration
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    after = Snapshot.take(target)
    elapsed = after.wall - before.wall
    done = len(times)
    used = max(mechanisms, key=lambda m: mechanisms[m]) if mechanisms else None
    return {
        "concurrency": concurrency,
        "logins": done,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "logins_per_s": round(done / elapsed, 1),
        "mechanism": used,
        "fallback": used is not None and used != prefer[0],
        "latency": latency_summary(times),
        "server_cpu_ms_per_login": round((after.server_cpu - before.server_cpu) / done * 1000, 3)
        if done
        else None,
        "loadgen_cpu_ms_per_login": round((after.loadgen_cpu - before.loadgen_cpu) / done * 1000, 3)
        if done
        else None,
        "server_rss_mb": round(target.rss_bytes() / 2**20, 1),
    }


async def one_to_one(
    target: Probe,
    *,
    pairs: int = 50,
    window: int = 100,
    duration: float = 10.0,
    max_messages: int = 300_000,
    warmup: int = 50,
    concurrency: int = 50,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Chat messages between ``pairs`` pairs of accounts, both ways, addressed to full JIDs."""
    tag = run_tag()
    names = [f"p{tag}a{i}" for i in range(2 * pairs)]
    by_account = await connect_devices(target, names, 1, concurrency, timeout)
    clients = [group[0] for group in by_account]
    try:
        tracker = Tracker(warmup + max_messages)
        for client in clients:
            client.count(tracker)
        partners = [clients[i ^ 1] for i in range(len(clients))]
        addresses = [p.jid.encode() for p in partners]

        def send(seq: int) -> None:
            index = seq % len(clients)
            partners[index].expected += 1
            clients[index].send(
                b"<message to='%s' type='chat' id='c%d'><body>bm%d</body></message>"
                % (addresses[index], seq, seq)
            )

        await closed_loop(
            tracker, send, 1, count=warmup, duration=timeout, window=window, drain_timeout=timeout
        )
        before = Snapshot.take(target)
        phase = await closed_loop(
            tracker,
            send,
            1,
            count=max_messages,
            duration=duration,
            window=window,
            drain_timeout=timeout,
        )
        after = Snapshot.take(target)
        return (
            {"pairs": pairs, "window": window}
            | phase.figures()
            | cost_figures(target, before, after, phase.messages, phase.deliveries)
            | {"delivery": check_exactly_once(clients, lambda c: c.expected)}
        )
    finally:
        close_all(clients)


SCENARIOS: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
    "fanout": group_fanout,
    "attach": second_client,
    "idle": idle_connections,
    "logins": logins,
    "one_to_one": one_to_one,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5222)
    parser.add_argument("--domain", default="localhost")
    parser.add_argument("--muc-domain", default="conference.localhost")
    parser.add_argument(
        "--pid", type=int, help="server process id, to read its CPU time and memory"
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="fanout")
    parser.add_argument("--accounts", type=int, default=10, help="fanout: accounts in the room")
    parser.add_argument("--devices", type=int, default=1, help="fanout: clients per account")
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    target = Target(args.host, args.port, args.domain, args.muc_domain, args.pid)
    options: dict[str, Any] = {}
    if args.scenario == "fanout":
        options = {"accounts": args.accounts, "devices": args.devices, "duration": args.duration}
    elif args.scenario in ("logins", "one_to_one"):
        options = {"duration": args.duration}
    result = run_async(SCENARIOS[args.scenario](target, **options))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
