"""When client connections write: once per loop turn, and sooner on a quiet server."""

from __future__ import annotations

import asyncio

from minimix.core import c2s
from minimix.core.c2s import Output


class FakeConnection:
    def __init__(self, log: list[tuple[str, int]], n: int) -> None:
        self.log = log
        self.n = n

    def _write_early(self) -> None:
        self.log.append(("early", self.n))

    def _flush_queued(self) -> None:
        self.log.append(("end", self.n))


async def test_a_quiet_server_writes_every_few_connections_before_the_turn_ends() -> None:
    output = Output()
    log: list[tuple[str, int]] = []
    conns = [FakeConnection(log, n) for n in range(40)]
    for conn in conns:
        output.queue(conn)  # type: ignore[arg-type]
    early = [n for kind, n in log if kind == "early"]
    assert early == list(range(2 * c2s._EARLY_WRITES))  # in order, in groups, before the end
    await asyncio.sleep(0)
    assert [n for kind, n in log if kind == "end"] == list(range(2 * c2s._EARLY_WRITES, 40))
    output.stop()


async def test_a_busy_server_writes_each_connection_once_at_the_end_of_the_turn() -> None:
    output = Output()
    output.busy = True
    log: list[tuple[str, int]] = []
    for n in range(40):
        output.queue(FakeConnection(log, n))  # type: ignore[arg-type]
    assert log == []
    await asyncio.sleep(0)
    assert log == [("end", n) for n in range(40)]
    output.stop()


async def test_the_load_is_sampled_while_writing_and_no_longer_when_idle() -> None:
    output = Output()
    output.queue(FakeConnection([], 0))  # type: ignore[arg-type]
    spin_until = asyncio.get_running_loop().time() + 2.5 * c2s._LOAD_INTERVAL
    while asyncio.get_running_loop().time() < spin_until:  # a busy thread
        pass
    await asyncio.sleep(0.01)
    assert output.busy
    await asyncio.sleep(
        8 * c2s._LOAD_INTERVAL
    )  # idle: the server is quiet again, and sampling stops
    assert not output.busy
    assert output._timer is None
    output.stop()
