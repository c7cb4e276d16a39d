"""Logging in (RFC 6120 §5-7): STARTTLS and direct TLS, every SASL mechanism, wrong passwords,
resource binding and conflicts, with slixmpp and with the independent raw client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.core_helpers import close, free_port, login, mechanism_used
from tests.e2e.raw_client import BIND_NS, SASL_NS, STANZAS_NS, RawClient
from tests.support import running_server


async def test_starttls_login_with_scram_sha_256(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        a = await login(srv, f"{alice}/starttls", mechanism="SCRAM-SHA-256")
        assert mechanism_used(a) == "SCRAM-SHA-256"
        assert str(a.boundjid) == f"{alice}/starttls"
        await close(a)


async def test_direct_tls_login(tmp_path: Path) -> None:
    async with running_server(tmp_path, c2s={"direct_tls_port": free_port()}) as srv:
        bob = srv.add_user("bob")
        b = await login(srv, f"{bob}/direct", direct_tls=True)
        assert mechanism_used(b).startswith("SCRAM-SHA-")
        await b.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        await close(b)
        r = await RawClient().login(
            srv.direct_tls_port, "bob", ca=srv.ca, direct_tls=True, mechanism="SCRAM-SHA-256-PLUS"
        )
        assert r.jid == "bob@localhost/raw"
        r.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
async def test_each_mechanism_with_slixmpp(tmp_path: Path, mechanism: str) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice", "pässwörd")
        a = await login(srv, f"{alice}/m", password="pässwörd", mechanism=mechanism)
        assert mechanism_used(a) == mechanism
        await close(a)


@pytest.mark.parametrize(
    "mechanism", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "PLAIN"]
)
async def test_each_mechanism_with_raw_client(tmp_path: Path, mechanism: str) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("carol", "c0rrect horse")
        c = await RawClient().login(srv.port, "carol", "c0rrect horse", srv.ca, mechanism=mechanism)
        assert c.jid == "carol@localhost/raw"
        c.close()


async def test_plus_variants_are_offered_with_tls_server_end_point(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        features = await c.start()
        # Before TLS: only STARTTLS (required), no SASL at all.
        assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls/") is not None
        assert c.mechanisms() == []
        await c.starttls()
        mechs = c.mechanisms()
        assert {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "PLAIN"} <= set(mechs)
        cb = c.features.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding") if c.features else None
        assert cb is not None
        assert [x.get("type") for x in cb] == ["tls-server-end-point"]
        c.close()


async def test_wrong_password_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        with pytest.raises(PermissionError):
            await login(srv, f"{alice}/x", password="wrong", mechanism="SCRAM-SHA-256")
        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "PLAIN"):
            c = RawClient()
            await c.connect(srv.port, srv.ca)
            await c.start()
            await c.starttls()
            result = await c.authenticate("alice", "wrong", mech)
            assert result.tag == f"{{{SASL_NS}}}failure"
            assert result.find(f"{{{SASL_NS}}}not-authorized") is not None
            c.close()
        # An unknown account fails the same way (no account enumeration).
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        await c.starttls()
        result = await c.authenticate("nobody", "secret", "SCRAM-SHA-256")
        assert result.find(f"{{{SASL_NS}}}not-authorized") is not None
        # The right password still works afterwards, on the same connection.
        result = await c.authenticate("alice", "secret", "SCRAM-SHA-256")
        assert result.tag == f"{{{SASL_NS}}}success"
        c.close()


async def test_plain_is_not_offered_without_tls(tmp_path: Path) -> None:
    async with running_server(tmp_path, c2s={"require_encryption": False}) as srv:
        srv.add_user("alice")
        c = RawClient()
        await c.connect(srv.port)
        await c.start()
        assert "PLAIN" not in c.mechanisms()
        assert "SCRAM-SHA-256" in c.mechanisms()
        assert not any(m.endswith("-PLUS") for m in c.mechanisms())
        result = await c.authenticate("alice", "secret", "PLAIN")
        assert result.find(f"{{{SASL_NS}}}encryption-required") is not None
        c.close()


async def test_sasl_before_starttls_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        c = RawClient()
        await c.connect(srv.port)
        await c.start()
        c.send_raw(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
        assert await c.stream_error() == "policy-violation"
        c.close()


async def test_channel_binding_downgrade_is_refused(tmp_path: Path) -> None:
    """A client saying 'y' (it supports binding but thinks the server does not) is refused
    when the server did offer -PLUS: someone stripped it on the way (RFC 5802 §6)."""
    import base64

    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        await c.starttls()
        first = base64.b64encode(b"y,,n=alice,r=abcdefgh").decode()
        c.send_raw(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        result = await c.recv()
        assert result.tag == f"{{{SASL_NS}}}failure"
        c.close()


async def test_server_generated_and_client_chosen_resources(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        c1 = RawClient()
        await c1.login(srv.port, "alice", ca=srv.ca, resource=None)
        assert c1.jid.startswith("alice@localhost/") and len(c1.jid) > len("alice@localhost/")
        c2 = RawClient()
        await c2.login(srv.port, "alice", ca=srv.ca, resource="Desk top ☃")
        assert c2.jid == "alice@localhost/Desk top ☃"
        c1.close()
        c2.close()


async def test_conflicting_resource_bind_replaces_the_old_session(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        old = await RawClient().login(srv.port, "alice", ca=srv.ca, resource="phone")
        new = await RawClient().login(srv.port, "alice", ca=srv.ca, resource="phone")
        assert new.jid == "alice@localhost/phone"
        # RFC 6120 §7.7.2.2: the old stream ends with a <conflict/> stream error.
        assert await old.stream_error() == "conflict"
        assert await old.closed()
        # The new session works.
        reply = await new.iq("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert reply.get("type") == "result"
        new.close()


async def test_bind_with_invalid_resource(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        await c.starttls()
        await c.authenticate("alice", "secret", "SCRAM-SHA-256")
        await c.start()
        assert c.features is not None
        assert c.features.find(f"{{{BIND_NS}}}bind") is not None
        reply = await c.bind("tab&#9;here")
        assert reply.get("type") == "error"
        assert reply.find(f".//{{{STANZAS_NS}}}bad-request") is not None
        reply = await c.bind("ok")
        assert reply.get("type") == "result"
        c.close()


async def test_many_resources_of_one_account(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        clients = [await login(srv, f"{alice}/r{i}") for i in range(3)]
        for c in clients:
            c.send_presence()
        await asyncio.sleep(0)
        assert sorted(s.jid.resource for s in srv.server.sessions) == ["r0", "r1", "r2"]
        await close(*clients)
