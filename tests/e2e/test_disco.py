"""Service discovery (XEP-0030) on the server, accounts and components; ping (XEP-0199),
software version (XEP-0092) and vcard-temp (XEP-0054), with slixmpp's own plugins."""

from __future__ import annotations

from pathlib import Path

import pytest
from slixmpp.exceptions import IqError

from tests.e2e.core_helpers import close
from tests.e2e.raw_client import RawClient, error_condition
from tests.support import connect, running_server

PLUGINS = ("xep_0030", "xep_0054", "xep_0092", "xep_0199")


async def test_server_disco_info_and_items(tmp_path: Path) -> None:
    comps = [{"domain": "gateway.localhost", "secret": "s3cret"}]
    async with running_server(tmp_path, component=comps) as srv:
        alice = srv.add_user("alice")
        a = await connect(srv, f"{alice}/x", plugins=PLUGINS)
        info = await a.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        features = set(info["disco_info"]["features"])
        for f in (
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "urn:xmpp:ping",
            "jabber:iq:version",
            "vcard-temp",
            "urn:xmpp:blocking",
            "msgoffline",
            "urn:xmpp:features:rosterver",
        ):
            assert f in features, f
        identities = {(c, t) for c, t, _, _ in info["disco_info"]["identities"]}
        assert ("server", "im") in identities
        items = await a.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
        jids = {str(j) for j, _, _ in items["disco_items"]["items"]}
        assert {"conference.localhost", "gateway.localhost"} <= jids
        await close(a)


async def test_account_disco(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        srv.add_user("bob")
        a = await connect(srv, f"{alice}/x", plugins=PLUGINS)
        info = await a.plugin["xep_0030"].get_info(jid="bob@localhost", timeout=5)
        identities = {(c, t) for c, t, _, _ in info["disco_info"]["identities"]}
        assert ("account", "registered") in identities
        assert "http://jabber.org/protocol/disco#info" in info["disco_info"]["features"]
        await a.plugin["xep_0030"].get_items(jid="bob@localhost", timeout=5)
        with pytest.raises(IqError) as err:
            await a.plugin["xep_0030"].get_info(jid="nobody@localhost", timeout=5)
        assert err.value.condition == "service-unavailable"
        with pytest.raises(IqError) as err:
            await a.plugin["xep_0030"].get_info(jid="localhost", node="no-such-node", timeout=5)
        assert err.value.condition == "item-not-found"
        await close(a)


async def test_ping_and_version(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        a = await connect(srv, f"{alice}/x", plugins=PLUGINS)
        rtt = await a.plugin["xep_0199"].ping(jid="localhost", timeout=5)
        assert rtt >= 0
        await a.plugin["xep_0199"].ping(jid=alice, timeout=5)  # the account answers too
        version = await a.plugin["xep_0092"].get_version("localhost", timeout=5)
        assert version["software_version"]["name"] == "minimix"
        assert version["software_version"]["version"]
        await close(a)


async def test_vcard_store_and_read_by_others(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        a = await connect(srv, f"{alice}/x", plugins=PLUGINS)
        b = await connect(srv, f"{bob}/y", plugins=PLUGINS)
        with pytest.raises(IqError) as err:
            await a.plugin["xep_0054"].get_vcard(jid=alice, cached=False, timeout=5)
        assert err.value.condition == "item-not-found"
        vcard = a.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Alice <Liddell> & co"
        vcard["NICKNAME"] = "ali"
        await a.plugin["xep_0054"].publish_vcard(vcard, timeout=5)
        got = await b.plugin["xep_0054"].get_vcard(jid=alice, cached=False, timeout=5)
        assert got["vcard_temp"]["FN"] == "Alice <Liddell> & co"
        assert got.xml.findtext(".//{vcard-temp}NICKNAME") == "ali"
        await close(a, b)


async def test_vcard_of_someone_else_cannot_be_set(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        srv.add_user("alice")
        srv.add_user("bob")
        a = await RawClient().login(srv.port, "alice", ca=srv.ca)
        reply = await a.iq(
            "<iq type='set' to='bob@localhost'><vCard xmlns='vcard-temp'><FN>x</FN></vCard></iq>"
        )
        assert error_condition(reply) == "forbidden"
        a.close()
