"""The group chat service without sockets: a fake router records what the service routes."""

from __future__ import annotations

import asyncio

from minimix.config import MucConfig
from minimix.extensions.muc.service import MucService
from minimix.protocol import ns
from minimix.protocol.jid import JID
from minimix.protocol.stanza import copy_shallow
from minimix.protocol.xml import Element, parse_element
from minimix.storage.archive import ArchiveQuery, ArchiveStore
from minimix.storage.database import Database
from minimix.storage.muc import MucStore

SERVICE = "conference.localhost"
ROOM = f"coven@{SERVICE}"
ALICE = "alice@localhost/r"
BOB = "bob@localhost/r"


class FakeRouter:
    def __init__(self) -> None:
        self.routed: list[Element] = []
        self.counters: dict[str, int] = {}
        self.gate: asyncio.Event | None = None

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    async def route(self, el: Element, origin: object) -> None:
        self.routed.append(el)
        if self.gate is not None:
            await self.gate.wait()

    async def route_copies(self, el: Element, recipients: list[str], origin: object) -> None:
        for to in recipients:
            await self.route(copy_shallow(el, to=to), origin)

    def take(self) -> list[Element]:
        out, self.routed = self.routed, []
        return out


def x(text: str) -> Element:
    return parse_element(text)


def service(db: Database, router: FakeRouter, **config: object) -> MucService:
    return MucService(
        MucConfig(**config),  # type: ignore[arg-type]
        router,  # type: ignore[arg-type]
        MucStore(db),
        ArchiveStore(db),
        server_domain="localhost",
        admins=["boss@localhost"],
    )


def codes(el: Element) -> set[str]:
    xs = el.find(f"{{{ns.MUC_USER}}}x")
    return (
        set() if xs is None else {s.get("code", "") for s in xs.findall(f"{{{ns.MUC_USER}}}status")}
    )


def condition(el: Element) -> str | None:
    err = el.find("{jabber:client}error")
    if err is None:
        return None
    return next(c.tag.rsplit("}", 1)[1] for c in err if c.tag.startswith(f"{{{ns.STANZAS}}}"))


async def enter(svc: MucService, frm: str, nick: str, extra: str = "") -> None:
    await svc.receive(
        x(f"<presence from='{frm}' to='{ROOM}/{nick}'><x xmlns='{ns.MUC}'>{extra}</x></presence>")
    )


async def submit(svc: MucService, frm: str, fields: str = "") -> None:
    await svc.receive(
        x(
            f"<iq type='set' id='cfg' from='{frm}' to='{ROOM}'><query xmlns='{ns.MUC_OWNER}'>"
            f"<x xmlns='{ns.DATA}' type='submit'>{fields}</x></query></iq>"
        )
    )


async def test_creation_policy() -> None:
    router = FakeRouter()
    svc = service(Database(":memory:"), router, creation="admins")
    assert svc.may_create(JID.parse("boss@localhost/x"))
    assert not svc.may_create(JID.parse("alice@localhost/r"))
    await enter(svc, ALICE, "alice")
    (err,) = router.take()
    assert err.get("type") == "error" and condition(err) == "not-allowed"
    assert err.find(f"{{{ns.MUC}}}x") is not None
    local = service(Database(":memory:"), FakeRouter())
    assert local.may_create(JID.parse("alice@localhost/r"))
    assert not local.may_create(JID.parse("eve@elsewhere.example/r"))
    assert not local.may_create(JID.parse("localhost"))


