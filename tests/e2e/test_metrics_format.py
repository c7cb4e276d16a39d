"""The exposition writer on its own: what any feature's counters turn into, read back by the
Prometheus client library's parser (no server needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from minimix.web.metrics import Exposition, collect, metric_name


class FakeSources:
    def __init__(self, **stats: Mapping[str, Any]) -> None:
        self.router_counters = {"in_message": 5, "errors": 2, "account_join_fanout": 7}
        self.client_counters = {"out_message": 4, "auth-failures": 1}
        self.started = 0.0
        self._stats = stats

    def connections_by_transport(self) -> Mapping[str, int]:
        return {"tcp": 2, "websocket": 1}

    def session_counts(self) -> tuple[int, int, int]:
        return 3, 2, 1

    def muc_stats(self) -> Mapping[str, Any]:
        return self._stats.get("muc", {})

    def account_join_stats(self) -> Mapping[str, Any]:
        return self._stats.get("join", {})

    def archive_stats(self) -> Mapping[str, Any]:
        return self._stats.get("archive", {})


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_label_values_and_help_are_escaped() -> None:
    exp = Exposition()
    exp.counter("x_events", 'help with "quotes"\nand a newline', 3, {"name": 'a"b\\c\nd'})
    exp.gauge("x_level", "a gauge", math.inf)
    samples = parsed(exp.text())
    assert samples[("x_events_total", (("name", 'a"b\\c\nd'),))] == 3
    assert samples[("x_level", ())] == math.inf


def test_collect_maps_feature_figures_onto_the_named_metrics() -> None:
    src = FakeSources(
        muc={"rooms": 4, "occupants": 9, "broken": "not a number"},
        join={"account_join_rooms": 3, "account_join_clients": 5, "account_join_joining": 1},
        archive={"writes": 11},
    )
    samples = parsed(collect(src).text())
    assert samples[("minimix_connected_clients", (("transport", "websocket"),))] == 1
    assert samples[("minimix_sessions", ())] == 3
    assert samples[("minimix_hibernating_sessions", ())] == 1
    assert samples[("minimix_stanzas_in_total", (("kind", "message"),))] == 5
    assert samples[("minimix_stanzas_out_total", (("kind", "message"),))] == 4
    assert samples[("minimix_rooms", ())] == 4
    assert samples[("minimix_room_occupants", ())] == 9
    assert samples[("minimix_joined_accounts", ())] == 3
    assert samples[("minimix_attached_clients", ())] == 5
    assert samples[("minimix_fanout_deliveries_total", ())] == 7
    assert samples[("minimix_archive_writes_total", ())] == 11
    assert samples[("minimix_errors_total", (("source", "stanza"),))] == 2
    assert samples[("minimix_errors_total", (("source", "auth_failures"),))] == 1
    # Every counter and figure also appears under its own name.
    assert samples[("minimix_router_events_total", (("name", "account_join_fanout"),))] == 7
    assert samples[("minimix_account_join_stat", (("name", "account_join_joining"),))] == 1
    assert ("minimix_muc_stat", (("name", "broken"),)) not in samples


def test_metric_names_from_arbitrary_keys() -> None:
    assert metric_name("in-message") == "in_message"
    assert metric_name("9lives") == "n_9lives"
    assert metric_name("Ünïcode key") == "n_code_key"  # only [a-zA-Z0-9_] survive
