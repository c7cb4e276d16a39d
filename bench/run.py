"""Benchmark minimix side by side with Prosody and ejabberd on this machine.

    .venv/bin/python bench/run.py [--quick | --smoke] [--servers minimix,prosody,ejabberd]
                                  [--out bench/results.json]

Each server is started in turn on loopback ports with a configuration written to a temporary
directory, every scenario is run against it, and it is stopped (with all its processes) before the
next one starts. Prints a table with each server's figures and the ratios minimix/Prosody and
minimix/ejabberd, and writes everything to a JSON file. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen, procinfo, servers

Json = dict[str, Any]


@dataclass
class Profile:
    """How big and how long each scenario is."""

    name: str
    scenarios: tuple[str, ...] = ("fanout", "attach", "idle", "logins", "one_to_one", "archive")
    fanout_sizes: tuple[tuple[int, int], ...] = (
        (10, 1),
        (10, 3),
        (50, 1),
        (50, 3),
        (200, 1),
        (200, 3),
    )
    fanout_senders: int = 5
    fanout_seconds: float = 8.0
    fanout_max_messages: int = 100_000
    fanout_load: float | None = 2000.0  # fixed-rate phase: deliveries per second
    fanout_rate_seconds: float = 5.0
    attach_occupants: int = 500
    attach_samples: int = 15
    idle_levels: tuple[int, ...] = (1000, 10000)
    login_accounts: int = 50
    login_concurrency: int = 20
    login_seconds: float = 8.0
    pairs: int = 50
    pairs_seconds: float = 8.0
    pairs_max_messages: int = 300_000
    archive_size: tuple[int, int] = (50, 3)
    archive_seconds: float = 8.0
    archive_rounds: int = 3  # off then on, this many times, each on fresh instances
    scenario_timeout: float = 600.0
    global_timeout: float = 3600.0
    step_timeout: float = 60.0
    settle_timeout: float = 240.0


PROFILES: dict[str, Profile] = {
    "full": Profile("full"),
    "quick": Profile(
        "quick",
        fanout_sizes=((10, 1), (10, 3), (50, 1), (50, 3)),
        fanout_seconds=3.0,
        fanout_rate_seconds=2.0,
        attach_occupants=100,
        attach_samples=3,
        idle_levels=(200, 1000),
        login_accounts=20,
        login_seconds=3.0,
        pairs=20,
        pairs_seconds=3.0,
        archive_size=(20, 2),
        archive_seconds=3.0,
        archive_rounds=1,
        scenario_timeout=180.0,
        global_timeout=900.0,
        settle_timeout=60.0,
    ),
    "smoke": Profile(
        "smoke",
        scenarios=("fanout", "one_to_one", "logins"),
        fanout_sizes=((3, 2),),
        fanout_senders=2,
        fanout_seconds=10.0,
        fanout_max_messages=30,
        fanout_load=300.0,
        fanout_rate_seconds=0.2,
        login_accounts=2,
        login_concurrency=2,
        login_seconds=0.5,
        pairs=2,
        pairs_seconds=10.0,
        pairs_max_messages=30,
        scenario_timeout=15.0,
        global_timeout=50.0,
        step_timeout=10.0,
        settle_timeout=2.0,
    ),
}

DEFAULT_SMOKE_SERVERS = ("minimix", "prosody")


def fanout_window(receivers: int) -> int:
    """Outstanding messages in the closed loop: about a thousand deliveries in flight."""
    return max(2, min(32, round(1000 / receivers)))


def fanout_key(accounts: int, devices: int) -> str:
    return f"fanout_A{accounts}xD{devices}"


ScenarioCall = Callable[[servers.ServerHandle], Coroutine[Any, Any, Json]]


def _scenario_calls(profile: Profile) -> list[tuple[str, ScenarioCall]]:
    """(result key, scenario bound to its options) for every scenario on one server instance."""
    calls: list[tuple[str, ScenarioCall]] = []
    step = profile.step_timeout
    for scenario in profile.scenarios:
        if scenario == "fanout":
            calls.extend(
                (fanout_key(accounts, devices), _fanout_call(profile, accounts, devices))
                for accounts, devices in profile.fanout_sizes
            )
        elif scenario == "attach":
            call = partial(
                loadgen.second_client,
                occupants=profile.attach_occupants,
                samples=profile.attach_samples,
                timeout=step,
            )
            calls.append(("attach", call))
        elif scenario == "logins":
            call = partial(
                loadgen.logins,
                accounts=profile.login_accounts,
                concurrency=profile.login_concurrency,
                duration=profile.login_seconds,
                timeout=step,
            )
            calls.append(("logins", call))
        elif scenario == "one_to_one":
            call = partial(
                loadgen.one_to_one,
                pairs=profile.pairs,
                duration=profile.pairs_seconds,
                max_messages=profile.pairs_max_messages,
                timeout=step,
            )
            calls.append(("one_to_one", call))
    return calls


def _fanout_call(
    profile: Profile, accounts: int, devices: int, fixed_rate: bool = True, seconds: float = 0.0
) -> ScenarioCall:
    return partial(
        loadgen.group_fanout,
        accounts=accounts,
        devices=devices,
        senders=profile.fanout_senders,
        window=fanout_window(accounts * devices),
        duration=seconds or profile.fanout_seconds,
        max_messages=profile.fanout_max_messages,
        rate=max(0.5, profile.fanout_load / (accounts * devices))
        if fixed_rate and profile.fanout_load
        else None,
        rate_seconds=profile.fanout_rate_seconds,
        timeout=profile.step_timeout,
    )


def _error_text(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:600]


def _run_async(factory: Callable[[], Coroutine[Any, Any, Json]], timeout: float) -> Json:
    async def guarded() -> Json:
        return await asyncio.wait_for(factory(), timeout)

    try:
        return loadgen.run_async(guarded())
    except TimeoutError:
        return {"error": f"timed out after {timeout:.0f}s"}
    except Exception as exc:  # a failing scenario is reported, the others still run
        return {"error": _error_text(exc)}


def _server_version(name: str) -> str | None:
    if name == "minimix":
        command = [str(servers.MINIMIX_BIN), "--version"]
    else:
        command = ["dpkg-query", "-W", "-f=${Version}", name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


ISOLATED = ("idle", "archive")  # each on its own fresh server instance


def run_server(
    name: str, profile: Profile, base: Path, deadline: Deadline, log: Callable[[str], None]
) -> Json:
    """Every scenario of ``profile`` against one server; start failures are reported, not raised.

    The scenarios share one server instance, except the idle connections (a clean memory
    baseline, and a server struggling with 10,000 clients cannot spoil the others) and the
    archive comparison (two configurations), which each get fresh instances.
    """
    entry: Json = {
        "started": False,
        "version": _server_version(name),
        "load_average_at_start": round(procinfo.load_average(), 2),
        "scenarios": {},
    }
    calls = [(key, call) for key, call in _scenario_calls(profile) if key not in ISOLATED]
    if calls:
        try:
            handle = servers.start_server(name, base)
        except servers.ServerStartError as exc:
            entry["error"] = str(exc)
            log(f"{name}: failed to start: {str(exc).splitlines()[0]}")
            return entry
        entry["started"] = True
        entry["notes"] = list(handle.notes)
        log(f"{name}: started (pid {handle.pid}, port {handle.port})")
        try:
            for key, call in calls:
                result = _run_step(name, key, handle, call, profile, deadline, log)
                result["settle_after_s"] = settle(
                    handle, min(profile.settle_timeout, deadline.left())
                )
                entry["scenarios"][key] = result
        finally:
            entry["log_tail"] = handle.log_tail(10)
            handle.stop()
    if "idle" in profile.scenarios:
        call = partial(
            loadgen.idle_connections, levels=profile.idle_levels, timeout=profile.step_timeout
        )
        entry["scenarios"]["idle"] = run_isolated(name, "idle", call, profile, base, deadline, log)
    if "archive" in profile.scenarios:
        entry["scenarios"]["archive"] = run_archive(name, profile, base, deadline, log)
    entry["started"] = entry["started"] or any(
        isinstance(r, dict) and r.pop("_started", False) for r in _isolated_results(entry)
    )
    return entry


def _isolated_results(entry: Json) -> list[Any]:
    scenarios = entry["scenarios"]
    archive = scenarios.get("archive", {})
    runs = [p.get(k) for p in archive.get("rounds", []) for k in ("archive_off", "archive_on")]
    return [scenarios.get("idle"), *runs]


def run_isolated(
    name: str,
    key: str,
    call: ScenarioCall,
    profile: Profile,
    base: Path,
    deadline: Deadline,
    log: Callable[[str], None],
    archive: bool = False,
) -> Json:
    """One scenario on a fresh server instance; also times how long the server takes to go quiet
    after the scenario's clients have left (``teardown_s``, capped by the settle timeout)."""
    if deadline.left() < 10:
        return {"error": "skipped: global timeout reached"}
    try:
        handle = servers.start_server(name, base, archive=archive)
    except servers.ServerStartError as exc:
        log(f"{name}: {key}: failed to start: {str(exc).splitlines()[0]}")
        return {"error": f"failed to start: {str(exc).splitlines()[0]}"}
    try:
        result = _run_step(name, key, handle, call, profile, deadline, log)
        result["notes"] = list(handle.notes)
        limit = min(profile.settle_timeout, max(0.0, deadline.left() - 5))
        result["teardown_s"] = settle(handle, limit)
        result["teardown_capped"] = result["teardown_s"] >= limit
        result["_started"] = True
        return result
    finally:
        handle.stop()


