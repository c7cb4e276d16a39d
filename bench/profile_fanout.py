"""Group fan-out against one server, with an optional sampling profile of the server process.

Starts a fresh server with the benchmark configuration (``bench/servers.py``), runs the group
fan-out scenario of ``bench/loadgen.py`` (A accounts x D clients in one room, S senders, closed
loop) once per shape, and prints the server's CPU microseconds per delivery, deliveries per
second, the room's stanzas per message and whether every client got every message exactly once::

    .venv/bin/python bench/profile_fanout.py --shape 50x3 --shape 10x1 --duration 8
    .venv/bin/python bench/profile_fanout.py --shape 50x3 --profile /tmp/fanout   # py-spy
    .venv/bin/python bench/profile_fanout.py --server prosody --shape 50x3

``--profile PREFIX`` samples the server with py-spy (``.venv/bin/pip install py-spy``) during the
closed loop of each shape and writes ``PREFIX-AxD.txt`` (collapsed stacks) and prints the
functions with the most samples, by own time and by time including callees. Samples include the
time the server waits (``Runner.run`` on its own is the event loop idle; a database call that
waits for the disk shows as that call).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen, run, servers

PY_SPY = Path(sys.executable).parent / "py-spy"


def summarize(collapsed: Path, top: int) -> str:
    """The frames with the most samples: own time (leaf) and total (anywhere in the stack)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples"]
    out.append("-- own --")
    out += [f"{n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    out.append("-- total --")
    out += [f"{n / samples:6.1%}  {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


async def one_shape(
    handle: servers.ServerHandle,
    accounts: int,
    devices: int,
    duration: float,
    senders: int,
    profile: str | None,
    top: int,
) -> dict[str, Any]:
    receivers = accounts * devices
    window = max(2, min(32, round(1000 / receivers)))
    spy: subprocess.Popen[bytes] | None = None
    out_path: Path | None = None
    if profile:
        out_path = Path(f"{profile}-{accounts}x{devices}.txt")
        # Started now; its samples include the set-up, which a long --duration outweighs.
        spy = subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(handle.pid),
                "--format",
                "raw",
                "--nonblocking",
                "--idle",
                "--rate",
                "200",
                "-o",
                str(out_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        result = await loadgen.group_fanout(
            handle,
            accounts=accounts,
            devices=devices,
            senders=senders,
            window=window,
            duration=duration,
            rate=max(0.5, 2000.0 / receivers),  # as bench/run.py: 2,000 deliveries/s
            rate_seconds=3.0,
        )
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
    closed = result["closed_loop"]
    fixed = result.get("fixed_rate", {})
    summary = {
        "shape": f"{accounts}x{devices}",
        "deliveries_per_s": closed["deliveries_per_s"],
        "cpu_us_per_delivery": round(closed["server_cpu_s_per_1k_deliveries"] * 1000, 1),
        "latency_p99_ms": closed["latency"]["p99_ms"],
        "fixed_rate_p99_ms": fixed.get("latency", {}).get("p99_ms"),
        "room_stanzas_per_message": closed.get("room_stanzas_per_message"),
        "exactly_once": result["delivery"]["ok"],
        "other_cpu_share": closed["other_cpu_share"],
    }
    print(json.dumps(summary), flush=True)
    if out_path is not None and out_path.exists():
        print(summarize(out_path, top), flush=True)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="minimix", choices=servers.SERVER_NAMES)
    parser.add_argument("--shape", action="append", help="AxD, e.g. 50x3 (repeatable)")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--archive", action="store_true", help="with the archive on")
    parser.add_argument("--profile", help="py-spy output prefix")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    shapes = [tuple(int(x) for x in s.split("x")) for s in (args.shape or ["50x3"])]
    loadgen.raise_fd_limit()
    base = Path(tempfile.mkdtemp(prefix="minimix-profile-"))
    try:
        handle = servers.start_server(args.server, base, archive=args.archive)
        print(f"{args.server} pid {handle.pid} port {handle.port}", flush=True)
        for accounts, devices in shapes:
            loadgen.run_async(
                one_shape(
                    handle, accounts, devices, args.duration, args.senders, args.profile, args.top
                )
            )
            run.settle(handle, 60.0)  # as bench/run.py: until the server is quiet again
    finally:
        servers.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
