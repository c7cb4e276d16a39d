"""``/metrics``: Prometheus text format that the reference parser reads, counters that move."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from minimix.app import Server
from minimix.config import ConfigError, from_dict
from tests.e2e.ws_helpers import http_get, websocket
from tests.support import base_config, connect, disconnect, running_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> tuple[Samples, dict[str, str]]:
    status, headers, body = await http_get(port, "/metrics")
    assert status == 200, body
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples, types


async def until(port: int, ready: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``ready`` holds (the server handles stanzas asynchronously)."""
    for _ in range(100):
        samples, _ = await scrape(port)
        if ready(samples):
            return samples
        await asyncio.sleep(0.05)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_parse_and_move_with_traffic(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        port = srv.server.ports["http"]
        before, types = await scrape(port)
        for family, kind in {
            "minimix_connected_clients": "gauge",
            "minimix_sessions": "gauge",
            "minimix_authenticated_accounts": "gauge",
            "minimix_stanzas_in": "counter",
            "minimix_stanzas_out": "counter",
            "minimix_muc_stanzas_out": "counter",
            "minimix_rooms": "gauge",
            "minimix_joined_accounts": "gauge",
            "minimix_attached_clients": "gauge",
            "minimix_fanout_deliveries": "counter",
            "minimix_archive_writes": "counter",
            "minimix_errors": "counter",
        }.items():
            assert types.get(family) == kind, (family, types.get(family))
        assert value(before, "minimix_sessions") == 0
        assert value(before, "minimix_stanzas_in_total", kind="message") == 0

        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        a = await connect(srv, f"{alice}/one", plugins=("xep_0030", "xep_0045"))
        b = await connect(srv, f"{bob}/two")
        async with websocket(port) as ws:
            await ws.login("alice", resource="web")
            during, _ = await scrape(port)
            assert value(during, "minimix_connected_clients", transport="tcp") == 2
            assert value(during, "minimix_connected_clients", transport="websocket") == 1
            assert value(during, "minimix_sessions") == 3
            assert value(during, "minimix_authenticated_accounts") == 2

            for i in range(3):
                a.send_message(mto=bob, mbody=f"m{i}", mtype="chat")
            for _ in range(3):
                await b.next_message()
            a.send_message(mto="nobody@elsewhere.example", mbody="x", mtype="chat")
            a.plugin["xep_0045"].join_muc("lobby@conference.localhost", "alice")
            await until(port, lambda m: value(m, "minimix_attached_clients") >= 1)
            a.send_message(mto="lobby@conference.localhost", mbody="hi room", mtype="groupchat")
            after = await until(
                port,
                lambda m: (
                    value(m, "minimix_fanout_deliveries_total") >= 1
                    and value(m, "minimix_errors_total", source="stanza") >= 1
                ),
            )

        sent = value(after, "minimix_stanzas_in_total", kind="message") - value(
            before, "minimix_stanzas_in_total", kind="message"
        )
        assert sent >= 4
        assert value(after, "minimix_stanzas_out_total", kind="message") >= 3
        assert value(after, "minimix_stanzas_in_total", kind="presence") >= 2
        assert value(after, "minimix_stanzas_out_total", kind="iq") >= 2  # roster, bind...
        assert value(after, "minimix_errors_total", source="stanza") >= 1  # unreachable domain
        assert value(after, "minimix_rooms") >= 1
        assert value(after, "minimix_joined_accounts") == 1  # alice's account joined the lobby
        assert value(after, "minimix_attached_clients") == 1  # through one of her clients
        assert value(after, "minimix_fanout_deliveries_total") >= 1
        assert value(after, "minimix_muc_stanzas_out_total") >= 1
        assert value(after, "minimix_uptime_seconds") > 0
        await disconnect(a, b)


async def test_metrics_are_loopback_only_by_default(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        port = srv.server.ports["http"]
        # Through a reverse proxy on this machine, the browser's own address counts.
        status, _, _ = await http_get(port, "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert status == 403
        status, _, _ = await http_get(port, "/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert status == 200
    async with running_server(tmp_path, http={"metrics_allow": ["192.0.2.0/24"]}) as srv:
        status, _, body = await http_get(srv.server.ports["http"], "/metrics")
        assert status == 403 and "minimix" not in body


def test_bad_allow_list_is_a_configuration_error(tmp_path: Path) -> None:
    config = from_dict(base_config(tmp_path, http={"metrics_allow": ["localhost"]}), "test")
    with pytest.raises(ConfigError, match=r"http\.metrics_allow"):
        Server(config)
