"""Drive @xmpp/client (Node.js, tests/node/xmpp_client.mjs) from pytest over WebSocket.

An XMPP client library written by other people, in another language, talking to the server
through ``/xmpp-websocket``: it checks the WebSocket transport against an independent reading of
RFC 7395, SASL and XEP-0198.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "xmpp_client.mjs"

Event = dict[str, Any]


def require_node_client() -> None:
    """Skip when Node.js or the npm test packages are missing (scripts/install-test-deps.sh)."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (scripts/install-test-deps.sh installs it)")
    if not (NODE_DIR / "node_modules" / "@xmpp" / "client").exists():
        pytest.skip("@xmpp/client is not installed (run scripts/install-test-deps.sh)")


class NodeClient:
    """One @xmpp/client session in a Node.js process; events are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self._seen = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls) -> NodeClient:
        require_node_client()
        proc = await asyncio.create_subprocess_exec(
            "node",
            "--experimental-websocket",
            "--no-warnings",
            str(SCRIPT),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))
                self._changed.set()
        self._changed.set()

    async def command(self, op: str, timeout: float = 10.0, **args: Any) -> Event:
        """Send a command; return its ``done`` event (raise on ``failed``)."""
        assert self.proc.stdin is not None
        start = len(self.events)
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        ev = await self.wait(
            lambda e: e.get("event") in ("done", "failed") and e.get("op") == op,
            timeout,
            since=start,
        )
        if ev["event"] == "failed":
            raise RuntimeError(f"{op} failed: {ev.get('condition')} {ev.get('message')}")
        return ev

    async def connect(
        self, http_port: int, username: str, password: str = "secret", resource: str = "node"
    ) -> str:
        await self.command(
            "connect",
            service=f"ws://127.0.0.1:{http_port}/xmpp-websocket",
            domain="localhost",
            username=username,
            password=password,
            resource=resource,
        )
        online = await self.wait(lambda e: e.get("event") == "online", since=0)
        return str(online["jid"])

    async def send(self, xml: str) -> None:
        await self.command("send", xml=xml)

    async def wait(
        self, pred: Callable[[Event], bool], timeout: float = 10.0, since: int | None = None
    ) -> Event:
        """The first event (from ``since``, else from the last one returned) that matches."""
        pos = self._seen if since is None else since
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while pos < len(self.events):
                ev = self.events[pos]
                pos += 1
                if pred(ev):
                    self._seen = pos
                    return ev
            if self.proc.returncode is not None and self._reader.done():
                raise AssertionError(f"client exited; events: {self.events[-10:]}")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no matching event; last events: {self.events[-10:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def next_message(self, timeout: float = 10.0) -> str:
        ev = await self.wait(
            lambda e: (
                e.get("event") == "stanza"
                and e.get("name") == "message"
                and "<body>" in e.get("xml", "")
            ),
            timeout,
        )
        return str(ev["xml"])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.command("stop", timeout=3)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 3)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
