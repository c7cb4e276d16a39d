"""``/metrics``: the server's numbers in the Prometheus text exposition format (version 0.0.4).

:func:`collect` reads the live counters (the router's, the client connections', the session
registry, and the ``stats()`` of the group chat service and account-join when they have one);
:class:`Exposition` writes them out. Names follow Prometheus conventions: ``_total`` for
counters, base units, one family per quantity with labels for its kinds.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")
Labels = Mapping[str, str]


def metric_name(text: str) -> str:
    """A valid metric name part from an arbitrary counter key."""
    name = _NAME_BAD.sub("_", text).strip("_").lower()
    return name if name and not name[0].isdigit() else f"n_{name}"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class Exposition:
    """Collects metric families and renders them; a family is written once, with all samples."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def _family(self, name: str, kind: str, help_: str) -> _Family:
        fam = self._families.get(name)
        if fam is None:
            fam = _Family(name, kind, help_)
            self._families[name] = fam
        return fam

    def gauge(self, name: str, help_: str, value: float, labels: Labels | None = None) -> None:
        self._family(name, "gauge", help_).samples.append((dict(labels or {}), value))

    def counter(self, name: str, help_: str, value: float, labels: Labels | None = None) -> None:
        """``name`` without the ``_total`` suffix; samples are written as ``name_total``."""
        self._family(name, "counter", help_).samples.append((dict(labels or {}), value))

    def names(self) -> list[str]:
        return list(self._families)

    def text(self) -> str:
        out: list[str] = []
        for fam in self._families.values():
            sample = f"{fam.name}_total" if fam.kind == "counter" else fam.name
            help_ = fam.help.replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {sample} {help_}")
            out.append(f"# TYPE {sample} {fam.kind}")
            for labels, value in fam.samples:
                if labels:
                    inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels.items()))
                    out.append(f"{sample}{{{inner}}} {_number(value)}")
                else:
                    out.append(f"{sample} {_number(value)}")
        return "\n".join(out) + "\n"


class MetricsSources(Protocol):
    """What the metrics read; every part is optional except the core counters."""

    @property
    def router_counters(self) -> Mapping[str, int]: ...

    @property
    def client_counters(self) -> Mapping[str, int]: ...

    def connections_by_transport(self) -> Mapping[str, int]: ...

    def session_counts(self) -> tuple[int, int, int]:
        """(bound sessions, accounts with a session, hibernating sessions)"""
        ...

    def muc_stats(self) -> Mapping[str, Any]: ...

    def account_join_stats(self) -> Mapping[str, Any]: ...

    def archive_stats(self) -> Mapping[str, Any]: ...

    @property
    def started(self) -> float: ...


STANZA_KINDS = ("message", "presence", "iq")

# Counter keys the features may use for the named quantities; the first one present wins.
FANOUT_KEYS = ("account_join_fanout", "fanout_deliveries", "fan_out_deliveries", "fanout")
ARCHIVE_KEYS = ("archive_writes", "archived", "archive_appends", "mam_writes")
ROOM_KEYS = ("rooms",)
JOINED_KEYS = ("account_join_rooms", "joined_accounts", "joins", "account_joins")
ATTACHED_KEYS = ("account_join_clients", "attached_clients", "attached")
OCCUPANT_KEYS = ("occupants",)


def _pick(stats: Iterable[Mapping[str, Any]], keys: tuple[str, ...]) -> float | None:
    for source in stats:
        for key in keys:
            value = source.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value
    return None


