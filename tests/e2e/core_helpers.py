"""Helpers for the core end-to-end tests (beside tests/support.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.support import Client, Running


async def login(
    running: Running,
    jid: str,
    password: str = "secret",
    mechanism: str | None = None,
    direct_tls: bool = False,
    plugins: tuple[str, ...] = ("xep_0030", "xep_0199"),
    timeout: float = 10.0,
) -> Client:
    """A slixmpp client limited to one SASL mechanism; raises PermissionError when refused."""
    client = Client(jid, password)
    client.ca_certs = running.ca
    for p in plugins:
        client.register_plugin(p)
    if mechanism is not None:
        client.plugin["feature_mechanisms"].use_mech = mechanism
    failed_all = asyncio.Event()
    client.add_event_handler("failed_all_auth", lambda *_: failed_all.set())
    if direct_tls:
        client.enable_direct_tls = True
        client.enable_starttls = False
        client.connect("127.0.0.1", running.direct_tls_port)
    else:
        client.enable_direct_tls = False
        client.connect("127.0.0.1", running.port)
    started = asyncio.ensure_future(client.wait_until("session_start", timeout))
    failed = asyncio.ensure_future(client.auth_failed.wait())
    failed2 = asyncio.ensure_future(failed_all.wait())
    done, _ = await asyncio.wait(
        {started, failed, failed2}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    for f in (started, failed, failed2):
        if not f.done():
            f.cancel()
    if started not in done:
        client.disconnect()
        raise PermissionError(f"{jid} could not log in")
    return client


def mechanism_used(client: Client) -> str:
    mech: Any = client.plugin["feature_mechanisms"].mech
    return str(mech.name)


async def roster_of(client: Client) -> dict[str, dict[str, Any]]:
    """The roster as the server returns it now: contact -> item attributes."""
    iq = client.Iq()
    iq["type"] = "get"
    iq.enable("roster")
    result = await iq.send(timeout=5)
    return {str(j): dict(item) for j, item in result["roster"]["items"].items()}


def free_port() -> int:
    """A TCP port free on loopback right now (for listeners where 0 means "disabled")."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def close(*clients: Client) -> None:
    """Disconnect one client after the other (slixmpp clients that disconnect together in one
    event loop can miss their own 'disconnected' and wait for its time-out)."""
    for c in clients:
        c.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.disconnected, 3)
