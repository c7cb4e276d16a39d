"""Shared test helpers: a real server on loopback (random ports, temporary data dir) and
real slixmpp clients connected to it over STARTTLS or direct TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slixmpp

from minimix.app import Server
from minimix.config import from_dict


def base_config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "domain": "localhost",
        "data_dir": str(data_dir),
        "log_level": "warning",
        "c2s": {"host": "127.0.0.1", "port": 0, "direct_tls_port": 0},
        "registration": {"open": True, "throttle_per_ip": 0},
        "muc": {"domain": "conference.localhost"},
        "http": {"port": 0},
        "limits": {
            "unauthenticated_per_ip": 1000,
            "auth_failures_per_ip": 1000,
            "auth_failures_per_account": 1000,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@dataclass
class Running:
    server: Server
    data_dir: Path

    @property
    def port(self) -> int:
        return self.server.ports["c2s"]

    @property
    def direct_tls_port(self) -> int:
        return self.server.ports.get("c2s_direct_tls", 0)

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "self-signed.crt"

    def add_user(self, name: str, password: str = "secret") -> str:
        self.server.accounts.create(name, password)
        return f"{name}@{self.server.config.domain}"


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, **overrides: Any) -> AsyncIterator[Running]:
    """Start the real server in this event loop; stop it afterwards."""
    config = from_dict(base_config(data_dir, **overrides), "test")
    server = Server(config)
    await server.start()
    try:
        yield Running(server, data_dir)
    finally:
        await server.stop()


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives, for assertions."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.presences: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.stanzas: list[Any] = []
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.auth_failed = asyncio.Event()
        self.add_event_handler("failed_auth", lambda *_: self.auth_failed.set())

    async def next_message(self, timeout: float = 5.0) -> slixmpp.Message:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_presence(self, timeout: float = 5.0) -> slixmpp.Presence:
        return await asyncio.wait_for(self.presences.get(), timeout)


async def connect(
    running: Running,
    jid: str,
    password: str = "secret",
    plugins: tuple[str, ...] = ("xep_0030", "xep_0199"),
    direct_tls: bool = False,
    presence: bool = True,
    timeout: float = 10.0,
) -> Client:
    """Connect and authenticate a real slixmpp client; waits for session start."""
    client = Client(jid, password)
    client.ca_certs = running.ca
    for p in plugins:
        client.register_plugin(p)
    if direct_tls:
        client.enable_direct_tls = True
        client.enable_starttls = False
        client.connect("127.0.0.1", running.direct_tls_port)
    else:
        client.enable_direct_tls = False
        client.connect("127.0.0.1", running.port)
    started = asyncio.ensure_future(client.wait_until("session_start", timeout))
    failed = asyncio.ensure_future(client.auth_failed.wait())
    done, _ = await asyncio.wait(
        {started, failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    for f in (started, failed):
        if not f.done():
            f.cancel()
    if failed in done:
        client.disconnect()
        raise PermissionError(f"authentication failed for {jid}")
    if started not in done:
        raise TimeoutError(f"{jid} did not start a session")
    if presence:
        client.send_presence()
        await client.get_roster()
    return client


async def disconnect(*clients: Client) -> None:
    # Take each client's "disconnected" future before asking it to close: slixmpp replaces the
    # future once it resolves, and waiting on the replacement would sit out the whole timeout.
    waiting = [c.disconnected for c in clients]
    for c in clients:
        c.disconnect()
    for fut in waiting:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(fut), 3)


class ServerProcess:
    """The server as a separate process (for restarts and crash tests)."""

    def __init__(self, config_path: Path, data_dir: Path) -> None:
        self.config_path = config_path
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 20.0) -> None:
        import json

        ports_file = self.data_dir / "ports.json"
        if ports_file.exists():
            ports_file.unlink()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minimix", "serve", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.data_dir / "server.log", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ports_file.exists():
                try:
                    self.ports = json.loads(ports_file.read_text())
                    return
                except ValueError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + (self.data_dir / "server.log").read_text())
            time.sleep(0.05)
        raise TimeoutError("server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def write_config(path: Path, data_dir: Path, **overrides: Any) -> Path:
    """Write a TOML configuration for a server process."""
    cfg = base_config(data_dir, **overrides)
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for k, v in cfg.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml(v)}")
    for name, table in tables:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in table.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