def settle(handle: servers.ServerHandle, limit: float, idle_share: float = 0.05) -> float:
    """Wait until the server is idle (below ``idle_share`` of a core) or ``limit`` seconds pass.

    Gives a server time to finish tearing down the previous scenario's connections, so that
    work does not count against the next one. Returns the seconds waited.
    """
    start = time.monotonic()
    while handle.alive() and time.monotonic() - start < limit:
        before = handle.cpu_seconds()
        time.sleep(0.5)
        if handle.cpu_seconds() - before < idle_share * 0.5:
            break
    return round(time.monotonic() - start, 1)


def _run_step(
    name: str,
    key: str,
    handle: servers.ServerHandle,
    call: ScenarioCall,
    profile: Profile,
    deadline: Deadline,
    log: Callable[[str], None],
) -> Json:
    left = deadline.left()
    if left < 5:
        log(f"{name}: {key}: skipped (global timeout)")
        return {"error": "skipped: global timeout reached"}
    if not handle.alive():
        return {"error": f"server not running (exit code {handle.process.returncode})"}
    start = time.monotonic()
    result = _run_async(lambda: call(handle), min(profile.scenario_timeout, left))
    result["wall_s"] = round(time.monotonic() - start, 1)
    log(f"{name}: {key}: {_brief(result)}")
    return result


