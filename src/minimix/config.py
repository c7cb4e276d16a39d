"""Configuration: TOML, validated into typed sections. Every key is in docs/configuration.md."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, phrased for an operator: which key, what was expected."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: object, key: str) -> float:
    """Seconds from 30, "30s", "5m", "1h", "2d"; "forever" is infinity."""
    if isinstance(value, bool):
        raise ConfigError(f'{key}: expected a duration like "90s", "1h" or "forever"')
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{key}: expected a duration of zero or more")
        return float(value)
    if isinstance(value, str):
        if value.strip().lower() in ("forever", "never", "inf"):
            return math.inf
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(f'{key}: expected a duration like "90s", "1h" or "forever", got {value!r}')


@dataclass
class C2SConfig:
    host: str = "127.0.0.1"
    port: int = 5222
    direct_tls_port: int = 5223
    require_encryption: bool = True


@dataclass
class TLSConfig:
    certificate: str = ""
    key: str = ""


@dataclass
class RegistrationConfig:
    open: bool = False
    throttle_per_ip: int = 5


@dataclass
class MucConfig:
    domain: str = "conference.localhost"  # default: conference.<domain>; "" disables
    creation: str = "local"  # "local" (accounts of this server), "anyone", "admins"
    default_history: int = 20
    max_history: int = 100
    archive_by_default: bool = True  # new rooms keep a message archive (room MAM)


@dataclass
class AccountJoinConfig:
    enabled: bool = True
    linger: float = 3600.0
    self_ping_interval: float = 900.0


@dataclass
class StorageConfig:
    url: str = ""


@dataclass
class ArchiveConfig:
    enabled: bool = True
    retention: float = math.inf


@dataclass
class LimitsConfig:
    max_stanza_size: int = 262144
    max_depth: int = 64
    rate: float = 50_000.0  # bytes per second per connection, sustained
    burst: int = 1_048_576  # bytes that may arrive at once
    max_output_buffer: int = 4_194_304
    unauthenticated_timeout: float = 30.0
    unauthenticated_per_ip: int = 64
    auth_failures_per_ip: int = 10  # per minute
    auth_failures_per_account: int = 20  # per minute
    resources_per_account: int = 32
    rooms_per_account: int = 500
    occupants_per_room: int = 1000
    archive_page_size: int = 250
    offline_per_account: int = 1000
    sm_resume_timeout: float = 300.0
    sm_max_queue: int = 5000


@dataclass
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 5280
    tls: bool = False
    metrics_allow: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    admin_allow: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    web_client: bool = True
    loopback_secure: bool = True  # WebSocket peers on loopback count as encrypted (local proxy)


@dataclass
class ComponentConfig:
    domain: str
    secret: str


@dataclass
class Config:
    domain: str = "localhost"
    data_dir: str = "./data"
    log_level: str = "info"
    admins: list[str] = field(default_factory=list)
    c2s: C2SConfig = field(default_factory=C2SConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    muc: MucConfig = field(default_factory=MucConfig)
    account_join: AccountJoinConfig = field(default_factory=AccountJoinConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    component_port: int = 0
    components: list[ComponentConfig] = field(default_factory=list)
    source: str = "built-in defaults"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


_DURATION_KEYS = {
    "account_join.linger",
    "account_join.self_ping_interval",
    "archive.retention",
    "limits.unauthenticated_timeout",
    "limits.sm_resume_timeout",
}


def _fill(obj: Any, data: dict[str, Any], prefix: str) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in known or key == "source":
            raise ConfigError(f"{full}: unknown key")
        current = getattr(obj, key)
        if full in _DURATION_KEYS:
            setattr(obj, key, parse_duration(value, full))
        elif hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigError(f"[{full}]: expected a table")
            _fill(current, value, f"{full}.")
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{full}: expected true or false, got {value!r}")
            setattr(obj, key, value)
        elif isinstance(current, int) and not isinstance(current, bool):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{full}: expected a whole number of zero or more, got {value!r}")
            setattr(obj, key, value)
        elif isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{full}: expected a number of zero or more, got {value!r}")
            setattr(obj, key, float(value))
        elif isinstance(current, str):
            if not isinstance(value, str):
                raise ConfigError(f"{full}: expected a string, got {value!r}")
            setattr(obj, key, value)
        elif isinstance(current, list):
            if not isinstance(value, list):
                raise ConfigError(f"{full}: expected a list, got {value!r}")
            setattr(obj, key, value)
        else:
            raise ConfigError(f"{full}: unsupported value {value!r}")


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    cfg = Config(source=source)
    data = dict(data)
    comps = data.pop("component", data.pop("components", []))
    _fill(cfg, data, "")
    muc = data.get("muc")
    if not (isinstance(muc, dict) and "domain" in muc):
        cfg.muc.domain = f"conference.{cfg.domain}"  # the default follows the domain
    if not isinstance(comps, list):
        raise ConfigError("[[component]]: expected an array of tables with domain and secret")
    for i, c in enumerate(comps):
        if (
            not isinstance(c, dict)
            or not isinstance(c.get("domain"), str)
            or not isinstance(c.get("secret"), str)
        ):
            raise ConfigError(f'component[{i}]: expected domain = "..." and secret = "..."')
        cfg.components.append(ComponentConfig(c["domain"], c["secret"]))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    from minimix.protocol.jid import InvalidJID, prep_domain

    try:
        prep_domain(cfg.domain)
    except InvalidJID:
        raise ConfigError(f"domain: expected a domain name, got {cfg.domain!r}") from None
    if cfg.muc.domain:
        try:
            prep_domain(cfg.muc.domain)
        except InvalidJID:
            raise ConfigError(
                f"muc.domain: expected a domain name, got {cfg.muc.domain!r}"
            ) from None
        if cfg.muc.domain == cfg.domain:
            raise ConfigError("muc.domain: must differ from domain")
    for key, port in (
        ("c2s.port", cfg.c2s.port),
        ("c2s.direct_tls_port", cfg.c2s.direct_tls_port),
        ("http.port", cfg.http.port),
        ("component_port", cfg.component_port),
    ):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{key}: expected a port number between 0 and 65535, got {port}")
    if cfg.limits.max_stanza_size < 1024:
        raise ConfigError("limits.max_stanza_size: expected at least 1024 bytes")
    if cfg.limits.max_depth < 16:
        raise ConfigError("limits.max_depth: expected at least 16 (stanzas nest about 10 deep)")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level: expected one of debug, info, warning, error")
    if cfg.storage.url and not (
        cfg.storage.url.startswith("sqlite:") or cfg.storage.url.startswith("postgresql://")
    ):
        raise ConfigError("storage.url: expected empty, sqlite:///PATH or postgresql://...")
    if cfg.storage.url.startswith("postgresql://"):
        raise ConfigError("storage.url: PostgreSQL is not supported yet; leave empty for SQLite")
    if bool(cfg.tls.certificate) != bool(cfg.tls.key):
        raise ConfigError("tls: set both certificate and key, or neither")
    if cfg.muc.creation not in ("local", "anyone", "admins"):
        raise ConfigError('muc.creation: expected "local", "anyone" or "admins"')


def load(path: str | None) -> Config:
    """Load ``path``, else ``./minimix.toml`` when present, else the built-in defaults."""
    if path is None:
        if Path("minimix.toml").exists():
            path = "minimix.toml"
        else:
            return from_dict({}, "built-in defaults")
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--config: file {path} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    return from_dict(data, str(p))
