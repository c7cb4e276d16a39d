"""SASL mechanisms, server side, against scramp's client side (no sockets)."""

from __future__ import annotations

import base64
import hashlib

import pytest
import scramp

from minimix.stream import sasl


def run_scram(
    mechanism: str,
    password: str,
    stored_password: str | None,
    server_binding: tuple[str, bytes] | None = None,
    client_binding: tuple[str, bytes] | None = None,
    user: str = "alice",
) -> bool:
    hash_name = "SHA-256" if "256" in mechanism else "SHA-1"
    creds = sasl.make_credentials(stored_password, hash_name) if stored_password else None
    server = sasl.ScramServer(mechanism, creds, server_binding, user)
    client = scramp.ScramClient([mechanism], user, password, channel_binding=client_binding)
    first = client.get_client_first().encode()
    assert sasl.scram_username(first) == user
    client.set_server_first(server.first(first).decode())
    try:
        final = server.final(client.get_client_final().encode())
    except sasl.SaslFailure as fail:
        assert fail.condition == "not-authorized"
        return False
    client.set_server_final(final.decode())  # the client verifies the server too
    return True


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram(mechanism: str) -> None:
    assert run_scram(mechanism, "pencil", "pencil")
    assert not run_scram(mechanism, "wrong", "pencil")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_unknown_user_fails_like_a_wrong_password(mechanism: str) -> None:
    assert not run_scram(mechanism, "pencil", None)
    # The fake salt is stable per name, so probing twice reveals nothing.
    a = sasl.fake_credentials("ghost", "SHA-256")
    b = sasl.fake_credentials("ghost", "SHA-256")
    c = sasl.fake_credentials("other", "SHA-256")
    assert a.salt == b.salt != c.salt


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_plus_with_tls_server_end_point(mechanism: str) -> None:
    binding = ("tls-server-end-point", b"\x01" * 32)
    assert run_scram(mechanism, "pencil", "pencil", binding, binding)
    # A different certificate hash (a man in the middle) fails.
    other = ("tls-server-end-point", b"\x02" * 32)
    assert not run_scram(mechanism, "pencil", "pencil", binding, other)


def test_passwords_are_prepared_with_opaque_string() -> None:
    # Width-mapped and non-ASCII spaces are normalised (RFC 8265 OpaqueString).
    assert run_scram("SCRAM-SHA-256", "pass\u3000word", "pass word")
    with pytest.raises(sasl.SaslFailure):
        sasl.prepare_password("bell\u0007")


def test_check_password_for_plain() -> None:
    creds = sasl.make_credentials("s3cret ☃", "SHA-256")
    assert sasl.check_password("s3cret ☃", creds, "SHA-256")
    assert not sasl.check_password("s3cret", creds, "SHA-256")
    creds1 = sasl.make_credentials("x", "SHA-1")
    assert sasl.check_password("x", creds1, "SHA-1")
    assert creds.iterations >= 4096 and len(creds.salt) >= 16


def test_plain_parsing() -> None:
    assert sasl.parse_plain(b"\0alice\0pw") == ("", "alice", "pw")
    assert sasl.parse_plain(b"alice@x\0alice\0p\xc3\xa9") == ("alice@x", "alice", "pé")
    for bad in (b"alice\0pw", b"\0a\0b\0c", b"\0\xff\0pw"):
        with pytest.raises(sasl.SaslFailure) as err:
            sasl.parse_plain(bad)
        assert err.value.condition == "malformed-request"


def test_payload_encoding() -> None:
    assert sasl.decode_payload("=") == b""
    assert sasl.decode_payload(None) == b""
    assert sasl.decode_payload(base64.b64encode(b"abc").decode()) == b"abc"
    assert sasl.encode_payload(b"") == "="
    with pytest.raises(sasl.SaslFailure) as err:
        sasl.decode_payload("not base64!")
    assert err.value.condition == "incorrect-encoding"


def test_scram_username_unescapes() -> None:
    assert sasl.scram_username(b"n,,n=a=2Cb=3Dc,r=abc") == "a,b=c"
    with pytest.raises(sasl.SaslFailure):
        sasl.scram_username(b"garbage")


def test_malformed_scram_messages() -> None:
    creds = sasl.make_credentials("pw", "SHA-256")
    server = sasl.ScramServer("SCRAM-SHA-256", creds, None, "alice")
    with pytest.raises(sasl.SaslFailure) as err:
        server.first(b"x,,y")
    assert err.value.condition == "malformed-request"


def test_elements() -> None:
    mechs = sasl.mechanisms_element(["SCRAM-SHA-256", "PLAIN"])
    assert [m.text for m in mechs] == ["SCRAM-SHA-256", "PLAIN"]
    fail = sasl.failure("not-authorized", "nope")
    assert fail[0].tag.endswith("}not-authorized") and fail[1].text == "nope"
    assert sasl.success(b"v=x").text == base64.b64encode(b"v=x").decode()
    assert sasl.success().text is None


def test_tls_server_end_point_hash() -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    # RFC 5929 §4.1: the certificate's own signature hash when it is SHA-256 or stronger.
    assert sasl.tls_server_end_point(der) == hashlib.sha384(der).digest()
