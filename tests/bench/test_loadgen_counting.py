"""The load generator's client, which runs TLS itself: it counts benchmark bodies exactly once
however the server's bytes are cut (stanzas split across TLS records, records split across reads,
many records in one read), and closes as asyncio's TLS transports do. In memory: a server-side
``ssl.SSLObject`` talks to the client through a fake transport."""

from __future__ import annotations

import random
import ssl
from pathlib import Path

import pytest

from bench import loadgen, servers


class Pipe:
    """Stands in for the client's TCP transport: what the client writes goes to the server."""

    def __init__(self, incoming: ssl.MemoryBIO) -> None:
        self.incoming = incoming
        self.ended = ""

    def write(self, data: bytes) -> None:
        self.incoming.write(data)

    def close(self) -> None:
        self.ended = "closed"

    def abort(self) -> None:
        self.ended = "aborted"


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = servers.make_certificate(Path(tmp_path_factory.mktemp("cert")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def connected(
    context: ssl.SSLContext,
) -> tuple[loadgen.Client, ssl.SSLObject, ssl.MemoryBIO]:
    """A client after its TLS handshake, the server's end and what the server writes."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = context.wrap_bio(server_in, server_out, server_side=True)
    client = loadgen.Client("localhost")
    client.connection_made(Pipe(server_in))  # type: ignore[arg-type]
    handshake = client._start_tls()
    for _ in range(10):
        try:
            server.do_handshake()
        except ssl.SSLWantReadError:
            pass
        if server_out.pending:
            client.data_received(server_out.read())
        if handshake.done():
            break
    await handshake
    return client, server, server_out


def stanza(seq: int, padding: int) -> bytes:
    return (
        b"<message from='room@conference.localhost/n' type='groupchat' id='m%d'>"
        b"<body xml:lang='en'>bm%d</body><x>%s</x></message>" % (seq, seq, b"p" * padding)
    )


@pytest.mark.parametrize("seed", range(4))
async def test_every_body_is_counted_once_however_the_bytes_are_cut(
    server_context: ssl.SSLContext, seed: int
) -> None:
    rnd = random.Random(seed)
    count = 1500
    client, server, server_out = await connected(server_context)
    tracker = loadgen.Tracker(count)
    for _ in range(count):
        tracker.new(1)
    # Received while setting up: one whole message and the start of the next one.
    first = stanza(1, 0)
    server.write(b"<presence/>" + stanza(0, 0) + first[:100])
    client.data_received(server_out.read())
    client.count(tracker)
    plain = first[100:] + b"".join(
        stanza(seq, rnd.choice((0, 10, 500, 20000))) for seq in range(2, count)
    )
    cipher = bytearray()
    at = 0
    while at < len(plain):
        size = rnd.choice((1, 6, 60, 400, 5000, 16384))
        server.write(plain[at : at + size])
        at += size
        cipher += server_out.read()
        if rnd.random() < 0.3:
            while cipher:
                cut = rnd.choice((1, 7, 100, 1500, 70000))
                client.data_received(bytes(cipher[:cut]))
                del cipher[:cut]
    client.data_received(bytes(cipher))
    assert (client.unique, client.duplicates, client.errors) == (count, 0, 0)
    assert tracker.completed == count
    assert len(tracker.latencies) == count


async def test_duplicates_and_error_stanzas_are_reported(server_context: ssl.SSLContext) -> None:
    client, server, server_out = await connected(server_context)
    tracker = loadgen.Tracker(4)
    for _ in range(4):
        tracker.new(1)
    client.count(tracker)
    server.write(stanza(0, 0) + stanza(1, 0) + stanza(1, 0))
    client.data_received(server_out.read())
    assert (client.unique, client.duplicates, client.errors) == (2, 1, 0)
    error = b"<message type='error' id='m2'><body>bm2</body><error type='cancel'/></message>"
    for cut in (5, 10, 20, 30, 60):  # the start tag cut in two by the end of a read
        errors = client.errors
        server.write(error[:cut])
        client.data_received(server_out.read())
        server.write(error[cut:])
        client.data_received(server_out.read())
        assert client.errors > errors, cut


async def test_close_ends_the_stream_then_waits_for_the_servers_close_notify(
    server_context: ssl.SSLContext,
) -> None:
    client, server, server_out = await connected(server_context)
    client.discard()
    server.write(b"<presence/>")  # dropped, yet decrypted: the stream stays whole
    client.data_received(server_out.read())
    pipe = client.transport
    assert isinstance(pipe, Pipe)
    client.close()
    assert server.read(1000) == b"</stream:stream>"
    assert server.read(1000) == b""  # then close_notify
    assert pipe.ended == ""  # waiting for the server's
    server.write(b"</stream:stream>")
    server.unwrap()
    client.data_received(server_out.read())
    assert pipe.ended == "closed"
    client.connection_lost(None)
    assert client.shutdown_timer is None
