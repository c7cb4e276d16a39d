"""Configuration parsing, validation, and its documentation (every key is documented)."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from minimix.config import Config, ConfigError, from_dict, load, parse_duration

ROOT = Path(__file__).resolve().parents[2]


def all_keys(obj: Any = None, prefix: str = "") -> list[str]:
    """Every configuration key as written in TOML: ``domain``, ``c2s.port``, ..."""
    obj = obj if obj is not None else Config()
    out: list[str] = []
    for f in fields(obj):
        if f.name == "source":
            continue
        value = getattr(obj, f.name)
        if f.name == "components":
            out += ["component.domain", "component.secret"]
        elif is_dataclass(value):
            out += all_keys(value, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_defaults_work_on_a_laptop() -> None:
    cfg = from_dict({})
    assert cfg.domain == "localhost"
    assert cfg.data_dir == "./data"
    assert (cfg.c2s.host, cfg.c2s.port, cfg.c2s.direct_tls_port) == ("127.0.0.1", 5222, 5223)
    assert cfg.c2s.require_encryption
    assert (cfg.tls.certificate, cfg.tls.key) == ("", "")
    assert cfg.registration.open is False
    assert cfg.muc.domain == "conference.localhost"
    assert cfg.account_join.enabled is True and cfg.account_join.linger == 3600
    assert cfg.storage.url == ""
    assert cfg.limits.max_stanza_size == 262144
    assert cfg.components == []


def test_muc_domain_follows_the_domain_unless_set() -> None:
    assert from_dict({"domain": "example.org"}).muc.domain == "conference.example.org"
    assert from_dict({"domain": "example.org", "muc": {"domain": ""}}).muc.domain == ""
    assert from_dict({"muc": {"domain": "rooms.localhost"}}).muc.domain == "rooms.localhost"


def test_values_are_read() -> None:
    cfg = from_dict(
        {
            "domain": "Example.ORG",
            "c2s": {"port": 15222, "direct_tls_port": 0},
            "registration": {"open": True},
            "account_join": {"linger": "90s"},
            "archive": {"retention": "forever"},
            "limits": {"rate": 10, "unauthenticated_timeout": "2m"},
            "component": [{"domain": "gw.example.org", "secret": "s"}],
        }
    )
    assert cfg.c2s.port == 15222 and cfg.c2s.direct_tls_port == 0
    assert cfg.registration.open
    assert cfg.account_join.linger == 90
    assert cfg.archive.retention == math.inf
    assert cfg.limits.rate == 10.0 and cfg.limits.unauthenticated_timeout == 120
    assert [(c.domain, c.secret) for c in cfg.components] == [("gw.example.org", "s")]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("250ms", 0.25), ("90s", 90), ("5m", 300), ("1h", 3600),
     ("2d", 172800), ("forever", math.inf), (" 10 ", 10)],
)  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value, "k") == seconds


@pytest.mark.parametrize("value", [True, -1, "soon", "1y", "", None, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_duration(value, "account_join.linger")
    assert str(err.value).startswith("account_join.linger:")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"domain": "bad domain"}, "domain"),
        ({"nope": 1}, "nope"),
        ({"c2s": {"port": 99999}}, "c2s.port"),
        ({"c2s": {"port": "x"}}, "c2s.port"),
        ({"c2s": {"port": True}}, "c2s.port"),
        ({"c2s": {"require_encryption": "yes"}}, "c2s.require_encryption"),
        ({"c2s": 1}, "c2s"),
        ({"tls": {"certificate": "a.pem"}}, "tls"),
        ({"muc": {"domain": "localhost"}}, "muc.domain"),
        ({"muc": {"domain": "bad domain"}}, "muc.domain"),
        ({"limits": {"max_stanza_size": 100}}, "limits.max_stanza_size"),
        ({"limits": {"rate": -1}}, "limits.rate"),
        ({"log_level": "loud"}, "log_level"),
        ({"storage": {"url": "mysql://x"}}, "storage.url"),
        ({"http": {"metrics_allow": "127.0.0.1"}}, "http.metrics_allow"),
        ({"component": {"domain": "x"}}, "component"),
        ({"component": [{"domain": "x"}]}, "component[0]"),
        ({"source": "x"}, "source"),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    message = str(err.value)
    assert key in message
    assert "\n" not in message


def test_load_file_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.toml"
    path.write_text('domain = "example.net"\n[c2s]\nport = 5000\n')
    cfg = load(str(path))
    assert cfg.domain == "example.net" and cfg.c2s.port == 5000 and cfg.source == str(path)
    with pytest.raises(ConfigError, match="--config"):
        load(str(tmp_path / "missing.toml"))
    path.write_text("domain = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(path))
    # Without --config: ./minimix.toml when present, else the defaults.
    monkeypatch.chdir(tmp_path)
    assert load(None).source == "built-in defaults"
    (tmp_path / "minimix.toml").write_text('domain = "here.example"\n')
    assert load(None).domain == "here.example"


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\|\s*`([a-z0-9_.]+)`", doc, re.MULTILINE))
    missing = [k for k in all_keys() if k not in documented]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_the_example_file_is_valid_and_complete() -> None:
    text = (ROOT / "minimix.toml.example").read_text()
    # Every key appears in the example, set or commented out ("# key = value"); prose
    # comments start with "##".
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("##")]
    uncommented = "\n".join(ln.lstrip("# ") for ln in lines)
    data = tomllib.loads(uncommented)
    from_dict(data)
    flat: set[str] = set()
    for k, v in data.items():
        if isinstance(v, dict):
            flat |= {f"{k}.{kk}" for kk in v}
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            flat |= {f"{k}.{kk}" for kk in v[0]}
        else:
            flat.add(k)
    missing = [k for k in all_keys() if k not in flat]
    assert not missing, f"minimix.toml.example lacks {missing}"
    # As shipped (comments in place) it is valid too.
    from_dict(tomllib.loads(text))
