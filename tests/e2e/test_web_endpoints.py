"""The HTTP listener's pages: host-meta (XEP-0156), the web client, the status page, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from minimix.web import server as web_server
from tests.e2e.ws_helpers import FRAMING, SASL, http_get, open_frame
from tests.support import connect, disconnect, running_server

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
WS_REL = "urn:xmpp:alt-connections:websocket"


async def test_host_meta_points_at_the_websocket(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        port = srv.server.ports["http"]
        status, headers, body = await http_get(port, "/.well-known/host-meta")
        assert status == 200
        assert headers["Content-Type"].startswith("application/xrd+xml")
        assert headers["Access-Control-Allow-Origin"] == "*"
        links = ET.fromstring(body.encode()).findall(f"{XRD}Link")
        assert [(x.get("rel"), x.get("href")) for x in links] == [
            (WS_REL, f"ws://127.0.0.1:{port}/xmpp-websocket")
        ]

        status, headers, body = await http_get(port, "/.well-known/host-meta.json")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body) == {
            "links": [{"rel": WS_REL, "href": f"ws://127.0.0.1:{port}/xmpp-websocket"}]
        }

        # Behind a TLS-terminating proxy on this machine the advertised address is wss://.
        _, _, body = await http_get(
            port,
            "/.well-known/host-meta.json",
            headers={"Host": "chat.example.org", "X-Forwarded-Proto": "https"},
        )
        assert json.loads(body)["links"][0]["href"] == "wss://chat.example.org/xmpp-websocket"
        # A made-up Host header cannot inject markup into the document.
        _, _, body = await http_get(
            port, "/.well-known/host-meta", headers={"Host": "x'/><evil a='"}
        )
        href = ET.fromstring(body.encode()).find(f"{XRD}Link")
        assert href is not None and href.get("href") == f"ws://localhost:{port}/xmpp-websocket"


async def test_web_client_page_is_configured_for_this_server(tmp_path: Path) -> None:
    if not (web_server.WEB_CLIENT_DIST / "converse.min.js").exists():
        pytest.skip("the web client is not installed (scripts/install-web-client.sh)")
    async with running_server(tmp_path) as srv:
        port = srv.server.ports["http"]
        status, headers, page = await http_get(port, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert '<script type="module" src="/dist/converse.min.js">' in page
        blob = page.split('id="minimix-config">', 1)[1].split("</script>", 1)[0]
        assert json.loads(blob) == {
            "domain": "localhost",
            "muc_domain": "conference.localhost",
            "registration": True,
            "websocket_path": "/xmpp-websocket",
        }
        status, headers, js = await http_get(port, "/dist/converse.min.js")
        assert status == 200 and "javascript" in headers["Content-Type"]
        assert len(js) > 100_000
        status, _, _ = await http_get(port, "/dist/converse.min.css")
        assert status == 200
        for bad in ("/dist/../package.json", "/dist/%2e%2e/%2e%2e/server.py", "/dist/nope.js"):
            status, _, _ = await http_get(port, bad)
            assert status == 404, bad


async def test_missing_web_client_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_server, "WEB_CLIENT_DIST", tmp_path / "nothing-here")
    async with running_server(tmp_path / "data") as srv:
        status, _, page = await http_get(srv.server.ports["http"], "/")
        assert status == 503 and "install-web-client.sh" in page
    async with running_server(tmp_path / "data", http={"web_client": False}) as srv:
        status, _, _ = await http_get(srv.server.ports["http"], "/")
        assert status == 404
        status, _, _ = await http_get(srv.server.ports["http"], "/.well-known/host-meta")
        assert status == 200


async def test_admin_status_shows_accounts_clients_and_rooms(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        port = srv.server.ports["http"]
        status, headers, page = await http_get(port, "/admin")
        assert status == 200 and "/admin/status.json" in page
        assert headers["Cache-Control"] == "no-store"

        alice = srv.add_user("alice")
        a1 = await connect(srv, f"{alice}/desk", plugins=("xep_0030", "xep_0045"))
        a1.plugin["xep_0045"].join_muc("ops@conference.localhost", "alice")
        rooms: list[dict[str, object]] = []
        for _ in range(100):
            _, _, body = await http_get(port, "/admin/status.json")
            data = json.loads(body)
            rooms = data["rooms"]
            if rooms and rooms[0]["occupant_count"] == 1:
                break
            await asyncio.sleep(0.05)
        assert data["server"]["domain"] == "localhost"
        assert data["server"]["connections"] == {"tcp": 1, "websocket": 0}
        assert data["accounts"] == [
            {
                "jid": alice,
                "clients": [
                    {
                        "jid": f"{alice}/desk",
                        "resource": "desk",
                        "transport": "tcp",
                        "available": True,
                        "hibernating": False,
                        "online_seconds": data["accounts"][0]["clients"][0]["online_seconds"],
                    }
                ],
            }
        ]
        assert [r["jid"] for r in rooms] == ["ops@conference.localhost"]
        # Account-join: the account is the occupant, the client is attached to that join.
        for _ in range(100):
            joins = data["joins"]
            if joins and joins[0]["state"] == "joined" and joins[0]["attached"]:
                break
            await asyncio.sleep(0.05)
            data = json.loads((await http_get(port, "/admin/status.json"))[2])
        assert data["joins"] == [
            {
                "room": "ops@conference.localhost",
                "account": alice,
                "nick": "alice",
                "state": "joined",
                "attached": [f"{alice}/desk"],
            }
        ]
        occupants = rooms[0]["occupants"]
        assert isinstance(occupants, list) and occupants[0]["nick"] == "alice"
        assert occupants[0]["jid"] == alice
        await disconnect(a1)

    async with running_server(tmp_path, http={"admin_allow": []}) as srv:
        port = srv.server.ports["http"]
        for path in ("/admin", "/admin/status.json"):
            status, _, _ = await http_get(port, path)
            assert status == 403


async def test_https_and_wss_with_the_servers_certificate(tmp_path: Path) -> None:
    async with running_server(tmp_path, http={"tls": True, "loopback_secure": False}) as srv:
        port = srv.server.ports["http"]
        srv.add_user("alice")
        ctx = ssl.create_default_context(cafile=str(srv.ca))
        ctx.check_hostname = False
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"https://127.0.0.1:{port}/.well-known/host-meta.json", ssl=ctx
            ) as resp:
                data = await resp.json()
                assert data["links"][0]["href"] == f"wss://127.0.0.1:{port}/xmpp-websocket"
            async with session.ws_connect(
                f"https://127.0.0.1:{port}/xmpp-websocket", protocols=("xmpp",), ssl=ctx
            ) as ws:
                # TLS is the listener's own, so authentication is offered even though
                # loopback peers are not trusted here.
                await ws.send_str(open_frame())
                opened = ET.fromstring((await ws.receive()).data)
                assert opened.tag == f"{{{FRAMING}}}open"
                features = ET.fromstring((await ws.receive()).data)
                mechs = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
                assert "PLAIN" in mechs
        # Plain HTTP is not served on the TLS port.
        with pytest.raises(aiohttp.ClientError):
            await http_get(port, "/.well-known/host-meta")
