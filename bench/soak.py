"""Soak test: mixed load plus hostile clients against a real server process, on loopback only.

Well-behaved members chat (one-to-one and in rooms through account-join), reconnect now and
then, and count what they receive; hostile workers cycle through the attacks of THREAT_MODEL.md
(oversized and deeply nested stanzas, billion laughs, external entities, invalid UTF-8, NUL,
spoofed senders, password guessing, connection floods, slowloris, clients that never read,
registration floods, inbound floods). The server's resident memory and open files are sampled
throughout. At the end every member logs in once more to collect what waited offline.

    .venv/bin/python bench/soak.py --duration 300 --members 20

Bounded: at most 1800 s and 200 members; everything binds to 127.0.0.0/8. Exit status 0 when no
well-behaved message was lost, no well-behaved client saw an unexpected error, every attack got
the answer THREAT_MODEL.md promises, the server survived, and memory stayed flat (see --max-growth).
Results of a run are in docs/soak.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minimix.storage.database import Database  # noqa: E402
from minimix.storage.stores import AccountStore  # noqa: E402
from tests.security.hostile import (  # noqa: E402
    CLIENT,
    REGISTER_NS,
    SM_NS,
    STREAM,
    Ended,
    Peer,
    condition_of,
    sasl_condition,
)
from tests.support import ServerProcess, write_config  # noqa: E402

MAX_DURATION = 1800.0
MAX_MEMBERS = 200
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
HEADER = (
    f"<stream:stream xmlns='jabber:client' xmlns:stream='{STREAM}' to='localhost' version='1.0'>"
)


@dataclass
class Target:
    port: int
    ca: Path


@dataclass
class Stats:
    sent: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)
    group_sent: set[str] = field(default_factory=set)
    group_received: set[str] = field(default_factory=set)
    sessions: int = 0
    member_errors: Counter[str] = field(default_factory=Counter)
    attacks: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss kB, fds)
    pings: list[float] = field(default_factory=list)  # round trips of a well-behaved ping, s

    def odd(self, kind: str, detail: str) -> None:
        self.unexpected[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------------- well-behaved members


class Member:
    """One account with one client at a time: chats, joins rooms, reconnects."""

    def __init__(self, name: str, everyone: list[str], rooms: list[str], stats: Stats) -> None:
        self.name = name
        self.everyone = everyone
        self.rooms = rooms
        self.stats = stats
        self.handled = 0  # XEP-0198 count of stanzas received on the current stream

    async def reader(self, peer: Peer) -> None:
        while True:
            el = await peer.recv(timeout=3600)
            tag = el.tag
            if tag == f"{{{SM_NS}}}r":
                peer.send(f"<a xmlns='{SM_NS}' h='{self.handled}'/>")
                continue
            if not tag.startswith(f"{{{CLIENT}}}"):
                continue
            self.handled += 1
            body = el.findtext(f"{{{CLIENT}}}body") or ""
            if el.get("type") == "error":
                if not body.startswith("soak|"):
                    self.stats.member_errors[condition_of(el) or "error"] += 1
                else:
                    self.stats.odd("member message refused", ET.tostring(el, "unicode")[:300])
            elif body.startswith("soak|chat|"):
                self.stats.received.add(body)
            elif body.startswith("soak|group|"):
                self.stats.group_received.add(body)

    async def session(self, target: Target, seconds: float, stop: asyncio.Event, n: int) -> None:
        peer = await Peer().login(target, self.name, resource=f"s{n}")  # type: ignore[arg-type]
        self.stats.sessions += 1
        peer.send(f"<enable xmlns='{SM_NS}'/>")
        assert (await peer.recv()).tag == f"{{{SM_NS}}}enabled"
        self.handled = 0
        peer.send("<presence/>")
        for room in self.rooms:
            peer.send(f"<presence to='{room}/{self.name}'><x xmlns='{MUC}'/></presence>")
        reading = asyncio.ensure_future(self.reader(peer))
        end = time.monotonic() + seconds
        count = 0
        try:
            while time.monotonic() < end and not stop.is_set() and not reading.done():
                count += 1
                if count % 5 == 0 and self.rooms:
                    body = f"soak|group|{self.name}|{n}|{count}"
                    self.stats.group_sent.add(body)
                    room = random.choice(self.rooms)
                    peer.send(
                        f"<message to='{room}' type='groupchat'><body>{body}</body></message>"
                    )
                else:
                    to = random.choice([m for m in self.everyone if m != self.name])
                    body = f"soak|chat|{self.name}|{n}|{count}"
                    self.stats.sent.add(body)
                    peer.send(
                        f"<message to='{to}@localhost' type='chat'><body>{body}</body></message>"
                    )
                await peer.drain()
                await asyncio.sleep(random.uniform(0.1, 0.4))
            if reading.done() and not stop.is_set():
                self.stats.odd("member disconnected", repr(reading.exception()))
            peer.send("</stream:stream>")
            await peer.drain()
            with contextlib.suppress(Ended, TimeoutError, ConnectionError):
                await asyncio.wait_for(reading, 5)
        finally:
            reading.cancel()
            peer.close()

    async def run(self, target: Target, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await self.session(target, random.uniform(20, 60), stop, n)
            except Exception as exc:  # a member must never fail: count it
                self.stats.odd("member session failed", repr(exc))
            await asyncio.sleep(random.uniform(0.5, 2))

    async def collect(self, target: Target) -> None:
        """Log in once more and take what waited in the offline store."""
        peer = await Peer().login(target, self.name, resource="collect")  # type: ignore[arg-type]
        peer.send("<presence/>")
        with contextlib.suppress(TimeoutError, Ended):
            while True:
                el = await peer.recv(timeout=3)
                body = el.findtext(f"{{{CLIENT}}}body") or ""
                if body.startswith("soak|chat|"):
                    self.stats.received.add(body)
        peer.close()


# ---------------------------------------------------------------------- hostile clients


Attack = Callable[[Target, Stats], Awaitable[None]]


async def expect_stream_error(peer: Peer, wanted: set[str], stats: Stats, kind: str) -> None:
    try:
        got = await peer.stream_error(timeout=30)
    except (Ended, TimeoutError) as exc:
        got = f"no stream error ({exc!r})"
    if got not in wanted:
        stats.odd(kind, got)
    peer.close()


async def logged_in(target: Target, user: str = "mallory") -> Peer:
    return await Peer().login(target, user, resource=f"h{random.randrange(10**9)}")  # type: ignore[arg-type]


async def oversized(target: Target, stats: Stats) -> None:
    p = await logged_in(target)
    p.send("<message to='m0@localhost'><body>" + "A" * 300_000 + "</body></message>")
    await expect_stream_error(p, {"policy-violation"}, stats, "oversized")


async def deep(target: Target, stats: Stats) -> None:
    p = await logged_in(target)
    p.send("<message to='m0@localhost'>" + "<x xmlns='urn:x'>" * 200)
    await expect_stream_error(p, {"policy-violation"}, stats, "deep")


async def laughs(target: Target, stats: Stats) -> None:
    dtd = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    p = Peer()
    await p.connect(target.port, local_ip="127.0.0.5")
    p._new_stream()
    p.send(f"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY l0 'lol'>{dtd}]>{HEADER}")
    await expect_stream_error(p, {"restricted-xml"}, stats, "billion laughs")


async def xxe(target: Target, stats: Stats) -> None:
    p = Peer()
    await p.connect(target.port, local_ip="127.0.0.5")
    p._new_stream()
    p.send(f"<?xml version='1.0'?><!DOCTYPE s [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>{HEADER}")
    await expect_stream_error(p, {"restricted-xml"}, stats, "external entity")


async def bad_bytes(target: Target, stats: Stats) -> None:
    p = await logged_in(target)
    junk = random.choice([b"\xc0\xaf", b"\xed\xa0\x80", b"\x00", b"\x1b", b"&#0;", b"\xff"])
    p.send(b"<message to='m0@localhost'><body>x" + junk + b"</body></message>")
    await expect_stream_error(p, {"not-well-formed"}, stats, "invalid characters")


async def smuggle(target: Target, stats: Stats) -> None:
    p = await logged_in(target)
    p.send("<message to='m0@localhost'><x xmlns='urn:a}b'/></message>")
    await expect_stream_error(p, {"not-well-formed"}, stats, "namespace with a brace")


async def spoof(target: Target, stats: Stats) -> None:
    p = await logged_in(target)
    p.send("<message from='m0@localhost/s1' to='m1@localhost'><body>forged</body></message>")
    await expect_stream_error(p, {"invalid-from"}, stats, "spoofed from")


async def guess(target: Target, stats: Stats) -> None:
    ip = f"127.0.0.{random.randint(10, 30)}"
    p = await Peer().secure(target.port, target.ca, local_ip=ip)
    for _ in range(5):
        got = sasl_condition(await p.auth_plain("mallory", f"guess{random.random()}"))
        if got not in ("not-authorized", "temporary-auth-failure"):
            stats.odd("password guessing", got or "success?")
    p.close()


async def slowloris(target: Target, stats: Stats) -> None:
    p = Peer()
    await p.connect(target.port, local_ip="127.0.0.6")
    await p.start()
    await expect_stream_error(p, {"connection-timeout"}, stats, "slowloris")


async def connection_flood(target: Target, stats: Stats) -> None:
    peers = []
    accepted = 0
    for _ in range(80):
        p = Peer()
        await p.connect(target.port, local_ip="127.0.0.7")
        p.open_stream()
        peers.append(p)
    for p in peers:
        with contextlib.suppress(Ended, TimeoutError):
            el = await p.recv(timeout=5)
            if el.tag == f"{{{STREAM}}}features":
                accepted += 1
            elif el.tag != f"{{{STREAM}}}error":
                stats.odd("connection flood", el.tag)
    for p in peers:
        p.close()
    if accepted > 64:  # limits.unauthenticated_per_ip
        stats.odd("connection flood", f"{accepted} unauthenticated connections at once")


async def sloth(target: Target, stats: Stats) -> None:
    """Asks for large archive pages and never reads the answers: its requests wait until it
    reads, and after a minute of not reading it is disconnected."""
    p = await Peer().login(target, "sloth", resource=f"h{random.randrange(10**9)}", rcvbuf=4096)  # type: ignore[arg-type]
    for i in range(100):
        p.send(
            f"<iq type='set' id='q{i}'><query xmlns='urn:xmpp:mam:2'>"
            "<set xmlns='http://jabber.org/protocol/rsm'><max>250</max></set></query></iq>"
        )
        await p.drain()
        await asyncio.sleep(0.05)
        if p.writer is not None and p.writer.is_closing():
            break
    await asyncio.sleep(65)  # the server's patience with a client that does not read
    await expect_stream_error(p, {"resource-constraint"}, stats, "client that never reads")


async def register_flood(target: Target, stats: Stats) -> None:
    p = await Peer().secure(target.port, target.ca, local_ip="127.0.0.8")
    outcomes = Counter()
    for _ in range(8):
        name = f"spam{random.randrange(10**9)}"
        reply = await p.iq(
            f"<iq type='set'><query xmlns='{REGISTER_NS}'><username>{name}</username>"
            "<password>pw</password></query></iq>"
        )
        outcomes["ok" if reply.get("type") == "result" else condition_of(reply)] += 1
    if set(outcomes) - {"ok", "resource-constraint"}:
        stats.odd("registration flood", str(dict(outcomes)))
    p.close()


async def inbound_flood(target: Target, stats: Stats) -> None:
    p = await logged_in(target)
    p.send("".join(f"<message to='mallory@localhost'><body>{'F' * 1000}</body></message>" * 2000))
    await asyncio.sleep(5)
    if p.ended:
        stats.odd("inbound flood", "the flooder was disconnected instead of slowed")
    p.abort()


ATTACKS: dict[str, Attack] = {
    "oversized stanza": oversized,
    "deep nesting": deep,
    "billion laughs": laughs,
    "external entity": xxe,
    "invalid characters": bad_bytes,
    "namespace smuggling": smuggle,
    "spoofed from": spoof,
    "password guessing": guess,
    "slowloris": slowloris,
    "connection flood": connection_flood,
    "client that never reads": sloth,
    "registration flood": register_flood,
    "inbound flood": inbound_flood,
}


async def prober(target: Target, stats: Stats, stop: asyncio.Event) -> None:
    """A well-behaved client pinging the server every second: the latency everyone sees."""
    peer = await logged_in(target, "prober")
    while not stop.is_set():
        t = time.monotonic()
        try:
            await peer.iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", 60)
            stats.pings.append(time.monotonic() - t)
        except (TimeoutError, Ended) as exc:
            stats.odd("prober", repr(exc))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    peer.close()


async def hostile_worker(
    target: Target, stats: Stats, stop: asyncio.Event, attacks: list[str]
) -> None:
    while not stop.is_set():
        name = random.choice(attacks)
        stats.attacks[name] += 1
        try:
            await asyncio.wait_for(ATTACKS[name](target, stats), 150)
        except Exception as exc:
            stats.odd(name, f"attack failed to run: {exc!r}")
        await asyncio.sleep(random.uniform(0.2, 1.0))


# ---------------------------------------------------------------------- the run


async def sample(pid: int, stats: Stats, stop: asyncio.Event, start: float) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            stats.samples.append((time.monotonic() - start, rss_kb(pid), fd_count(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)


async def soak(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="minimix-soak-"))
    data = work / "data"
    data.mkdir()
    members = [f"m{i}" for i in range(args.members)]
    rooms = [f"room{i}@conference.localhost" for i in range(max(1, args.members // 5))]
    db = Database(data / "minimix.sqlite3")
    accounts = AccountStore(db)
    for user in (*members, "mallory", "sloth", "host", "prober"):
        accounts.create(user, "secret")
    db.close()
    config = write_config(
        work / "minimix.toml",
        data,
        registration={"open": True, "throttle_per_ip": 5},
        limits={
            "unauthenticated_per_ip": 64,
            "auth_failures_per_ip": 10,
            "auth_failures_per_account": 1000,  # members share no account with mallory
            "unauthenticated_timeout": 10,
        },
    )
    proc = ServerProcess(config, data)
    proc.start()
    assert proc.proc is not None
    pid = proc.proc.pid
    target = Target(proc.ports["c2s"], data / "tls" / "self-signed.crt")
    stats = Stats()
    stop = asyncio.Event()
    started = time.monotonic()
    # The sloth's archive: enough messages that each page it asks for is large.
    feeder = await logged_in(target)
    for i in range(300):
        feeder.send(
            f"<message to='sloth@localhost' type='chat'><body>{'page ' * 60}{i}</body></message>"
        )
    await feeder.drain()
    await asyncio.sleep(1)
    feeder.close()
    host = await logged_in(target, "host")
    for room in rooms:  # instant rooms (XEP-0045 §10.1.2), kept alive by the host
        host.send(f"<presence to='{room}/host'><x xmlns='{MUC}'/></presence>")
        await host.recv_until(lambda el, room=room: el.get("from") == f"{room}/host")
        done = await host.iq(
            f"<iq type='set' to='{room}'><query xmlns='{MUC}#owner'>"
            "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
        )
        assert done.get("type") == "result", ET.tostring(done)
    everyone = list(members)
    room_sets = [random.sample(rooms, k=min(2, len(rooms))) for _ in members]
    people = [Member(m, everyone, r, stats) for m, r in zip(members, room_sets, strict=True)]
    tasks = [asyncio.ensure_future(p.run(target, stop)) for p in people]
    attacks = args.attacks or list(ATTACKS)
    tasks += [
        asyncio.ensure_future(hostile_worker(target, stats, stop, attacks))
        for _ in range(args.hostile)
    ]
    tasks.append(asyncio.ensure_future(prober(target, stats, stop)))
    sampler = asyncio.ensure_future(sample(pid, stats, stop, started))
    await asyncio.sleep(args.duration)
    stop.set()
    await asyncio.wait(tasks, timeout=120)
    await asyncio.sleep(5)  # deliveries in flight
    for p in people:
        try:
            await p.collect(target)
        except Exception as exc:
            stats.odd("final collection failed", repr(exc))
    await sampler
    host.close()
    await asyncio.sleep(35)  # connections being closed settle (TLS shutdown waits up to 30 s)
    settled_fds = fd_count(pid) if proc.proc is not None and proc.proc.poll() is None else 0
    alive = proc.proc is not None and proc.proc.poll() is None
    final_rss = rss_kb(pid) if alive else 0
    proc.stop()
    log = (data / "server.log").read_text(errors="replace")
    log_errors = sum(1 for line in log.splitlines() if " ERROR " in line or "Traceback" in line)
    warm = [s for s in stats.samples if s[0] >= args.warmup] or stats.samples
    lost = stats.sent - stats.received
    growth = final_rss - warm[0][1] if warm and alive else 0
    return {
        "duration_s": args.duration,
        "members": args.members,
        "hostile_workers": args.hostile,
        "member_sessions": stats.sessions,
        "chat_sent": len(stats.sent),
        "chat_lost": len(lost),
        "lost_examples": sorted(lost)[:5],
        "group_sent": len(stats.group_sent),
        "group_seen": len(stats.group_sent & stats.group_received),
        "member_stanza_errors": dict(stats.member_errors),
        "attacks": dict(stats.attacks),
        "unexpected": dict(stats.unexpected),
        "unexpected_examples": stats.examples,
        "server_alive": alive,
        "server_log_errors": log_errors,
        "rss_kb_after_warmup": warm[0][1] if warm else 0,
        "rss_kb_end": final_rss,
        "rss_kb_max": max((s[1] for s in stats.samples), default=0),
        "rss_growth_kb": growth,
        "fds_after_warmup": warm[0][2] if warm else 0,
        "fds_end": stats.samples[-1][2] if stats.samples else 0,
        "fds_settled": settled_fds,
        "ping_ms": _percentiles(stats.pings),
        "samples": [list(s) for s in stats.samples],
        "data_dir": str(work),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def pick(q: float) -> float:
        return round(1000 * v[min(len(v) - 1, int(q * len(v)))], 1)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(1000 * v[-1], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load (max 1800)")
    ap.add_argument("--members", type=int, default=20, help="well-behaved accounts (max 200)")
    ap.add_argument("--hostile", type=int, default=4, help="hostile workers")
    ap.add_argument("--warmup", type=float, default=60.0, help="memory baseline after this")
    ap.add_argument("--max-growth", type=int, default=30_000, help="kB of RSS growth allowed")
    ap.add_argument("--json", type=Path, help="write the full result here")
    ap.add_argument("--attacks", nargs="*", choices=list(ATTACKS), help="only these attacks")
    args = ap.parse_args()
    args.duration = min(max(args.duration, 10.0), MAX_DURATION)
    args.members = min(max(args.members, 2), MAX_MEMBERS)
    args.hostile = min(max(args.hostile, 0), 20)
    result = asyncio.run(soak(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    ok = (
        result["chat_lost"] == 0
        and not result["unexpected"]
        and result["server_alive"]
        and int(result["rss_growth_kb"]) <= args.max_growth  # type: ignore[call-overload]
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
