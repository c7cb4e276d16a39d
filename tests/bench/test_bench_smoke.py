"""The benchmark harness, tiny and bounded, so it never rots: minimix, Prosody and ejabberd
each get a few clients and a few messages over STARTTLS. Checks delivery, never timings."""

from __future__ import annotations

from bench.run import run_smoke


def test_every_server_delivers_every_message_exactly_once() -> None:
    result = run_smoke(("minimix", "prosody", "ejabberd"), timeout=240)
    assert result["ok"], result["failures"]
    started = {name for name, entry in result["servers"].items() if entry.get("started")}
    assert started == {"minimix", "prosody", "ejabberd"}, result["servers"]
