"""The `minimix` command as an operator runs it: `check` on good and bad certificates and
configurations, configuration and argument errors (one line, exit 2, no traceback), `serve`."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from minimix.cli import main
from tests.e2e.core_helpers import free_port


def minimix(
    *args: str, cwd: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minimix", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        input=stdin,
    )


def make_cert(
    folder: Path,
    name: str,
    domain: str = "chat.example.org",
    days: float = 90,
    weak: bool = False,
) -> tuple[Path, Path]:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 1024) if weak else ec.generate_private_key(ec.SECP256R1())
    )
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    c, k = folder / f"{name}.crt", folder / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "minimix.toml"
    path.write_text(f'domain = "chat.example.org"\ndata_dir = "{tmp_path / "data"}"\n{body}')
    return path


def tls(cert: Path, key: Path) -> str:
    return f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n'


def test_check_accepts_a_good_certificate(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "good")
    r = minimix("check", "--config", str(config(tmp_path, tls(cert, key))))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    ("kind", "expected", "status"),
    [
        ("expired", "expired on", 1),
        ("expiring", "expires soon", 0),
        ("wrong name", "does not name chat.example.org", 0),
        ("weak key", "weak 1024-bit RSA key", 1),
        ("mismatched key", "do not load together", 1),
        ("missing file", "does not exist", 1),
        ("not a certificate", "is not a PEM certificate", 1),
    ],
)
def test_check_reports_certificate_problems(
    tmp_path: Path, kind: str, expected: str, status: int
) -> None:
    if kind == "expired":
        cert, key = make_cert(tmp_path, "c", days=-1)
    elif kind == "expiring":
        cert, key = make_cert(tmp_path, "c", days=5)
    elif kind == "wrong name":
        cert, key = make_cert(tmp_path, "c", domain="other.example.net")
    elif kind == "weak key":
        cert, key = make_cert(tmp_path, "c", weak=True)
    elif kind == "mismatched key":
        cert, _ = make_cert(tmp_path, "c")
        _, key = make_cert(tmp_path, "d")
    elif kind == "missing file":
        cert, key = tmp_path / "none.crt", tmp_path / "none.key"
    else:
        cert, key = make_cert(tmp_path, "c")
        cert.write_text("hello")
    r = minimix("check", "--config", str(config(tmp_path, tls(cert, key))))
    assert expected in r.stdout, r.stdout + r.stderr
    assert r.returncode == status
    assert "Traceback" not in r.stderr


def test_check_warns_about_weak_configuration(tmp_path: Path) -> None:
    body = "[c2s]\nrequire_encryption = false\n[registration]\nopen = true\nthrottle_per_ip = 0\n"
    r = minimix("check", "--config", str(config(tmp_path, body)))
    assert "c2s.require_encryption is false" in r.stdout
    assert "registration is open without a per-IP throttle" in r.stdout
    assert "self-signed" in r.stdout


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[c2s]\nport = 70000\n", "c2s.port"),
        ('[c2s]\nport = "5222"\n', "c2s.port"),
        ("[registration]\nopen = 1\n", "registration.open"),
        ("[limits]\nmax_stanza_size = 10\n", "limits.max_stanza_size"),
        ('[account_join]\nlinger = "soon"\n', "account_join.linger"),
        ("[storage]\nurl = 'mysql://x'\n", "storage.url"),
        ("nonsense_key = 1\n", "nonsense_key"),
        ("[c2s]\nbogus = 1\n", "c2s.bogus"),
        ("c2s = 5\n", "c2s"),
        ('[tls]\ncertificate = "/x.pem"\n', "tls"),
        ("[[component]]\ndomain = 'gw.example.org'\n", "component"),
        ("this is = not toml [\n", "not valid TOML"),
    ],
)
def test_config_errors_are_one_line_with_exit_2(
    tmp_path: Path, body: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, body)
    for command in (["check"], ["serve"], ["user", "list"]):
        assert main([*command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert key in lines[0]


def test_config_error_from_the_real_command(tmp_path: Path) -> None:
    r = minimix("serve", "--config", str(config(tmp_path, "[c2s]\nport = -1\n")))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "minimix: c2s.port: expected a whole number of zero or more, got -1"
    ]


def test_bad_domain_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('domain = "not a domain!"\n')
    r = minimix("check", "--config", str(path))
    assert r.returncode == 2
    assert r.stderr.startswith("minimix: domain:")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "command"),
        (["frobnicate"], "frobnicate"),
        (["user"], "action"),
        (["user", "add"], "jid"),
        (["user", "add", "bad@@jid", "--password", "x"], "JID"),
        (["user", "add", "someone@elsewhere.org", "--password", "x"], "JID"),
        (["user", "add", "x@localhost", "--password", ""], "--password"),
        (["serve", "--bogus"], "--bogus"),
        (["check", "--config", "/does/not/exist.toml"], "--config"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], needle: str) -> None:
    r = minimix(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3  # argparse adds its usage line


def test_user_commands_on_missing_accounts(tmp_path: Path) -> None:
    path = config(tmp_path, "")
    r = minimix("user", "delete", "ghost@chat.example.org", "--config", str(path))
    assert r.returncode == 1 and "no account" in r.stderr
    r = minimix("user", "passwd", "ghost", "--password", "x", "--config", str(path))
    assert r.returncode == 1 and "no account" in r.stderr


def test_serve_uses_minimix_toml_in_the_current_folder(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "minimix.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\nlog_level = "info"\n'
        f"[c2s]\nport = {port}\ndirect_tls_port = 0\n[http]\nport = 0\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "minimix", "serve"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        ports = tmp_path / "data" / "ports.json"
        deadline = time.monotonic() + 30
        while not ports.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ports.exists(), proc.stdout.read() if proc.stdout else ""
        assert str(port) in ports.read_text()
        # The self-signed certificate was generated for the domain on first start.
        assert (tmp_path / "data" / "tls" / "self-signed.crt").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "minimix serving localhost" in out
    assert "Traceback" not in out


def test_serve_on_a_busy_port_says_so(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = config(tmp_path, f"[c2s]\nport = {port}\ndirect_tls_port = 0\n[http]\nport = 0\n")
        r = minimix("serve", "--config", str(path))
    assert r.returncode == 1
    assert "cannot listen" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_warns_when_password_guessing_is_not_throttled(tmp_path: Path) -> None:
    cfg = tmp_path / "minimix.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[limits]\nauth_failures_per_ip = 0\n'
        "unauthenticated_per_ip = 0\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "minimix", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "limits.auth_failures_per_ip is 0" in out.stdout
    assert "limits.unauthenticated_per_ip is 0: no client could ever log in" in out.stdout
    assert out.returncode == 1
