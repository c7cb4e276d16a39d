"""The one place that wires concrete classes from the configuration.

Each feature has its own ``_wire_*`` method: it builds the feature's stores and extensions and
appends them to ``self.extensions``. Extensions receive what they need through their
constructors; nothing is looked up globally.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from pathlib import Path
from typing import Any

from minimix.config import Config
from minimix.core.c2s import ClientConnection, ClientServices
from minimix.core.component import ComponentConnection
from minimix.core.extension import Extension
from minimix.core.hooks import Hooks
from minimix.core.limits import WindowCounter
from minimix.core.router import Router
from minimix.core.session import Session, SessionRegistry
from minimix.core.tls import certificate_der, ensure_certificate, server_context
from minimix.extensions.blocking import Blocking
from minimix.extensions.disco import Disco
from minimix.extensions.offline import Offline
from minimix.extensions.ping import Ping
from minimix.extensions.registration import Registration
from minimix.extensions.roster import Roster
from minimix.extensions.vcard import VCard
from minimix.extensions.version import Version
from minimix.protocol.stanza import StreamError
from minimix.storage.database import Database
from minimix.storage.stores import AccountStore, DocumentStore, OfflineStore, RosterStore
from minimix.stream.sasl import tls_server_end_point
from minimix.transports.tcp import TcpTransport

log = logging.getLogger(__name__)


def open_database(config: Config) -> Database:
    url = config.storage.url
    if url.startswith("sqlite:///"):
        return Database(url[len("sqlite:///") :])
    if url.startswith("sqlite://"):
        return Database(url[len("sqlite://") :])
    return Database(Path(config.data_dir) / "minimix.sqlite3")


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = open_database(config)
        self.hooks = Hooks()
        self.sessions = SessionRegistry()
        self.router = Router(config.domain, self.hooks, self.sessions)
        self.accounts = AccountStore(self.db)
        self.documents = DocumentStore(self.db)
        self.roster_store = RosterStore(self.db)
        self.offline_store = OfflineStore(self.db)
        self.extensions: list[Extension] = []
        self.listeners: list[asyncio.AbstractServer] = []
        self.ports: dict[str, int] = {}
        self.tls_context: ssl.SSLContext | None = None
        self.end_point: bytes | None = None
        self.stopped = asyncio.Event()
        limits = config.limits
        self.services = ClientServices(
            domain=config.domain,
            router=self.router,
            hooks=self.hooks,
            sessions=self.sessions,
            accounts=self.accounts,
            limits=limits,
            require_encryption=config.c2s.require_encryption,
            auth_failures_ip=WindowCounter(limits.auth_failures_per_ip, 60),
            auth_failures_account=WindowCounter(limits.auth_failures_per_account, 60),
        )
        self.muc: Any = None
        self.account_join: Any = None
        self.web: Any = None
        # Disco reads the extension list (the same list object) when asked, so it can be built
        # first and handed to features that add disco items.
        self.disco = Disco(config.domain, self.extensions, self.accounts.exists)
        self._wire_core()
        self._wire_muc()
        self._wire_account_data()
        self._wire_account_join()
        self._wire_web()
        self.extensions.insert(0, self.disco)
        for ext in self.extensions:
            ext.register(self.hooks)
            self.hooks.stream_feature_providers.append(ext.stream_features)
        if config.muc.domain:
            self.disco.host_items.append((config.muc.domain, "Chatrooms"))
        for comp in config.components:
            self.disco.host_items.append((comp.domain, ""))

    # ------------------------------------------------------------------ wiring
    def _wire_core(self) -> None:
        c = self.config
        self.router.account_exists = self.accounts.exists
        self.roster = Roster(self.router, self.sessions, self.roster_store, self.documents)
        self.services.on_session_ended.append(self.roster.session_ended)
        self.extensions += [
            self.roster,
            Ping(),
            Version(),
            VCard(self.documents, c.domain),
            Blocking(self.router, self.sessions, self.documents),
            Offline(self.router, self.offline_store, c.domain, c.limits.offline_per_account),
            Registration(
                self.accounts,
                c.registration.open,
                c.registration.throttle_per_ip,
                self.account_deleted,
            ),
        ]

    def _wire_muc(self) -> None:
        """The group chat service (XEP-0045) on ``[muc] domain``."""
        c = self.config
        if not c.muc.domain:
            return
        from minimix.extensions.muc import MucService
        from minimix.storage.archive import ArchiveStore
        from minimix.storage.muc import MucStore

        self.muc = MucService(
            c.muc,
            self.router,
            MucStore(self.db),
            ArchiveStore(self.db),
            server_domain=c.domain,
            admins=c.admins,
            max_occupants=c.limits.occupants_per_room,
            max_rooms_per_account=c.limits.rooms_per_account,
            archive_page_size=c.limits.archive_page_size,
        )
        self.router.register_component(self.muc)
        self.extensions.append(self.muc)

    def _wire_account_data(self) -> None:
        """The account's archive, carbons, PEP, bookmarks, client state (XEP-0313, 0280...)."""
        from minimix.extensions.archive.user import UserArchive
        from minimix.extensions.bookmarks import Bookmarks
        from minimix.extensions.carbons import Carbons
        from minimix.extensions.client_state import ClientState
        from minimix.extensions.displayed_markers import DisplayedMarkers
        from minimix.extensions.pep import Pep
        from minimix.extensions.registration import Registration
        from minimix.storage.archive import ArchiveStore
        from minimix.storage.pubsub import PubsubStore

        c = self.config
        self.archive_store = ArchiveStore(self.db)
        self.archive = UserArchive(
            self.archive_store,
            self.accounts,
            self.roster_store,
            c.archive,
            c.limits.archive_page_size,
        )
        self.carbons = Carbons(self.sessions)
        self.carbons.archived_copy = self.archive.archived_copy
        self.client_state = ClientState()
        self.pubsub_store = PubsubStore(self.db)
        self.pep = Pep(self.router, self.sessions, self.pubsub_store, self.roster_store, c.domain)
        self.disco.account_item_providers.append(self.pep.disco_items)
        self.bookmarks = Bookmarks(self.pep, self.documents)
        self.displayed_markers = DisplayedMarkers(self.pep)
        self.extensions += [
            self.archive,
            self.carbons,
            self.client_state,
            self.pep,
            self.bookmarks,
            self.displayed_markers,
        ]
        registration = next((e for e in self.extensions if isinstance(e, Registration)), None)
        if registration is not None:
            previous = registration.on_account_deleted

            async def forget_account_data(username: str) -> None:
                await previous(username)
                bare = f"{username}@{c.domain}"
                self.archive.forget_account(bare)
                self.pubsub_store.delete_owner(bare)

            registration.on_account_deleted = forget_account_data

    def _wire_account_join(self) -> None:
        """Account-join: the account is the room occupant (``[account_join]``)."""
        c = self.config
        if not c.account_join.enabled:
            return
        from minimix.extensions.account_join import AccountJoin, Settings
        from minimix.extensions.bookmark_events import Bookmark
        from minimix.extensions.registration import Registration
        from minimix.protocol.jid import JID
        from minimix.storage.account_join import AccountJoinStore

        bookmarks = getattr(self, "bookmarks", None)

        def autojoin_bookmarks() -> list[tuple[JID, Bookmark]]:
            """Every account's autojoin bookmarks: the rooms to be in at start (§7.3)."""
            if bookmarks is None:
                return []
            out: list[tuple[JID, Bookmark]] = []
            for user in self.accounts.list():
                account = JID(user, c.domain, "")
                out += [(account, b) for b in bookmarks.bookmarks(account) if b.autojoin]
            return out

        self.account_join = AccountJoin(
            domain=c.domain,
            router=self.router,
            sessions=self.sessions,
            store=AccountJoinStore(self.db),
            settings=Settings(linger=c.account_join.linger, default_history=c.muc.default_history),
            archive=getattr(self, "archive", None),
            archive_store=getattr(self, "archive_store", None),
            carbons=getattr(self, "carbons", None),
            self_ping_interval=c.account_join.self_ping_interval,
            autojoin_bookmarks=autojoin_bookmarks,
            account_exists=self.accounts.exists,
        )
        self.services.on_session_ended.append(self.account_join.session_ended)
        registration = next((e for e in self.extensions if isinstance(e, Registration)), None)
        if registration is not None:
            deleted = registration.on_account_deleted
            leave = self.account_join.account_deleted

            async def account_deleted(username: str) -> None:
                await leave(username)  # the account leaves its rooms, then its clients go
                await deleted(username)

            registration.on_account_deleted = account_deleted
        self.extensions.append(self.account_join)

    def _wire_web(self) -> None:
        """HTTP: WebSocket, host-meta, the web client, metrics, the status page."""
        from minimix.web import WebServer

        self.web = WebServer(self)

    async def account_deleted(self, username: str) -> None:
        """Close every session of a removed account (features hook in through hooks events)."""
        from minimix.protocol.jid import JID

        for s in self.sessions.of_account(JID(username, self.config.domain, "")):
            s.link.close(StreamError("not-authorized", "account removed"))

    # ------------------------------------------------------------------ running
    def _tls(self) -> None:
        c = self.config
        if c.tls.certificate:
            cert, key = Path(c.tls.certificate), Path(c.tls.key)
        else:
            domains = [c.domain] + ([c.muc.domain] if c.muc.domain else [])
            cert, key = ensure_certificate(Path(c.data_dir), domains)
        self.tls_context = server_context(cert, key)
        try:
            self.end_point = tls_server_end_point(certificate_der(cert))
        except Exception:
            self.end_point = None

    def client_connection(self, transport: Any) -> ClientConnection:
        return ClientConnection(self.services, transport)

    async def start(self) -> None:
        c = self.config
        self._tls()
        self.db.checkpoint_in_background()
        for ext in self.extensions:
            await ext.start()
        loop = asyncio.get_running_loop()
        await self._listen("c2s", c.c2s.host, c.c2s.port, direct=False)
        if c.c2s.direct_tls_port:
            await self._listen("c2s_direct_tls", c.c2s.host, c.c2s.direct_tls_port, direct=True)
        if c.component_port and c.components:
            secrets = {comp.domain: comp.secret for comp in c.components}

            def make_component() -> asyncio.Protocol:
                return _ComponentProtocol(self.router, secrets, c.limits.max_stanza_size)

            srv = await loop.create_server(make_component, c.c2s.host, c.component_port)
            self.listeners.append(srv)
            self.ports["component"] = srv.sockets[0].getsockname()[1]
        if self.web is not None:
            await self.web.start()
        import json

        ports_file = Path(c.data_dir) / "ports.json"
        ports_file.parent.mkdir(parents=True, exist_ok=True)
        ports_file.write_text(json.dumps(self.ports))
        log.info(
            "minimix serving %s on %s (%s)",
            c.domain,
            ", ".join(f"{k}={v}" for k, v in self.ports.items()),
            c.source,
        )

    async def _listen(self, name: str, host: str, port: int, direct: bool) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.tls_context

        def factory() -> asyncio.Protocol:
            return TcpTransport(self.client_connection, ctx, direct, self.end_point)

        srv = await loop.create_server(
            factory,
            host,
            port,
            ssl=ctx if direct else None,
            backlog=1024,
            ssl_handshake_timeout=30 if direct else None,
        )
        self.listeners.append(srv)
        self.ports[name] = srv.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        log.info("minimix stopping")
        for srv in self.listeners:
            srv.close()
        for ext in reversed(self.extensions):
            try:
                await ext.stop()
            except Exception:
                log.exception("stopping %s failed", type(ext).__name__)
        if self.web is not None:
            await self.web.stop()
        for conn in list(self.services.connections):
            conn.close(StreamError("system-shutdown"))
        for component in list(self.router.components.values()):
            if isinstance(component, ComponentConnection):
                component.close(StreamError("system-shutdown"))
        await asyncio.sleep(0.05)
        self.services.output.stop()
        self.db.close()
        self.stopped.set()

    async def run_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:
                pass
        settle_garbage_collector()
        await stop.wait()
        await self.stop()


def settle_garbage_collector() -> None:
    """Once started: collect, then leave everything that exists now (modules, configuration,
    what was restored from storage) out of later collections, so that a full collection walks
    only what was made since (about 30 ms less per full collection).

    Full collections pause the event loop for as long as they walk every tracked object (100
    to 300 ms with a few hundred clients in busy rooms). Python starts one after every 10
    collections of the middle generation once the long-lived objects grew by a quarter; while
    rooms fill that is several a second. After 100 instead, they are ten times rarer; garbage
    that lives long (closed connections' cycles) waits that much longer to be freed.
    """
    gc.collect()
    gc.freeze()
    # Python's defaults for the young and middle generations; a full collection after 100
    # middle-generation ones (the default is 10).
    gc.set_threshold(700, 10, 100)


class _ComponentProtocol(asyncio.Protocol):
    def __init__(self, router: Router, secrets: dict[str, str], max_size: int) -> None:
        self.router = router
        self.secrets = secrets
        self.max_size = max_size
        self.conn: ComponentConnection | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn = ComponentConnection(self.router, self.secrets, self, self.max_size)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.connection_lost()


__all__ = ["Server", "Session"]
