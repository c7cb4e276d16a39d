"""XEP-0082 date and time profiles: the one place that reads and writes DateTime strings."""

from __future__ import annotations

import datetime


def format_datetime(t: float) -> str:
    """Unix time as a XEP-0082 DateTime in UTC, with microseconds when they are not zero."""
    dt = datetime.datetime.fromtimestamp(t, datetime.UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(text: str | None) -> float | None:
    """A XEP-0082 DateTime as unix time; None when missing or malformed. No offset means UTC."""
    if not text:
        return None
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()
