"""TLS: certificates (self-signed on first start when none is configured) and SSL contexts."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)


def ensure_certificate(data_dir: Path, domains: list[str]) -> tuple[Path, Path]:
    """Create (once) a self-signed certificate for ``domains`` and their subdomains."""
    cert_path = data_dir / "tls" / "self-signed.crt"
    key_path = data_dir / "tls" / "self-signed.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for d in dict.fromkeys(domains):
        names.append(x509.DNSName(d))
        names.append(x509.DNSName(f"*.{d}"))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("generated a self-signed certificate for %s in %s", ", ".join(domains), cert_path)
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2 minimum, no compression, forward-secret AEAD ciphers."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS")
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def certificate_der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(
        cert.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )


def check_certificate(cert: Path, key: Path, domain: str) -> list[str]:
    """Plain-words problems with a certificate: missing, unreadable, expiring, wrong names."""
    problems: list[str] = []
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not cert.exists():
        return [f"tls.certificate: file {cert} does not exist"]
    if not key.exists():
        return [f"tls.key: file {key} does not exist"]
    try:
        c = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        return [f"tls.certificate: {cert} is not a PEM certificate"]
    try:
        server_context(cert, key)
    except (ssl.SSLError, OSError) as exc:
        problems.append(f"tls: certificate and key do not load together ({exc})")
    now = datetime.datetime.now(datetime.UTC)
    end = c.not_valid_after_utc
    if end < now:
        problems.append(f"tls.certificate: expired on {end:%Y-%m-%d}")
    elif end - now < datetime.timedelta(days=14):
        problems.append(f"warning: tls.certificate expires soon, on {end:%Y-%m-%d}")
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not any(n == domain or (n.startswith("*.") and domain.endswith(n[1:])) for n in names):
        problems.append(f"warning: tls.certificate does not name {domain} (it names {names})")
    pub = c.public_key()
    if isinstance(pub, rsa.RSAPublicKey) and pub.key_size < 2048:
        problems.append(
            f"tls.certificate: uses a weak {pub.key_size}-bit RSA key; use 2048 bits or more"
        )
    algo = c.signature_hash_algorithm
    if algo is not None and algo.name in ("md5", "sha1"):
        problems.append(f"warning: tls.certificate is signed with weak {algo.name}")
    return problems
