"""Group fan-out through the whole server in one process, without sockets or TLS.

The real :class:`minimix.app.Server` (account-join on, archive on or off) with client
connections over an in-memory transport: every client logs in (PLAIN), binds, sends initial
presence and joins one room; then the senders' group chat is fed to their connections as bytes
and the loop runs until every client has been written every message. What is measured is the
server's own Python work per delivery (parsing, routing, the room, account-join, the archive,
serializing, queueing output): the part that profiling can improve, free of the network's and
the machine's noise::

    .venv/bin/python bench/profile_inprocess.py --shape 50x3 --messages 400
    .venv/bin/python bench/profile_inprocess.py --shape 10x1 --archive --cprofile 25
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minimix.app import Server
from minimix.config import from_dict
from minimix.core.c2s import ClientConnection

OPEN = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
ROOM = "fan@conference.localhost"
MUC = "http://jabber.org/protocol/muc"


class MemoryTransport:
    """What a connection writes, kept in memory; TLS is pretended."""

    framed = False
    peer = "192.0.2.1"
    delivered = 0  # bodies written to all transports

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.bodies = 0
        self.writes = 0
        self.keep = True

    @property
    def is_tls(self) -> bool:
        return True

    @property
    def can_starttls(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.writes += 1
        n = data.count(b"<body>bm")
        self.bodies += n
        MemoryTransport.delivered += n
        if self.keep:
            self.out.append(data)

    def write_frames(self, frames: list[str]) -> None:
        self.write("".join(frames).encode())

    async def start_tls(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def buffered(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def tls_server_end_point(self) -> bytes | None:
        return None

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data


class Client:
    def __init__(self, server: Server, user: str, resource: str) -> None:
        self.transport = MemoryTransport()
        self.conn = ClientConnection(server.services, self.transport)  # type: ignore[arg-type]
        self.user = user
        self.resource = resource

    def send(self, text: str) -> None:
        self.conn.data_received(text.encode())

    async def expect(self, needle: bytes, timeout: float = 10.0) -> bytes:
        seen = b""
        deadline = time.monotonic() + timeout
        while needle not in seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user}/{self.resource}: no {needle!r} in {seen[-400:]!r}")
            await asyncio.sleep(0.001)
            seen += self.transport.take()
        return seen

    async def login(self) -> None:
        self.send(OPEN)
        await self.expect(b"</stream:features>")
        auth = base64.b64encode(f"\0{self.user}\0secret".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>")
        await self.expect(b"<success")
        self.send(OPEN)
        await self.expect(b"</stream:features>")
        self.send(
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{self.resource}</resource></bind></iq>"
        )
        await self.expect(b"</jid>")
        self.send("<presence/>")

    async def join(self, nick: str, create: bool) -> None:
        self.send(
            f"<presence to='{ROOM}/{nick}'>"
            f"<x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>"
        )
        await self.expect(b'code="110"')
        if create:
            self.send(
                f"<iq type='set' to='{ROOM}' id='cfg'>"
                "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
            )
            await self.expect(b'id="cfg"')


async def run(args: argparse.Namespace) -> dict[str, Any]:
    accounts, devices = (int(x) for x in args.shape.split("x"))
    with tempfile.TemporaryDirectory() as data_dir:
        config = from_dict(
            {
                "domain": "localhost",
                "data_dir": data_dir,
                "log_level": "warning",
                "c2s": {"host": "127.0.0.1", "port": 0, "direct_tls_port": 0},
                "muc": {"domain": "conference.localhost", "default_history": 0},
                "http": {"port": 0},
                "account_join": {"enabled": True},
                "archive": {"enabled": args.archive},
                "limits": {
                    "rate": 1e9,
                    "burst": 1_000_000_000,
                    "unauthenticated_per_ip": 1_000_000,
                    "max_output_buffer": 1 << 26,
                    "resources_per_account": 1000,
                },
            },
            "bench",
        )
        server = Server(config)
        await server.start()
        try:
            for i in range(accounts):
                server.accounts.create(f"u{i}", "secret")
            clients = [
                Client(server, f"u{i}", f"d{d}") for i in range(accounts) for d in range(devices)
            ]
            for c in clients:
                await c.login()
            for n, c in enumerate(clients):
                await c.join(c.user, create=n == 0)
            for c in clients:
                c.transport.take()
                c.transport.keep = False
                c.transport.bodies = 0
            MemoryTransport.delivered = 0
            senders = [clients[i * devices] for i in range(min(args.senders, accounts))]
            receivers = len(clients)

            async def burst(first: int, count: int) -> None:
                want = (first + count) * receivers
                for seq in range(first, first + count):
                    senders[seq % len(senders)].send(
                        f"<message to='{ROOM}' type='groupchat' id='m{seq}'>"
                        f"<body>bm{seq}</body></message>"
                    )
                    if seq % args.window == args.window - 1:
                        await asyncio.sleep(0)
                deadline = time.monotonic() + 60
                while MemoryTransport.delivered < want:
                    if time.monotonic() > deadline:
                        raise TimeoutError("deliveries missing")
                    await asyncio.sleep(0)

            await burst(0, 20)  # warm-up
            profiler = cProfile.Profile() if args.cprofile else None
            costs: list[float] = []
            sent = 20
            wall = 0.0
            for _ in range(args.repeat):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                await burst(sent, args.messages)
                if profiler is not None:
                    profiler.disable()
                costs.append(time.process_time() - cpu0)
                wall += time.perf_counter() - wall0
                sent += args.messages
            costs.sort()
            cpu = costs[0]  # the least disturbed run: the machine may be busy with other work
            deliveries = args.messages * receivers
            exact = all(c.transport.bodies == sent for c in clients)
            writes = sum(c.transport.writes for c in clients)
            result = {
                "shape": args.shape,
                "archive": args.archive,
                "messages": args.messages * args.repeat,
                "deliveries": deliveries * args.repeat,
                "cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2),
                "cpu_us_per_delivery_median": round(costs[len(costs) // 2] / deliveries * 1e6, 2),
                "cpu_us_per_message": round(cpu / args.messages * 1e6, 1),
                "deliveries_per_cpu_s": round(deliveries / cpu),
                "wall_s": round(wall, 3),
                "every_client_every_message": exact,
                "writes": writes,
            }
            if profiler is not None:
                stats = pstats.Stats(profiler)
                stats.sort_stats("tottime").print_stats(args.cprofile)
                stats.sort_stats("cumulative").print_stats(args.cprofile)
            return result
        finally:
            await server.stop()


T = TypeVar("T")


def run_on_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop's event loop, as the server does (asyncio's own without it)."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(coro)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="50x3", help="AxD: accounts x clients each")
    parser.add_argument("--messages", type=int, default=200, help="messages per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the cheapest is reported")
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--window", type=int, default=8, help="messages fed per loop turn")
    parser.add_argument("--archive", action="store_true")
    parser.add_argument("--cprofile", type=int, default=0, help="print the top N functions")
    args = parser.parse_args()
    print(run_on_uvloop(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
