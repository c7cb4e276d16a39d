"""Crash safety: SIGKILL the real server process in the middle of a message load, restart it,
and check that nothing it had acknowledged is missing (XEP-0198 ``<a h>``, or the reflection of
a group chat message to its sender): each such message is in the archive or the offline store,
and SQLite is intact."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from minimix.storage.database import Database
from minimix.storage.stores import AccountStore
from tests.security.hostile import CLIENT, SM_NS, Ended, Peer
from tests.security.rooms import MUC_OWNER_NS, join_room, muc_missing
from tests.support import ServerProcess, write_config

BODY = re.compile(r"crash-[a-z0-9]+-\d+")


class Target:
    """Where a :class:`Peer` logs in: the server process's client port and certificate."""

    def __init__(self, proc: ServerProcess) -> None:
        self.port = proc.ports["c2s"]
        self.ca = proc.data_dir / "tls" / "self-signed.crt"


@contextlib.contextmanager
def server(tmp_path: Path, *users: str, **overrides: object) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    config = write_config(tmp_path / "minimix.toml", data, **overrides)
    db = Database(data / "minimix.sqlite3")
    accounts = AccountStore(db)
    for user in users:
        accounts.create(user, "secret")
    db.close()
    proc = ServerProcess(config, data)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def login(proc: ServerProcess, user: str, resource: str = "load") -> Peer:
    return await Peer().login(Target(proc), user, resource=resource)


def stored_bodies(db_path: Path) -> tuple[set[str], set[str], str]:
    """Bodies in the archive and in the offline store, and SQLite's integrity verdict."""
    con = sqlite3.connect(db_path)
    try:
        verdict = con.execute("PRAGMA integrity_check").fetchone()[0]
        archived = {
            m for (text,) in con.execute("SELECT stanza FROM archive") for m in BODY.findall(text)
        }
        offline = {
            m for (text,) in con.execute("SELECT stanza FROM offline") for m in BODY.findall(text)
        }
    finally:
        con.close()
    return archived, offline, verdict


async def sm_load(peer: Peer, name: str, to: str, acked: list[str], errors: set[str]) -> None:
    """Send numbered messages, each with an ack request; ``acked`` holds the acknowledged ones
    in order (XEP-0198 counts handled stanzas: h=n covers the first n)."""
    peer.send(f"<enable xmlns='{SM_NS}'/>")
    assert (await peer.recv()).tag == f"{{{SM_NS}}}enabled"
    sent: list[str] = []

    async def reader() -> None:
        while True:
            el = await peer.recv(timeout=30)
            if el.tag == f"{{{SM_NS}}}a":
                h = int(el.get("h", "0"))
                acked.extend(sent[len(acked) : h])
            elif el.tag == f"{{{SM_NS}}}r":
                peer.send(f"<a xmlns='{SM_NS}' h='0'/>")
            elif el.tag == f"{{{CLIENT}}}message" and el.get("type") == "error":
                errors.add(el.findtext(f"{{{CLIENT}}}body") or "")

    reading = asyncio.ensure_future(reader())
    try:
        for n in range(100_000):
            body = f"crash-{name}-{n}"
            sent.append(body)
            peer.send(
                f"<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"
                f"<r xmlns='{SM_NS}'/>"
            )
            await peer.drain()
            await asyncio.sleep(0.001)
            if reading.done():
                break
    except (ConnectionError, Ended):
        pass
    finally:
        reading.cancel()
        with contextlib.suppress(BaseException):
            await reading


async def kill_after(proc: ServerProcess, acked: list[list[str]], count: int) -> None:
    while sum(len(a) for a in acked) < count:
        await asyncio.sleep(0.01)
    proc.stop(signal.SIGKILL)


async def test_sigkill_during_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    users = ("s1", "s2", "s3", "away", "here")
    with server(tmp_path, *users, limits={"offline_per_account": 100_000}) as proc:
        here = await login(proc, "here")
        here.send("<presence/>")
        senders = [await login(proc, s) for s in ("s1", "s2", "s3")]
        acked: list[list[str]] = [[], [], []]
        errors: set[str] = set()
        targets = ["away@localhost", "here@localhost/load", "away@localhost"]
        loads = [
            sm_load(p, name, to, acked[i], errors)
            for i, (p, name, to) in enumerate(
                zip(senders, ("s1", "s2", "s3"), targets, strict=True)
            )
        ]
        await asyncio.wait_for(asyncio.gather(*loads, kill_after(proc, acked, 300)), timeout=60)
        assert proc.proc is None  # killed, not stopped cleanly
        archived, offline, verdict = stored_bodies(proc.data_dir / "minimix.sqlite3")
        assert verdict == "ok"
        confirmed = {b for a in acked for b in a} - errors
        assert len(confirmed) >= 300
        missing = {b for b in confirmed if b not in archived and b not in offline}
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        # Messages for the offline account are all in its offline store.
        for i in (0, 2):
            assert set(acked[i]) - errors <= offline

        # After a restart, the offline account receives every one of them.
        proc.start()
        away = await login(proc, "away", resource="back")
        away.send("<presence/>")
        expected = (set(acked[0]) | set(acked[2])) - errors
        got: set[str] = set()
        while not expected <= got:
            el = await away.next("message", timeout=15)
            got.add(el.findtext(f"{{{CLIENT}}}body") or "")
        away.close()


@pytest.mark.skipif(muc_missing(), reason="the group chat service is not wired yet")
async def test_sigkill_loses_no_reflected_room_message(tmp_path: Path) -> None:
    with server(tmp_path, "owner", "talker") as proc:
        room = "crashroom@conference.localhost"
        owner = await login(proc, "owner")
        assert (await join_room(owner, room, "owner")).get("type") != "error"
        # Accept the default configuration (an instant room) if the room waits for it.
        await owner.iq(
            f"<iq type='set' to='{room}'><query xmlns='{MUC_OWNER_NS}'>"
            "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
        )
        talker = await login(proc, "talker")
        assert (await join_room(talker, room, "talker")).get("type") != "error"
        reflected: list[str] = []

        async def talk() -> None:
            try:
                for n in range(100_000):
                    body = f"crash-room-{n}"
                    talker.send(
                        f"<message to='{room}' type='groupchat' id='{body}'><body>{body}</body>"
                        "</message>"
                    )
                    await talker.drain()
                    await asyncio.sleep(0.002)
                    if talker.ended:
                        break
            except (ConnectionError, Ended):
                pass

        async def listen() -> None:
            try:
                while True:
                    el = await talker.next("message", timeout=30)
                    body = el.findtext(f"{{{CLIENT}}}body") or ""
                    if el.get("type") == "groupchat" and BODY.fullmatch(body):
                        reflected.append(body)
            except (Ended, TimeoutError):
                pass

        async def kill() -> None:
            while len(reflected) < 100:
                await asyncio.sleep(0.01)
            proc.stop(signal.SIGKILL)

        await asyncio.wait_for(asyncio.gather(talk(), listen(), kill()), timeout=60)
        archived, _offline, verdict = stored_bodies(proc.data_dir / "minimix.sqlite3")
        assert verdict == "ok"
        missing = set(reflected) - archived
        assert not missing, f"{len(missing)} reflected messages lost, e.g. {sorted(missing)[:5]}"
        proc.start()
        # The room is still there with its history after the restart.
        back = await login(proc, "talker", resource="back")
        joined = await join_room(back, room, "talker")
        assert joined.get("type") != "error", ET.tostring(joined)
        back.close()
