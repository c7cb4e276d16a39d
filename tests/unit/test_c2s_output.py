"""When client connections write: once per loop turn, and sooner on a quiet server."""

from __future__ import annotations

import asyncio

import pytest

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


async def test_the_load_is_sampled_while_writing_and_no_longer_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = [0.0]  # the thread's CPU seconds, as the test says they are

    class FakeTime:
        @staticmethod
        def thread_time() -> float:
            return cpu[0]

    monkeypatch.setattr(c2s, "time", FakeTime)
    loop = asyncio.get_running_loop()
    output = Output()
    output.queue(FakeConnection([], 0))  # type: ignore[arg-type]
    assert output._timer is not None  # writing starts the sampling
    # The last second (as if the sample were taken a second ago): 0.9 s on the CPU, busy.
    output._cpu, output._wall = 0.0, loop.time() - 1.0
    cpu[0] = 0.9
    output._sample()
    assert output.busy
    assert output._timer is not None
    # Nothing on the CPU since: quiet, and sampling stops until the next write.
    output._wall = loop.time() - 1.0
    output._sample()
    assert not output.busy
    assert output._timer is None
    output.stop()