def run_archive(
    name: str, profile: Profile, base: Path, deadline: Deadline, log: Callable[[str], None]
) -> Json:
    """Group fan-out with the archive off and on, each on a fresh server instance.

    Off then on, ``profile.archive_rounds`` times: the machine's speed drifts between runs (by
    a third on a shared virtual machine), and pairs run one after the other drift least. The
    ratios reported are the medians of the pairs' ratios; ``archive_off`` and ``archive_on``
    are the pair whose throughput ratio is that median, and ``rounds`` holds every pair.
    """
    accounts, devices = profile.archive_size
    result: Json = {"accounts": accounts, "devices": devices}
    call = _fanout_call(profile, accounts, devices, False, profile.archive_seconds)
    rounds: list[Json] = []
    for index in range(max(1, profile.archive_rounds)):
        pair: Json = {}
        for archive in (False, True):
            label = "archive_on" if archive else "archive_off"
            tag = label if profile.archive_rounds <= 1 else f"{label} (round {index + 1})"
            pair[label] = run_isolated(name, tag, call, profile, base, deadline, log, archive)
        for key, metric in (
            ("cpu_ratio_on_off", "server_cpu_s_per_1k_deliveries"),
            ("throughput_ratio_on_off", "deliveries_per_s"),
        ):
            off = _dig(pair, f"archive_off.closed_loop.{metric}")
            on = _dig(pair, f"archive_on.closed_loop.{metric}")
            numbers = isinstance(on, (int, float)) and isinstance(off, (int, float))
            pair[key] = round(on / off, 3) if numbers and off else None
        rounds.append(pair)
    measured = [p for p in rounds if p["throughput_ratio_on_off"] is not None]
    chosen = rounds[0]
    if measured:
        measured.sort(key=lambda p: p["throughput_ratio_on_off"])
        chosen = measured[(len(measured) - 1) // 2]
        cpu = sorted(p["cpu_ratio_on_off"] for p in measured if p["cpu_ratio_on_off"])
        result["cpu_ratio_on_off"] = cpu[(len(cpu) - 1) // 2] if cpu else None
        result["throughput_ratio_on_off"] = chosen["throughput_ratio_on_off"]
    else:
        result["cpu_ratio_on_off"] = result["throughput_ratio_on_off"] = None
    result["archive_off"] = chosen["archive_off"]
    result["archive_on"] = chosen["archive_on"]
    result["throughput_ratios"] = [p["throughput_ratio_on_off"] for p in rounds]
    result["cpu_ratios"] = [p["cpu_ratio_on_off"] for p in rounds]
    result["rounds"] = rounds
    return result


def _brief(result: Json) -> str:
    if "error" in result:
        return "ERROR " + str(result["error"]).splitlines()[0][:200]
    parts = []
    for path, label in (
        ("closed_loop.deliveries_per_s", "deliveries/s"),
        ("deliveries_per_s", "deliveries/s"),
        ("logins_per_s", "logins/s"),
        ("attach_ms_p50", "attach ms"),
        ("delivery.ok", "exactly-once"),
    ):
        value = _dig(result, path)
        if value is not None:
            parts.append(f"{label} {value}")
    if "levels" in result:
        parts.extend(
            f"{lv['clients']} clients {lv['kb_per_client']} KB each" for lv in result["levels"]
        )
    return ", ".join(parts) or "done"


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


# --- Report ------------------------------------------------------------------------------------

HIGHER, LOWER, INFO = "higher", "lower", "info"


def table_rows(profile: Profile) -> list[tuple[str, str, str]]:
    """(label, JSON path under a server's scenarios, which direction is better)."""
    rows: list[tuple[str, str, str]] = []
    for accounts, devices in profile.fanout_sizes if "fanout" in profile.scenarios else ():
        key = fanout_key(accounts, devices)
        head = f"fan-out {accounts}x{devices}"
        closed = f"{key}.closed_loop"
        rows += [
            (f"{head} max deliveries/s", f"{closed}.deliveries_per_s", HIGHER),
            (f"{head} max latency p50 ms", f"{closed}.latency.p50_ms", LOWER),
            (f"{head} max latency p99 ms", f"{closed}.latency.p99_ms", LOWER),
            (f"{head} CPU s/1k deliveries", f"{closed}.server_cpu_s_per_1k_deliveries", LOWER),
            (f"{head} RSS MB", f"{closed}.server_rss_mb", LOWER),
            (f"{head} room stanzas/message", f"{closed}.room_stanzas_per_message", LOWER),
        ]
        if profile.fanout_load:
            at = f"{head} @{profile.fanout_load / 1000:g}k deliveries/s"
            fixed = f"{key}.fixed_rate"
            rows += [
                (f"{at} latency p50 ms", f"{fixed}.latency.p50_ms", LOWER),
                (f"{at} latency p95 ms", f"{fixed}.latency.p95_ms", LOWER),
                (f"{at} latency p99 ms", f"{fixed}.latency.p99_ms", LOWER),
                (f"{at} CPU s/1k deliveries", f"{fixed}.server_cpu_s_per_1k_deliveries", LOWER),
            ]
        rows.append((f"{head} exactly once", f"{key}.delivery.ok", INFO))
    if "attach" in profile.scenarios:
        room = f"{profile.attach_occupants}-room"
        rows += [
            (f"2nd client joins {room} ms", "attach.attach_ms_p50", LOWER),
            (f"new account joins {room} ms", "attach.fresh_join_ms_p50", LOWER),
        ]
    if "idle" in profile.scenarios:
        for index, level in enumerate(sorted(profile.idle_levels)):
            rows.append(
                (f"idle {level} clients KB/client", f"idle.levels.{index}.kb_per_client", LOWER)
            )
        rows.append(("idle: quiet after they leave, s", "idle.teardown_s", LOWER))
    if "logins" in profile.scenarios:
        rows += [
            ("logins/s", "logins.logins_per_s", HIGHER),
            ("login CPU ms", "logins.server_cpu_ms_per_login", LOWER),
            ("login mechanism", "logins.mechanism", INFO),
        ]
    if "one_to_one" in profile.scenarios:
        rows += [
            ("1:1 messages/s", "one_to_one.messages_per_s", HIGHER),
            ("1:1 latency p50 ms", "one_to_one.latency.p50_ms", LOWER),
            ("1:1 latency p99 ms", "one_to_one.latency.p99_ms", LOWER),
            ("1:1 CPU s/1k messages", "one_to_one.server_cpu_s_per_1k_deliveries", LOWER),
            ("1:1 exactly once", "one_to_one.delivery.ok", INFO),
        ]
    if "archive" in profile.scenarios:
        cpu = "closed_loop.server_cpu_s_per_1k_deliveries"
        rows += [
            ("archive off CPU s/1k deliveries", f"archive.archive_off.{cpu}", LOWER),
            ("archive on CPU s/1k deliveries", f"archive.archive_on.{cpu}", LOWER),
            ("archive on/off CPU ratio", "archive.cpu_ratio_on_off", LOWER),
            (
                "archive off deliveries/s",
                "archive.archive_off.closed_loop.deliveries_per_s",
                HIGHER,
            ),
            ("archive on deliveries/s", "archive.archive_on.closed_loop.deliveries_per_s", HIGHER),
            ("archive on/off deliveries/s ratio", "archive.throughput_ratio_on_off", HIGHER),
        ]
    return rows


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value == 0:
            return "0"
        digits = max(0, 2 - math.floor(math.log10(abs(value))))
        return f"{value:,.{digits}f}"
    return str(value)


def _cell(results: Json, server: str, path: str) -> Any:
    entry = results["servers"].get(server)
    if entry is None:
        return None
    if not entry.get("started"):
        return "(not started)"
    value = _dig(entry["scenarios"], path)
    if value is None:
        scenario = _dig(entry["scenarios"], path.split(".")[0])
        if isinstance(scenario, dict) and "error" in scenario:
            return "(error)"
    return value


def render_table(results: Json, profile: Profile) -> str:
    names = list(results["servers"])
    ratio_peers = [p for p in ("prosody", "ejabberd") if p in names and "minimix" in names]
    header = ["metric", *names, *(f"mm/{p[:4]}" for p in ratio_peers), "better"]
    lines = [header]
    for label, path, better in table_rows(profile):
        values = [_cell(results, name, path) for name in names]
        row = [
            label,
            *(_format(v) if not isinstance(v, str) or v[:1] != "(" else v for v in values),
        ]
        own = _cell(results, "minimix", path)
        for peer in ratio_peers:
            other = _cell(results, peer, path)
            numeric = (
                isinstance(own, int | float)
                and isinstance(other, int | float)
                and not isinstance(own, bool)
            )
            row.append(_format(own / other) if numeric and other else "")
        row.append(better if better != INFO else "")
        lines.append(row)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        cells = [
            str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
            for i, c in enumerate(line)
        ]
        out.append("  ".join(cells))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _largest(data: Any, key: str) -> float | None:
    """The largest number stored under ``key`` anywhere in ``data``."""
    found: list[float] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            value = item.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                found.append(float(value))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return max(found) if found else None


def noise_report(results: Json) -> list[str]:
    """One line per server on how busy the rest of the machine was while it was measured."""
    lines = []
    for name, entry in results["servers"].items():
        if not entry.get("started"):
            continue
        other = _largest(entry["scenarios"], "other_cpu_share")
        load = entry.get("load_average_at_start")
        text = f"{name}: load average at start {load}, other processes' CPU up to {other} cores"
        if (other or 0) > 0.2 or (load or 0) > 1.0:
            text += " (busy machine: figures are noisy)"
        lines.append(text)
    return lines


def delivery_failures(results: Json) -> list[str]:
    """Every check that failed on a server that started: 'server: scenario: reason'."""
    failures = []
    for name, entry in results["servers"].items():
        if not entry.get("started"):
            continue
        for key, scenario in entry["scenarios"].items():
            parts = [(key, scenario)]
            if key == "archive":
                parts = [
                    (f"archive.round{i + 1}.{k}", v)
                    for i, pair in enumerate(scenario.get("rounds", []))
                    for k, v in pair.items()
                    if k.startswith("archive_")
                ]
            for label, part in parts:
                if not isinstance(part, dict):
                    continue
                if "error" in part:
                    failures.append(f"{name}: {label}: {str(part['error']).splitlines()[0][:200]}")
                elif isinstance(part.get("delivery"), dict) and not part["delivery"].get("ok"):
                    failures.append(
                        f"{name}: {label}: not delivered exactly once {part['delivery']}"
                    )
    return failures


# --- Entry points ------------------------------------------------------------------------------


def run(
    server_names: Sequence[str],
    profile: Profile,
    *,
    install: bool = True,
    timeout: float | None = None,
    log: Callable[[str], None] = print,
) -> Json:
    """Run ``profile`` against each server in turn; always stops every server it started."""
    unknown = [n for n in server_names if n not in servers.SERVER_NAMES]
    if unknown:
        raise ValueError(f"unknown servers: {unknown}")
    deadline = Deadline(timeout if timeout is not None else profile.global_timeout)
    fd_limit = loadgen.raise_fd_limit()
    uvloop = loadgen.loop_factory() is not None
    if install:
        missing = servers.ensure_installed(
            tuple(n for n in server_names if n in servers.PEER_PACKAGES)
        )
        if missing:
            log(f"not installed: {', '.join(missing)}")
    results: Json = {
        "profile": asdict(profile),
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "uvloop": uvloop,
            "fd_limit": fd_limit,
            "kernel": platform.release(),
        },
        "servers": {},
    }
    base = Path(tempfile.mkdtemp(prefix="minimix-bench-"))
    try:
        for name in server_names:
            if deadline.left() < 5:
                results["servers"][name] = {
                    "started": False,
                    "error": "skipped: global timeout reached",
                }
                continue
            results["servers"][name] = run_server(name, profile, base, deadline, log)
    finally:
        servers.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    results["failures"] = delivery_failures(results)
    return results


def run_smoke(
    server_names: Sequence[str] = DEFAULT_SMOKE_SERVERS,
    *,
    install: bool = True,
    timeout: float | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> Json:
    """A tiny run for CI: a few clients, a few messages per server.

    The returned dict has ``ok``: true when at least one server started and every server that
    started delivered every message exactly once (and no scenario failed); ``failures`` lists what
    went wrong, and ``servers[name]["started"]`` says which servers came up.
    """
    results = run(server_names, PROFILES["smoke"], install=install, timeout=timeout, log=log)
    started = [n for n, e in results["servers"].items() if e.get("started")]
    results["ok"] = bool(started) and not results["failures"]
    return results


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="smaller and shorter scenarios (minutes)"
    )
    size.add_argument(
        "--smoke",
        action="store_true",
        help="a few clients and messages; exit 1 unless exactly once",
    )
    parser.add_argument("--servers", help="comma-separated, from minimix,prosody,ejabberd")
    parser.add_argument(
        "--only", help="comma-separated scenarios: fanout,attach,idle,logins,one_to_one,archive"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results.json"
    )
    parser.add_argument("--timeout", type=float, help="global time limit in seconds")
    parser.add_argument(
        "--no-install", action="store_true", help="do not apt-get install missing peers"
    )
    args = parser.parse_args(argv)

    profile_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = PROFILES[profile_name]
    if args.only:
        profile = Profile(**(asdict(profile) | {"scenarios": tuple(args.only.split(","))}))
    default_servers = DEFAULT_SMOKE_SERVERS if args.smoke else servers.SERVER_NAMES
    names = args.servers.split(",") if args.servers else list(default_servers)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)  # also when started in the background
    limit = args.timeout if args.timeout is not None else profile.global_timeout
    # A last resort if a step ignores the deadline: the alarm ends the run, and cleanup still runs.
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(int(limit + 120))
    started = time.monotonic()
    try:
        results = run(
            names,
            profile,
            install=not args.no_install,
            timeout=limit,
            log=lambda s: print(s, flush=True),
        )
    except SystemExit:
        servers.stop_all()
        raise
    except Exception:
        traceback.print_exc()
        servers.stop_all()
        return 2
    finally:
        signal.alarm(0)
    results["wall_s"] = round(time.monotonic() - started, 1)
    started_names = [n for n, e in results["servers"].items() if e.get("started")]
    results["ok"] = bool(started_names) and not results["failures"]

    print()
    print(render_table(results, profile))
    print()
    for name, entry in results["servers"].items():
        if not entry.get("started"):
            reason = (str(entry.get("error") or "").splitlines() or [""])[0]
            print(f"{name}: not started: {reason}")
    for line in noise_report(results):
        print(line)
    for failure in results["failures"]:
        print(f"FAILED {failure}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results written to {args.out} ({results['wall_s']}s)")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
