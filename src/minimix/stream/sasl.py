"""SASL (RFC 6120 §6) element shapes and the server side of SCRAM and PLAIN.

The mechanisms are pure: they never look up credentials themselves. SCRAM needs the stored keys
of the user named in the client-first message: :func:`scram_username` extracts it so the caller
can fetch them (asynchronously) before :meth:`ScramServer.first`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

import scramp
from precis_i18n import get_profile

from minimix.protocol import ns
from minimix.protocol.xml import Element, SubElement, tag

_OPAQUE = get_profile("OpaqueString")
SCRAM_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1")
ITERATIONS = 4096


class SaslFailure(Exception):
    """Authentication failed; ``condition`` is the SASL failure element name."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """Stored SCRAM keys for one hash: never the password itself."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def prepare_password(password: str) -> str:
    """PRECIS OpaqueString, as RFC 7622 / RFC 8265 require for passwords."""
    try:
        out: str = _OPAQUE.enforce(password)
    except UnicodeError as exc:
        raise SaslFailure("malformed-request", "invalid password") from exc
    return out


def make_credentials(password: str, hash_name: str) -> ScramCredentials:
    """Derive SCRAM keys for ``hash_name`` ("SHA-1" or "SHA-256") from a password."""
    mech = scramp.ScramMechanism(f"SCRAM-{hash_name}")
    salt, stored, server, iters = mech.make_auth_info(
        prepare_password(password), iteration_count=ITERATIONS
    )
    return ScramCredentials(salt, stored, server, iters)


_FAKE_SECRET = os.urandom(32)


def fake_credentials(username: str, hash_name: str) -> ScramCredentials:
    """Keys for a user who does not exist: the same salt every time for the same name."""
    h = "sha1" if hash_name == "SHA-1" else "sha256"
    name = username.encode()
    salt = hmac.new(_FAKE_SECRET, b"salt" + name, "sha256").digest()[:16]
    stored = hmac.new(_FAKE_SECRET, b"stored" + name, h).digest()
    server = hmac.new(_FAKE_SECRET, b"server" + name, h).digest()
    return ScramCredentials(salt, stored, server, ITERATIONS)


def check_password(password: str, creds: ScramCredentials, hash_name: str) -> bool:
    """Check a plaintext password (PLAIN) against stored SCRAM keys."""
    h = "sha1" if hash_name == "SHA-1" else "sha256"
    salted = hashlib.pbkdf2_hmac(
        h, prepare_password(password).encode(), creds.salt, creds.iterations
    )
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored = hashlib.new(h, client_key).digest()
    return hmac.compare_digest(stored, creds.stored_key)


def decode_payload(text: str | None) -> bytes:
    if not text or text == "=":
        return b""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SaslFailure("incorrect-encoding") from exc


def encode_payload(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


def mechanisms_element(names: list[str]) -> Element:
    el = Element(tag(ns.SASL, "mechanisms"))
    for n in names:
        SubElement(el, tag(ns.SASL, "mechanism")).text = n
    return el


def challenge(data: bytes) -> Element:
    el = Element(tag(ns.SASL, "challenge"))
    el.text = encode_payload(data)
    return el


def success(data: bytes = b"") -> Element:
    el = Element(tag(ns.SASL, "success"))
    if data:
        el.text = encode_payload(data)
    return el


def failure(condition: str, text: str = "") -> Element:
    el = Element(tag(ns.SASL, "failure"))
    SubElement(el, tag(ns.SASL, condition))
    if text:
        SubElement(el, tag(ns.SASL, "text")).text = text
    return el


def parse_plain(data: bytes) -> tuple[str, str, str]:
    """Return (authzid, authcid, password) from a PLAIN initial response."""
    try:
        authzid, authcid, password = data.decode("utf-8").split("\0")
    except (UnicodeDecodeError, ValueError) as exc:
        raise SaslFailure("malformed-request") from exc
    return authzid, authcid, password


def scram_username(client_first: bytes) -> str:
    """The (SCRAM-escaped) username from a SCRAM client-first message."""
    try:
        text = client_first.decode("utf-8")
        bare = text.split(",", 2)[2]
        for part in bare.split(","):
            if part.startswith("n="):
                return part[2:].replace("=2C", ",").replace("=3D", "=")
    except (UnicodeDecodeError, IndexError):
        pass
    raise SaslFailure("malformed-request")


class ScramServer:
    """One SCRAM exchange (RFC 5802 / RFC 7677), with optional channel binding."""

    def __init__(
        self,
        mechanism: str,
        creds: ScramCredentials | None,
        channel_binding: tuple[str, bytes] | None,
        username: str = "",
    ) -> None:
        """``creds`` is None for an unknown user: the exchange then runs to the end with
        stable fake keys and fails, so a client cannot tell unknown users from wrong passwords.
        """
        self.mechanism = mechanism
        plus = mechanism.endswith("-PLUS")
        mech = scramp.ScramMechanism(mechanism)
        fake = creds is None
        if creds is None:
            creds = fake_credentials(username, "SHA-256" if "256" in mechanism else "SHA-1")
        stored = creds

        def lookup(_username: str) -> tuple[bytes, bytes, bytes, int]:
            return stored.salt, stored.stored_key, stored.server_key, stored.iterations

        self._fake = fake
        self._server = mech.make_server(lookup, channel_binding=channel_binding if plus else None)
        self._has_binding = channel_binding is not None

    def first(self, client_first: bytes) -> bytes:
        try:
            self._server.set_client_first(client_first.decode("utf-8"))
            return str(self._server.get_server_first()).encode()
        except scramp.ScramException as exc:
            raise SaslFailure("malformed-request", str(exc)) from exc
        except UnicodeDecodeError as exc:
            raise SaslFailure("malformed-request") from exc

    def final(self, client_final: bytes) -> bytes:
        try:
            self._server.set_client_final(client_final.decode("utf-8"))
            if self._fake:
                raise SaslFailure("not-authorized")
            return str(self._server.get_server_final()).encode()
        except scramp.ScramException as exc:
            raise SaslFailure("not-authorized") from exc
        except UnicodeDecodeError as exc:
            raise SaslFailure("malformed-request") from exc


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 tls-server-end-point binding data for our certificate (SHA-256 or stronger)."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(cert_der)
    algo = cert.signature_hash_algorithm
    name = algo.name if algo is not None else "sha256"
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, cert_der).digest()
