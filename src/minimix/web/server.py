"""The HTTP listener (``[http]``): XMPP over WebSocket, discovery, the web client, metrics, status.

=============================  ==========================================================
``/xmpp-websocket``            XMPP over WebSocket (RFC 7395), :mod:`minimix.transports.websocket`
``/.well-known/host-meta``     connection-method discovery, XML (XEP-0156)
``/.well-known/host-meta.json`` the same as JSON
``/``                          the bundled web client (Converse.js) configured for this server
``/dist/...``                  the web client's files
``/metrics``                   Prometheus text format; ``[http] metrics_allow`` only
``/admin``                     operator status page; ``[http] admin_allow`` only
``/admin/status.json``         what the status page shows, as JSON
=============================  ==========================================================
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from minimix.config import Config, ConfigError
from minimix.protocol.stanza import StreamError
from minimix.transports import websocket
from minimix.web import hostmeta, metrics, status

if TYPE_CHECKING:
    from minimix.core.c2s import ClientServices
    from minimix.core.router import Router
    from minimix.core.session import SessionRegistry

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
WEB_CLIENT_DIST = HERE / "node_modules" / "converse.js" / "dist"
_HOST_OK = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerView(Protocol):
    """The parts of the running server the HTTP listener reads."""

    config: Config
    services: ClientServices
    router: Router
    sessions: SessionRegistry
    muc: Any
    account_join: Any
    tls_context: ssl.SSLContext | None
    ports: dict[str, int]

    def client_connection(self, transport: Any) -> Any: ...


def parse_allow(key: str, entries: list[str]) -> list[Network]:
    """Addresses and networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``) from an allow-list."""
    nets: list[Network] = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"http.{key}: expected IP addresses or networks like 127.0.0.1 or 10.0.0.0/8, "
                f"got {entry!r}"
            ) from None
    return nets


def allowed(address: str, nets: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)


class _Sources:
    """Adapts the server to :class:`minimix.web.metrics.MetricsSources`."""

    def __init__(self, server: ServerView, started: float) -> None:
        self._server = server
        self._started = started

    @property
    def router_counters(self) -> Mapping[str, int]:
        return self._server.router.counters

    @property
    def client_counters(self) -> Mapping[str, int]:
        return self._server.services.counters

    def connections_by_transport(self) -> Mapping[str, int]:
        counts = {"tcp": 0, "websocket": 0}
        for conn in list(self._server.services.connections):
            kind = "websocket" if getattr(conn, "framed", False) else "tcp"
            counts[kind] += 1
        return counts

    def session_counts(self) -> tuple[int, int, int]:
        sessions = self._server.sessions
        return len(sessions), len(list(sessions.accounts())), len(self._server.services.hibernating)

    def muc_stats(self) -> Mapping[str, Any]:
        stats = _stats(self._server.muc)
        if stats:
            return stats
        rooms = status.muc_rooms(self._server.muc)
        return {"rooms": len(rooms), "occupants": sum(r["occupant_count"] for r in rooms)}

    def account_join_stats(self) -> Mapping[str, Any]:
        return _stats(self._server.account_join)

    def archive_stats(self) -> Mapping[str, Any]:
        return _stats(getattr(self._server, "archive", None))

    @property
    def started(self) -> float:
        return self._started


def _stats(feature: Any) -> Mapping[str, Any]:
    stats = getattr(feature, "stats", None)
    if not callable(stats):
        return {}
    try:
        result = stats()
    except Exception:
        log.exception("stats() of %s failed", type(feature).__name__)
        return {}
    return result if isinstance(result, Mapping) else {}


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


class WebServer:
    """The aiohttp application and its listener; ``start()`` writes ``ports['http']``."""

    def __init__(self, server: ServerView) -> None:
        self.server = server
        c = server.config
        self.http = c.http
        self.metrics_allow = parse_allow("metrics_allow", c.http.metrics_allow)
        self.admin_allow = parse_allow("admin_allow", c.http.admin_allow)
        self.started = time.monotonic()
        self.sources = _Sources(server, self.started)
        self.app = self._build()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ app
    def _build(self) -> web.Application:
        app = web.Application(middlewares=[_headers], client_max_size=64 * 1024)
        r = app.router
        r.add_get(websocket.PATH, self.websocket)
        r.add_get("/.well-known/host-meta", self.host_meta)
        r.add_get("/.well-known/host-meta.json", self.host_meta_json)
        r.add_get("/metrics", self.metrics)
        r.add_get("/admin", self.admin)
        r.add_get("/admin/", self.admin)
        r.add_get("/admin/status.json", self.admin_status)
        if self.http.web_client:
            r.add_get("/", self.index)
            r.add_get("/index.html", self.index)
            r.add_get("/dist/{path:.*}", self.dist)
        return app

    async def start(self) -> None:
        ctx = self.server.tls_context if self.http.tls else None
        if self.http.tls and ctx is None:
            raise ConfigError("http.tls: no TLS certificate is loaded")
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=3.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.http.host, self.http.port, ssl_context=ctx, backlog=1024
        )
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.http.port
        self.server.ports["http"] = self.port
        log.info(
            "HTTP on %s://%s:%d/ (WebSocket at %s)",
            "https" if ctx else "http",
            self.http.host,
            self.port,
            websocket.PATH,
        )

    async def stop(self) -> None:
        """Stop listening; WebSocket streams end with ``system-shutdown``, as TCP ones do."""
        for conn in list(self.server.services.connections):
            if getattr(conn, "framed", False):
                conn.close(StreamError("system-shutdown"))
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ------------------------------------------------------------------ helpers
    def _peer(self, request: web.Request) -> str:
        return websocket.client_address(
            request.remote or "", request.headers.get("X-Forwarded-For")
        )

    def _secure(self, request: web.Request) -> bool:
        if self.http.tls:
            return True
        proto = request.headers.get("X-Forwarded-Proto")
        return (
            proto is not None
            and proto.strip().lower() == "https"
            and websocket.is_loopback(request.remote or "")
        )

    def _host(self, request: web.Request) -> str:
        host = request.headers.get("Host", "")
        if _HOST_OK.match(host):
            return host
        return f"{self.server.config.domain}:{self.port}"

    def _guard(self, request: web.Request, nets: list[Network]) -> None:
        if not allowed(self._peer(request), nets):
            raise web.HTTPForbidden(text="not allowed from your address\n")

    # ------------------------------------------------------------------ handlers
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        s = self.server
        policy = websocket.WebSocketPolicy(
            max_stanza_size=s.config.limits.max_stanza_size,
            http_tls=self.http.tls,
            loopback_secure=self.http.loopback_secure,
        )
        s.services.count("websocket_connections")
        return await websocket.handle(request, s.client_connection, policy)

    def _websocket_url(self, request: web.Request) -> str:
        return hostmeta.websocket_url(self._secure(request), self._host(request), websocket.PATH)

    async def host_meta(self, request: web.Request) -> web.Response:
        return web.Response(
            text=hostmeta.xrd(self._websocket_url(request)),
            content_type="application/xrd+xml",
            headers={"Access-Control-Allow-Origin": "*"},
        )

    async def host_meta_json(self, request: web.Request) -> web.Response:
        return web.Response(
            text=hostmeta.jrd(self._websocket_url(request)),
            content_type="application/json",
            headers={"Access-Control-Allow-Origin": "*"},
        )

    async def index(self, request: web.Request) -> web.Response:
        if not (WEB_CLIENT_DIST / "converse.min.js").exists():
            return web.Response(
                status=503,
                text=(HERE / "missing.html").read_text(),
                content_type="text/html",
            )
        c = self.server.config
        settings = {
            "domain": c.domain,
            "muc_domain": c.muc.domain,
            "registration": c.registration.open,
            "websocket_path": websocket.PATH,
        }
        # Safe inside <script>: no "</" can end the element early.
        blob = json.dumps(settings).replace("</", "<\\/")
        page = (HERE / "index.html").read_text().replace("{{CONFIG}}", blob)
        return web.Response(
            text=page, content_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    async def dist(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        root = WEB_CLIENT_DIST.resolve()
        try:
            target = (root / rel).resolve()
        except (OSError, ValueError):
            raise web.HTTPNotFound() from None
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target, headers={"Cache-Control": "public, max-age=3600"})

    async def metrics(self, request: web.Request) -> web.Response:
        self._guard(request, self.metrics_allow)
        body = metrics.collect(self.sources).text()
        return web.Response(
            body=body.encode(),
            headers={"Content-Type": metrics.CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    async def admin(self, request: web.Request) -> web.Response:
        self._guard(request, self.admin_allow)
        return web.Response(
            text=(HERE / "admin.html").read_text(),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def admin_status(self, request: web.Request) -> web.Response:
        self._guard(request, self.admin_allow)
        data = status.snapshot(self.server, self.sources)
        return web.json_response(data, headers={"Cache-Control": "no-store"})


def create(server: ServerView) -> WebServer:
    return WebServer(server)


__all__ = ["WebServer", "allowed", "create", "parse_allow"]