def _numbers(stats: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    for key, value in stats.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield str(key), value


def _resident_bytes() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def collect(src: MetricsSources) -> Exposition:
    """Read every live number once and lay it out as metric families."""
    exp = Exposition()
    router = src.router_counters
    clients = src.client_counters
    muc = src.muc_stats()
    join = src.account_join_stats()
    every = (router, clients, join, muc)

    # Connections and sessions.
    by_transport = src.connections_by_transport()
    for transport in ("tcp", "websocket"):
        exp.gauge(
            "minimix_connected_clients",
            "Open client connections (any stage: negotiating, authenticated, bound)",
            by_transport.get(transport, 0),
            {"transport": transport},
        )
    sessions, accounts, hibernating = src.session_counts()
    exp.gauge("minimix_sessions", "Bound client sessions (full JIDs online)", sessions)
    exp.gauge(
        "minimix_authenticated_accounts",
        "Accounts with at least one bound client session",
        accounts,
    )
    exp.gauge(
        "minimix_hibernating_sessions",
        "Sessions whose connection dropped and that may still be resumed (XEP-0198)",
        hibernating,
    )

    # Stanzas.
    for kind in STANZA_KINDS:
        exp.counter(
            "minimix_stanzas_in",
            "Stanzas received from bound clients, by kind",
            router.get(f"in_{kind}", 0),
            {"kind": kind},
        )
    for kind in STANZA_KINDS:
        exp.counter(
            "minimix_stanzas_out",
            "Stanzas written to client connections, by kind",
            clients.get(f"out_{kind}", 0),
            {"kind": kind},
        )
    exp.counter(
        "minimix_muc_stanzas_out",
        "Stanzas the group chat service sent to occupants",
        router.get("muc_stanzas_out", 0),
    )

    # Rooms and account-join.
    exp.gauge(
        "minimix_rooms", "Rooms that exist on the group chat service", _pick([muc], ROOM_KEYS) or 0
    )
    exp.gauge(
        "minimix_room_occupants",
        "Occupants in all rooms of the group chat service",
        _pick([muc], OCCUPANT_KEYS) or 0,
    )
    exp.gauge(
        "minimix_joined_accounts",
        "Account-to-room joins held by account-join (one per account and room)",
        _pick([join], JOINED_KEYS) or 0,
    )
    exp.gauge(
        "minimix_attached_clients",
        "Clients attached to their account's room joins",
        _pick([join], ATTACHED_KEYS) or 0,
    )
    exp.counter(
        "minimix_fanout_deliveries",
        "Room stanzas delivered to attached clients by fan-out",
        _pick(every, FANOUT_KEYS) or 0,
    )
    exp.counter(
        "minimix_archive_writes",
        "Messages written to archives",
        _pick([src.archive_stats()], ("writes", *ARCHIVE_KEYS)) or _pick(every, ARCHIVE_KEYS) or 0,
    )

    # Errors.
    exp.counter(
        "minimix_errors",
        "Errors the server returned, by where they arose",
        router.get("errors", 0),
        {"source": "stanza"},
    )
    for key, value in sorted(clients.items()):
        if "error" in key or "fail" in key:
            exp.counter(
                "minimix_errors",
                "Errors the server returned, by where they arose",
                value,
                {"source": metric_name(key)},
            )

    # Everything else the features count, under their own names.
    for family, help_, kind, values in (
        ("minimix_router_events", "Router counters by name", "counter", router),
        ("minimix_client_events", "Client connection counters by name", "counter", clients),
        ("minimix_muc_stat", "Group chat service figures by name", "gauge", muc),
        ("minimix_account_join_stat", "Account-join figures by name", "gauge", join),
    ):
        merged: dict[str, float] = {}
        for key, number in _numbers(values):
            name = metric_name(key)
            merged[name] = merged.get(name, 0) + number
        for name, total in sorted(merged.items()):
            if kind == "counter":
                exp.counter(family, help_, total, {"name": name})
            else:
                exp.gauge(family, help_, total, {"name": name})

    # The process.
    exp.gauge(
        "minimix_uptime_seconds", "Seconds since the server started", time.monotonic() - src.started
    )
    rss = _resident_bytes()
    if rss is not None:
        exp.gauge("minimix_resident_memory_bytes", "Resident memory of the server process", rss)
    return exp
