"""A second client attaching to a big room its account is in, in one process without sockets.

N accounts join one room (one client each, over in-memory transports); then another client of
one of those accounts joins the room with the same nick (account-join attaches it to the
account's occupancy): each sample another account's, or with ``--same-account`` always the
same account's. Timed from feeding its join presence to the server to the server writing
its own presence (status 110), as the benchmark's ``attach`` scenario times it over TLS::

    .venv/bin/python bench/profile_attach.py --occupants 500 --samples 20
    .venv/bin/python bench/profile_attach.py --occupants 500 --cprofile 30
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.profile_inprocess import MUC, ROOM, Client, run_on_uvloop
from minimix.app import Server
from minimix.config import from_dict


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        config = from_dict(
            {
                "domain": "localhost",
                "data_dir": data_dir,
                "log_level": "warning",
                "c2s": {"host": "127.0.0.1", "port": 0, "direct_tls_port": 0},
                "muc": {"domain": "conference.localhost", "default_history": 0},
                "http": {"port": 0},
                "limits": {
                    "rate": 1e9,
                    "burst": 1_000_000_000,
                    "unauthenticated_per_ip": 1_000_000,
                    "max_output_buffer": 1 << 26,
                    "occupants_per_room": 100_000,
                },
            },
            "bench",
        )
        server = Server(config)
        await server.start()
        try:
            for i in range(args.occupants):
                server.accounts.create(f"u{i}", "secret")
            clients = [Client(server, f"u{i}", "first") for i in range(args.occupants)]
            for i in range(0, len(clients), 50):
                await asyncio.gather(*(c.login() for c in clients[i : i + 50]))
            for n, c in enumerate(clients):
                await c.join(c.user, create=n == 0)
            for c in clients:
                c.transport.keep = False
                c.transport.out.clear()
            timings: list[float] = []
            cpu: list[float] = []  # CPU time of the one thread: what other processes disturb less
            profiler = cProfile.Profile() if args.cprofile else None
            for k in range(args.samples):
                user = "u1" if args.same_account else f"u{k % args.occupants}"
                second = Client(server, user, f"second{k}")
                await second.login()
                second.transport.take()
                join = (
                    f"<presence to='{ROOM}/{user}'>"
                    f"<x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>"
                )
                if profiler is not None:
                    profiler.enable()
                start = time.perf_counter()
                cpu_start = time.thread_time()
                second.send(join)
                seen = b""
                while b'code="110"' not in seen:
                    await asyncio.sleep(0)
                    seen += second.transport.take()
                cpu.append((time.thread_time() - cpu_start) * 1000)
                timings.append((time.perf_counter() - start) * 1000)
                if profiler is not None:
                    profiler.disable()
                presences = seen.count(b"<presence")
                await asyncio.sleep(0.05)
            if profiler is not None:
                stats = pstats.Stats(profiler)
                stats.sort_stats("tottime").print_stats(args.cprofile)
                stats.sort_stats("cumulative").print_stats(args.cprofile)
            return {
                "occupants": args.occupants,
                "samples": args.samples,
                "attach_ms_min": round(min(timings), 2),
                "attach_ms_p50": round(statistics.median(timings), 2),
                "attach_cpu_ms_min": round(min(cpu), 2),
                "attach_cpu_ms_p50": round(statistics.median(cpu), 2),
                "presences_received": presences,
            }
        finally:
            await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, default=500)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--cprofile", type=int, default=0, help="print the top N functions")
    parser.add_argument(
        "--same-account",
        action="store_true",
        help="every sample attaches another client of the same account (a client coming back)",
    )
    args = parser.parse_args()
    print(run_on_uvloop(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
