"""Accounts: in-band registration (XEP-0077) with slixmpp, password change and removal, and
`minimix user add` as a subprocess followed by a real login."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from tests.e2e.core_helpers import close, login
from tests.e2e.raw_client import RawClient, error_condition
from tests.support import running_server, write_config


class Registrant(slixmpp.ClientXMPP):
    """Registers in-band at connect time, the way clients do (slixmpp's documented recipe)."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = True
        self.outcome: asyncio.Future[str] = asyncio.get_event_loop().create_future()
        self.add_event_handler("register", self.on_register)

    async def on_register(self, _event: object) -> None:
        resp = self.Iq()
        resp["type"] = "set"
        resp["register"]["username"] = self.boundjid.user
        resp["register"]["password"] = self.password
        try:
            await resp.send(timeout=5)
            self.outcome.set_result("registered")
        except IqError as exc:
            self.outcome.set_result(exc.iq["error"]["condition"])
        self.disconnect()


async def register(srv: object, jid: str, password: str) -> str:
    r = Registrant(jid, password)
    r.ca_certs = srv.ca  # type: ignore[attr-defined]
    r.enable_direct_tls = False
    r.connect("127.0.0.1", srv.port)  # type: ignore[attr-defined]
    return await asyncio.wait_for(r.outcome, 10)


async def test_register_in_band_then_log_in(tmp_path: Path) -> None:
    async with running_server(tmp_path, registration={"open": True}) as srv:
        assert await register(srv, "newbie@localhost", "n3w pass") == "registered"
        assert srv.server.accounts.exists("newbie")
        c = await login(srv, "newbie@localhost/first", password="n3w pass")
        await close(c)
        # The same name again is taken.
        assert await register(srv, "newbie@localhost", "other") == "conflict"


async def test_registration_closed_by_default(tmp_path: Path) -> None:
    async with running_server(tmp_path, registration={"open": False}) as srv:
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        await c.starttls()
        assert c.features is not None
        assert c.features.find("{http://jabber.org/features/iq-register}register") is None
        reply = await c.iq("<iq type='get'><query xmlns='jabber:iq:register'/></iq>")
        assert error_condition(reply) == "service-unavailable"
        c.close()


async def test_registration_needs_tls_and_valid_names(tmp_path: Path) -> None:
    async with running_server(tmp_path, registration={"open": True}) as srv:
        c = RawClient()
        await c.connect(srv.port, srv.ca)
        await c.start()
        reply = await c.iq("<iq type='get'><query xmlns='jabber:iq:register'/></iq>")
        assert error_condition(reply) == "service-unavailable"  # not before STARTTLS
        await c.starttls()
        form = await c.iq("<iq type='get'><query xmlns='jabber:iq:register'/></iq>")
        assert form.find(".//{jabber:iq:register}username") is not None
        for user, pw in (("bad@name", "x"), ("", "x"), ("fine", "")):
            reply = await c.iq(
                "<iq type='set'><query xmlns='jabber:iq:register'>"
                f"<username>{user}</username><password>{pw}</password></query></iq>"
            )
            assert error_condition(reply) == "not-acceptable", user
        c.close()


async def test_password_change_and_account_removal(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice", "old")
        c = await RawClient().login(srv.port, "alice", "old", srv.ca)
        reply = await c.iq(
            "<iq type='set' to='localhost'><query xmlns='jabber:iq:register'>"
            "<username>alice</username><password>new</password></query></iq>"
        )
        assert reply.get("type") == "result"
        with pytest.raises(PermissionError):
            await RawClient().login(srv.port, "alice", "old", srv.ca)
        c2 = await RawClient().login(srv.port, "alice", "new", srv.ca, resource="two")
        # Removal ends every session of the account.
        reply = await c2.iq(
            "<iq type='set' to='localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>"
        )
        assert reply.get("type") == "result"
        assert await c.stream_error() == "not-authorized"
        assert not srv.server.accounts.exists("alice")
        with pytest.raises(PermissionError):
            await RawClient().login(srv.port, "alice", "new", srv.ca)
        c.close()
        c2.close()


def minimix(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minimix", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_user_add_command_then_login(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "minimix.toml", data)
    r = minimix("user", "add", "carol@localhost", "--password", "pw1", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert "created carol@localhost" in r.stdout
    r = minimix("user", "add", "dave", "--config", str(config), stdin="typed-pw\n")
    assert r.returncode == 0, r.stderr
    r = minimix("user", "list", "--config", str(config))
    assert r.stdout.split() == ["carol@localhost", "dave@localhost"]
    r = minimix("user", "add", "carol@localhost", "--password", "x", "--config", str(config))
    assert r.returncode == 1 and "already exists" in r.stderr
    async with running_server(data) as srv:
        c = await login(srv, "carol@localhost/cli", password="pw1")
        await close(c)
        d = await RawClient().login(srv.port, "dave", "typed-pw", srv.ca)
        d.close()
    r = minimix("user", "passwd", "carol", "--password", "pw2", "--config", str(config))
    assert r.returncode == 0, r.stderr
    r = minimix("user", "delete", "dave@localhost", "--config", str(config))
    assert r.returncode == 0, r.stderr
    async with running_server(data) as srv:
        c = await login(srv, "carol@localhost/cli", password="pw2")
        await close(c)
        with pytest.raises(PermissionError):
            await RawClient().login(srv.port, "dave", "typed-pw", srv.ca)
    # The database holds SCRAM keys, never the password.
    raw = (data / "minimix.sqlite3").read_bytes()
    assert b"pw2" not in raw and b"typed-pw" not in raw
