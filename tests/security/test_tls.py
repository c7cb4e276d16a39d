"""TLS defaults over real handshakes: TLS 1.2 minimum, forward-secret AEAD ciphers only, no
compression. Each refusal is checked against a control server that accepts the same client, so
the test proves the server refused, not that the client could not try. (``minimix check`` on
weak certificates and settings is tested in tests/e2e/test_cli.py.)"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from tests.security.hostile import TLS_NS, Peer, assert_unaffected, hang_up, neighbours
from tests.support import Running, running_server

# The point of these tests is to try the deprecated protocol versions.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


def old_client(maximum: ssl.TLSVersion, ciphers: str = "DEFAULT") -> ssl.SSLContext:
    """A client willing to speak old protocols (OpenSSL hides them at its default level)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = maximum
    return ctx


async def handshake_with_control(srv: Running, client: ssl.SSLContext) -> str:
    """A permissive TLS server with the same certificate: returns the version it negotiated."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(srv.ca, srv.data_dir / "tls" / "self-signed.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    control = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    port = control.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        return str(version)
    finally:
        control.close()


async def starttls_with(srv: Running, client: ssl.SSLContext) -> ssl.SSLObject:
    """Negotiate STARTTLS on the client port with ``client``; raises on a refused handshake."""
    p = Peer()
    await p.connect(srv.port)
    await p.start()
    p.send(f"<starttls xmlns='{TLS_NS}'/>")
    assert (await p.recv()).tag == f"{{{TLS_NS}}}proceed"
    assert p.writer is not None
    await asyncio.wait_for(p.writer.start_tls(client, server_hostname="localhost"), 10)
    ssl_object = p.writer.get_extra_info("ssl_object")
    assert isinstance(ssl_object, ssl.SSLObject)
    return ssl_object


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLS 1.0", "TLS 1.1"]
)
async def test_tls_1_1_client_is_refused(tmp_path: Path, version: ssl.TLSVersion) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        client = old_client(version)
        assert await handshake_with_control(srv, client) == version.name.replace("_", ".")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await starttls_with(srv, client)
        await assert_unaffected(a, b)
        await hang_up(a, b)


@pytest.mark.parametrize(
    "ciphers",
    ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256"],
    ids=["CBC with SHA-1", "CBC with SHA-384", "CBC with SHA-256"],
)
async def test_weak_cipher_is_refused(tmp_path: Path, ciphers: str) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        client = old_client(ssl.TLSVersion.TLSv1_2, ciphers)
        assert await handshake_with_control(srv, client) == "TLSv1.2"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await starttls_with(srv, client)
        await assert_unaffected(a, b)
        await hang_up(a, b)


async def test_modern_tls_is_accepted_without_compression(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        a, b = await neighbours(srv)
        for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            client = ssl.create_default_context(cafile=str(srv.ca))
            client.maximum_version = maximum
            tls = await starttls_with(srv, client)
            assert tls.version() == maximum.name.replace("_", ".")
            assert tls.compression() is None
            cipher, _, _ = tls.cipher()  # type: ignore[misc]
            assert "GCM" in cipher or "CHACHA20" in cipher
            if maximum is ssl.TLSVersion.TLSv1_2:
                assert cipher.startswith(("ECDHE", "DHE"))  # forward secrecy
        await assert_unaffected(a, b)
        await hang_up(a, b)
