"""Start and stop the servers under test: minimix, Prosody and ejabberd.

Every server gets its own temporary directory holding its configuration, certificate, data, logs
and pid file, listens on loopback ports chosen at start, and runs in its own process group so that
``stop()`` ends it with all its children. Servers still running when the interpreter exits are
stopped by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import procinfo

DOMAIN = "localhost"
MUC_DOMAIN = "conference.localhost"
REPO_ROOT = Path(__file__).resolve().parent.parent
MINIMIX_BIN = REPO_ROOT / ".venv" / "bin" / "minimix"
PEER_PACKAGES = ("prosody", "ejabberd")
SERVER_NAMES = ("minimix", "prosody", "ejabberd")

_running: list[ServerHandle] = []


class ServerStartError(RuntimeError):
    """A server did not start; the message says why and quotes the end of its log."""


@dataclass
class ServerHandle:
    """A running server: where to reach it and how to measure and stop it."""

    name: str
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int
    log_paths: list[Path]
    http_port: int | None = None
    archive: bool = False
    notes: list[str] = field(default_factory=list)
    domain: str = DOMAIN
    muc_domain: str = MUC_DOMAIN
    host: str = "127.0.0.1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        return procinfo.cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return procinfo.rss_bytes(self.pid)

    def metric(self, name: str) -> float | None:
        """The sum of all samples of ``name`` on the server's /metrics page, or None."""
        if self.http_port is None:
            return None
        return read_metric(f"http://127.0.0.1:{self.http_port}/metrics", name)

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for path in self.log_paths:
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                parts.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def stop(self, keep_workdir: bool = False) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL after a grace period."""
        _stop_group(self.process)
        if self in _running:
            _running.remove(self)
        if not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _stop_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    pgid = process.pid  # started with start_new_session=True: the group id is the pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            if not _group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            continue
        break
    try:
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@atexit.register
def stop_all() -> None:
    """Stop every server this process started and has not stopped yet."""
    for handle in list(_running):
        handle.stop()


def read_metric(url: str, name: str) -> float | None:
    """Sum the samples of one metric on a Prometheus text page; None if absent or unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest and rest[0] not in " {":
            continue
        try:
            value = float(line.rsplit(None, 1)[-1])
        except ValueError:
            continue
        total = value if total is None else total + value
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_installed(packages: tuple[str, ...] = PEER_PACKAGES) -> list[str]:
    """Install the missing Debian packages; return the names that are still missing."""
    commands = {"prosody": "prosody", "ejabberd": "erl"}
    missing = [p for p in packages if shutil.which(commands.get(p, p)) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], env=env, check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            env=env,
            check=False,
            capture_output=True,
        )
    return [p for p in packages if shutil.which(commands.get(p, p)) is None]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for the domain and its MUC service."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            f"/CN={DOMAIN}",
            "-addext",
            f"subjectAltName=DNS:{DOMAIN},DNS:{MUC_DOMAIN}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def wait_ready(handle: ServerHandle, timeout: float) -> None:
    """Wait until the server answers a stream header with stream features."""
    deadline = time.monotonic() + timeout
    header = (
        f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='http://etherx.jabber.org/streams' to='{handle.domain}' version='1.0'>"
    ).encode()
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not handle.alive():
            raise ServerStartError(
                f"{handle.name} exited with code {handle.process.returncode}\n{handle.log_tail()}"
            )
        try:
            with socket.create_connection((handle.host, handle.port), timeout=1) as sock:
                sock.sendall(header)
                received = b""
                sock.settimeout(2)
                while b"</stream:features>" not in received:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                if b"</stream:features>" in received:
                    return
                last_error = f"incomplete answer {received[:200]!r}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise ServerStartError(
        f"{handle.name} not ready after {timeout:.0f}s ({last_error})\n{handle.log_tail()}"
    )


def _spawn(
    name: str,
    argv: list[str],
    workdir: Path,
    port: int,
    log_paths: list[Path],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    http_port: int | None = None,
    archive: bool = False,
) -> ServerHandle:
    stdout = (workdir / "stdout.log").open("wb")
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            cwd=str(cwd or workdir),
            env=env,
            start_new_session=True,
        )
    finally:
        stdout.close()
    handle = ServerHandle(
        name=name,
        process=process,
        workdir=workdir,
        port=port,
        log_paths=[*log_paths, workdir / "stdout.log"],
        http_port=http_port,
        archive=archive,
    )
    _running.append(handle)
    return handle


# --- Prosody -----------------------------------------------------------------------------------