async def test_persistent_room_round_trip_through_storage() -> None:
    db = Database(":memory:")
    router = FakeRouter()
    svc = service(db, router)
    await enter(svc, ALICE, "alice")
    await submit(
        svc,
        ALICE,
        "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
        "<field var='muc#roomconfig_roomname'><value>Cave</value></field>",
    )
    await enter(svc, BOB, "bob")
    await svc.receive(
        x(
            f"<iq type='set' id='m' from='{ALICE}' to='{ROOM}'><query xmlns='{ns.MUC_ADMIN}'>"
            "<item affiliation='member' jid='bob@localhost' nick='bobby'/></query></iq>"
        )
    )
    await svc.receive(
        x(f"<message type='groupchat' id='g1' from='{BOB}' to='{ROOM}'><body>one</body></message>")
    )
    router.take()
    await svc.stop()
    notices = router.take()
    assert {n.get("to") for n in notices} == {ALICE, BOB}
    assert all(codes(n) == {"110", "332"} for n in notices)

    again = service(db, FakeRouter())
    await again.start()
    room = again.rooms["coven"]
    assert room.config.name == "Cave" and room.config.persistent and not room.locked
    assert room.affiliation(JID.parse("bob@localhost")) == "member"
    assert room.affiliations[JID.parse("bob@localhost")].nick == "bobby"
    assert [e.stanza.findtext("{jabber:client}body") for e in room.history.entries()] == ["one"]
    assert room.secret == svc.rooms["coven"].secret
    assert again.archive is not None
    page = again.archive.query(ROOM, ArchiveQuery())
    assert len(page.items) == 1 and page.items[0].with_jid == f"{ROOM}/bob"


async def test_temporary_room_and_its_archive_go_when_empty() -> None:
    db = Database(":memory:")
    router = FakeRouter()
    svc = service(db, router)
    await enter(svc, ALICE, "alice")
    await submit(svc, ALICE)
    await svc.receive(
        x(f"<message type='groupchat' from='{ALICE}' to='{ROOM}'><body>hi</body></message>")
    )
    assert svc.archive is not None and svc.archive.bounds(ROOM) is not None
    await svc.receive(x(f"<presence type='unavailable' from='{ALICE}' to='{ROOM}/alice'/>"))
    assert "coven" not in svc.rooms
    assert svc.archive.bounds(ROOM) is None
    assert router.counters["muc_stanzas_out"] == len(router.routed)


async def test_delivery_errors_remove_ghosts_other_errors_do_not() -> None:
    router = FakeRouter()
    svc = service(Database(":memory:"), router)
    await enter(svc, ALICE, "alice")
    await submit(svc, ALICE)
    await enter(svc, BOB, "bob")
    router.take()
    await svc.receive(
        x(
            f"<message type='error' from='{BOB}' to='{ROOM}/alice'><error type='modify'>"
            f"<not-acceptable xmlns='{ns.STANZAS}'/></error></message>"
        )
    )
    assert "bob" in svc.rooms["coven"].occupants and not router.take()
    await svc.receive(
        x(
            f"<presence type='error' from='{BOB}' to='{ROOM}/bob'><error type='cancel'>"
            f"<gone xmlns='{ns.STANZAS}'/></error></presence>"
        )
    )
    assert "bob" not in svc.rooms["coven"].occupants
    (seen,) = [el for el in router.take() if el.get("to") == ALICE]
    assert codes(seen) == {"333"}


async def test_inbox_survives_a_cancelled_caller() -> None:
    """Stanzas queued behind a caller whose task is cancelled are still handled, in order."""
    router = FakeRouter()
    router.gate = asyncio.Event()
    svc = service(Database(":memory:"), router)
    ping = f"<iq type='get' id='{{}}' to='{SERVICE}' from='{ALICE}'><ping xmlns='{ns.PING}'/></iq>"
    first = asyncio.ensure_future(svc.receive(x(ping.format("1"))))
    await asyncio.sleep(0)
    await svc.receive(x(ping.format("2")))  # queued behind the first
    first.cancel()
    await asyncio.sleep(0)
    router.gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert [el.get("id") for el in router.routed] == ["1", "2"]


async def test_new_rooms_keep_an_archive_only_when_archive_by_default() -> None:
    for default in (True, False):
        db = Database(":memory:")
        router = FakeRouter()
        svc = service(db, router, archive_by_default=default)
        await enter(svc, ALICE, "alice")
        room = svc.rooms["coven"]
        assert room.config.logging is default
        assert room.logging is default