def _lua(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prosody_config(workdir: Path, port: int, cert: Path, key: Path, archive: bool) -> str:
    muc_modules = '"muc_mam"' if archive else ""
    log_file = _lua(str(workdir / "prosody.log"))
    ssl = f"{{ certificate = {_lua(str(cert))}; key = {_lua(str(key))}; }}"
    return f"""-- Generated for a benchmark run: loopback only, everything under {workdir}.
run_as_root = true
pidfile = {_lua(str(workdir / "prosody.pid"))}
data_path = {_lua(str(workdir / "data"))}
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = {log_file} }} }}
network_backend = "epoll"
network_settings = {{ nagle = false }}
use_ipv6 = false
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
s2s_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "register"; "posix" }}
modules_disabled = {{ "s2s"; "s2s_auth_certs" }}
c2s_require_encryption = true
allow_registration = true
registration_throttle_max = nil
min_seconds_between_registrations = nil
authentication = "internal_hashed"
storage = "internal"
certificates = {_lua(str(workdir))}
ssl = {ssl}

VirtualHost "{DOMAIN}"
    ssl = {ssl}

Component "{MUC_DOMAIN}" "muc"
    modules_enabled = {{ {muc_modules} }}
    ssl = {ssl}
    restrict_room_creation = false
    muc_room_default_history_length = 0
    muc_tombstones = false
    muc_log_by_default = {"true" if archive else "false"}
    muc_log_all_rooms = {"true" if archive else "false"}
"""


def start_prosody(base: Path, archive: bool = False, timeout: float = 30.0) -> ServerHandle:
    prosody = shutil.which("prosody")
    if prosody is None:
        raise ServerStartError("prosody is not installed (apt-get install prosody)")
    workdir = Path(tempfile.mkdtemp(prefix="prosody-", dir=base))
    (workdir / "data").mkdir()
    cert, key = make_certificate(workdir)
    port = free_port()
    config = workdir / "prosody.cfg.lua"
    config.write_text(prosody_config(workdir, port, cert, key, archive))
    handle = _spawn(
        "prosody",
        [prosody, "--config", str(config), "-F"],
        workdir,
        port,
        [workdir / "prosody.log"],
        archive=archive,
    )
    handle.notes.append("storage: internal (files)")
    if archive:
        handle.notes.append("archive: mod_muc_mam, room archive")
    _wait_or_stop(handle, timeout)
    return handle


# --- ejabberd ----------------------------------------------------------------------------------


def ejabberd_config(port: int, cert: Path, key: Path, archive: bool) -> str:
    mam_module = "  mod_mam:\n    default: always\n" if archive else ""
    return f"""# Generated for a benchmark run: loopback only, no traffic shaping.
hosts:
  - "{DOMAIN}"
loglevel: warning
log_rotate_count: 0
certfiles:
  - "{cert}"
  - "{key}"
acme:
  auto: false
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    shaper: none
    access: c2s
    max_stanza_size: 262144
    backlog: 4096
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  local:
    allow: all
  c2s:
    allow: all
  register:
    allow: all
  muc_create:
    allow: all
shaper: {{}}
shaper_rules:
  max_user_sessions: 1000000
  max_user_offline_messages: 100
  c2s_shaper: none
  s2s_shaper: none
max_fsm_queue: 1000000
registration_timeout: infinity
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha256
s2s_access: none
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_register:
    access: register
    ip_access: all
    password_strength: 0
  mod_muc:
    host: "{MUC_DOMAIN}"
    access: all
    access_create: muc_create
    access_persistent: muc_create
    history_size: 0
    max_users: 1000000
    max_users_presence: 1000000
    max_user_conferences: 1000000
    min_message_interval: 0
    min_presence_interval: 0
    room_shaper: none
    user_message_shaper: none
    user_presence_shaper: none
    default_room_options:
      max_users: 1000000
      mam: {"true" if archive else "false"}
{mam_module}"""


def start_ejabberd(base: Path, archive: bool = False, timeout: float = 60.0) -> ServerHandle:
    erl = shutil.which("erl")
    libs = sorted(Path("/usr/lib/x86_64-linux-gnu").glob("ejabberd-*")) or sorted(
        Path("/usr/lib").glob("*/ejabberd-*")
    )
    if erl is None or not libs:
        raise ServerStartError("ejabberd is not installed (apt-get install ejabberd)")
    workdir = Path(tempfile.mkdtemp(prefix="ejabberd-", dir=base))
    spool = workdir / "spool"
    spool.mkdir()
    cert, key = make_certificate(workdir)
    port, dist_port = free_port(), free_port()
    config = workdir / "ejabberd.yml"
    config.write_text(ejabberd_config(port, cert, key, archive))
    node = f"ejbench{port}@localhost"
    env = dict(
        os.environ,
        HOME=str(workdir),
        EJABBERD_CONFIG_PATH=str(config),
        EJABBERD_LOG_PATH=str(workdir / "ejabberd.log"),
        EJABBERD_PID_PATH=str(workdir / "ejabberd.pid"),
        ERL_LIBS=str(libs[-1].parent),
        ERL_CRASH_DUMP=str(workdir / "erl_crash.dump"),
        ERL_CRASH_DUMP_BYTES="0",
        ERL_MAX_PORTS="1000000",
        ERL_MAX_ETS_TABLES="10000",
        ERL_EPMD_ADDRESS="127.0.0.1",
    )
    argv = [
        erl,
        "-sname",
        node,
        "-setcookie",
        "bench",
        "-noinput",
        "+P",
        "2000000",
        # Schedulers that spin while idle would count as CPU time the server did not need.
        "+sbwt",
        "none",
        "+sbwtdcpu",
        "none",
        "+sbwtdio",
        "none",
        # No epmd: the node listens for distribution on one fixed loopback port.
        "-start_epmd",
        "false",
        "-erl_epmd_port",
        str(dist_port),
        "-kernel",
        "inet_dist_use_interface",
        "{127,0,0,1}",
        "-mnesia",
        "dir",
        f'"{spool}"',
        "-s",
        "ejabberd",
    ]
    handle = _spawn(
        "ejabberd",
        argv,
        workdir,
        port,
        [workdir / "ejabberd.log", workdir / "error.log"],
        env=env,
        cwd=spool,
        archive=archive,
    )
    handle.notes.append("storage: mnesia")
    if archive:
        handle.notes.append("archive: mod_mam, room archive (mam: true)")
    _wait_or_stop(handle, timeout)
    return handle


# --- minimix -----------------------------------------------------------------------------------


def minimix_config(
    workdir: Path, port: int, http_port: int, cert: Path, key: Path, archive: bool
) -> str:
    return f"""# Generated for a benchmark run: loopback only, no traffic shaping.
domain = "{DOMAIN}"
data_dir = "{workdir / "data"}"
log_level = "warning"

[c2s]
host = "127.0.0.1"
port = {port}
direct_tls_port = 0

[tls]
certificate = "{cert}"
key = "{key}"

[registration]
open = true
throttle_per_ip = 0

[muc]
domain = "{MUC_DOMAIN}"
default_history = 0
# Rooms keep no archive of their own, in every scenario: the archive scenario measures the
# account archive (the issue's "account archive on versus off"), which account-join fills.
archive_by_default = false

[account_join]
enabled = true

[archive]
enabled = {"true" if archive else "false"}

[limits]
rate = 1000000000.0
burst = 1000000000
max_output_buffer = 67108864
unauthenticated_per_ip = 1000000
auth_failures_per_ip = 0
auth_failures_per_account = 0
resources_per_account = 100000
rooms_per_account = 100000
occupants_per_room = 100000

[http]
host = "127.0.0.1"
port = {http_port}
"""


def start_minimix(base: Path, archive: bool = False, timeout: float = 30.0) -> ServerHandle:
    binary = Path(os.environ.get("MINIMIX_BIN", str(MINIMIX_BIN)))
    if not binary.exists():
        raise ServerStartError(f"minimix is not installed ({binary} missing)")
    workdir = Path(tempfile.mkdtemp(prefix="minimix-", dir=base))
    (workdir / "data").mkdir()
    cert, key = make_certificate(workdir)
    port, http_port = free_port(), free_port()
    config = workdir / "minimix.toml"
    config.write_text(minimix_config(workdir, port, http_port, cert, key, archive))
    handle = _spawn(
        "minimix",
        [str(binary), "serve", "--config", str(config)],
        workdir,
        port,
        [],
        http_port=http_port,
        archive=archive,
    )
    handle.notes.append("account_join: on")
    _wait_or_stop(handle, timeout)
    return handle


def _wait_or_stop(handle: ServerHandle, timeout: float) -> None:
    try:
        wait_ready(handle, timeout)
    except BaseException:
        handle.stop(keep_workdir=True)
        raise


STARTERS: dict[str, Callable[..., ServerHandle]] = {
    "minimix": start_minimix,
    "prosody": start_prosody,
    "ejabberd": start_ejabberd,
}


def start_server(name: str, base: Path, archive: bool = False) -> ServerHandle:
    """Start one server by name under ``base``; raises ServerStartError if it does not come up."""
    try:
        starter = STARTERS[name]
    except KeyError:
        raise ServerStartError(f"unknown server {name!r}") from None
    return starter(base, archive=archive)


def main() -> None:
    """Start the named servers, print where they listen, and stop them on Enter or Ctrl-C."""
    names = sys.argv[1:] or list(SERVER_NAMES)
    ensure_installed()
    base = Path(tempfile.mkdtemp(prefix="minimix-bench-"))
    try:
        for name in names:
            try:
                handle = start_server(name, base)
            except ServerStartError as exc:
                print(f"{name}: failed to start: {exc}")
                continue
            print(f"{name}: pid {handle.pid} port {handle.port} dir {handle.workdir}")
        input("running; press Enter to stop\n")
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        stop_all()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
