"""The room archive is written once per loop turn; nothing is reflected before it is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from minimix.extensions.muc.service import MucService
from minimix.protocol import ns
from minimix.storage.archive import ArchiveQuery, ArchiveRow, ArchiveStore
from minimix.storage.database import Database, StorageError
from tests.unit.test_muc_service import ALICE, BOB, ROOM, FakeRouter, enter, service, submit, x


async def room_with_two(db: Database, router: FakeRouter) -> MucService:
    svc = service(db, router)
    await enter(svc, ALICE, "alice")
    await submit(svc, ALICE)
    await enter(svc, BOB, "bob")
    router.take()
    return svc


def groupchat(frm: str, mid: str, text: str) -> str:
    return (
        f"<message type='groupchat' id='{mid}' from='{frm}' to='{ROOM}'>"
        f"<body>{text}</body></message>"
    )


async def test_messages_arriving_together_share_one_transaction_and_are_sent_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = Database(":memory:")
    router = FakeRouter()
    svc = await room_with_two(db, router)
    assert svc.archive is not None
    archive: ArchiveStore = svc.archive
    batches: list[tuple[int, int]] = []
    append_many = archive.append_many

    def recording(rows: Sequence[ArchiveRow]) -> None:
        batches.append((len(rows), len(router.routed)))  # nothing routed yet when storing
        append_many(rows)

    monkeypatch.setattr(archive, "append_many", recording)
    await asyncio.gather(
        svc.receive(x(groupchat(ALICE, "a1", "one"))),
        svc.receive(x(groupchat(BOB, "b1", "two"))),
        svc.receive(x(groupchat(ALICE, "a2", "three"))),
    )
    assert batches == [(3, 0)]
    routed = router.take()
    bodies = [el.findtext("{jabber:client}body") for el in routed]
    assert bodies == ["one", "one", "two", "two", "three", "three"]  # in order, to both
    page = archive.query(ROOM, ArchiveQuery(max=10))
    assert [m.stanza.count("<body>") for m in page.items] == [1, 1, 1]
    ids = {
        el.find(f"{{{ns.SID}}}stanza-id").get("id")  # type: ignore[union-attr]
        for el in routed
    }
    assert ids == {m.id for m in page.items}
    db.close()


async def test_a_failed_transaction_reflects_nothing_and_tells_the_senders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = Database(":memory:")
    router = FakeRouter()
    svc = await room_with_two(db, router)
    assert svc.archive is not None
    archive: ArchiveStore = svc.archive
    append_many = archive.append_many

    def full(rows: Sequence[ArchiveRow]) -> None:
        raise StorageError("database or disk is full", transient=True)

    monkeypatch.setattr(archive, "append_many", full)
    await svc.receive(x(groupchat(ALICE, "lost", "not kept")))
    routed = router.take()
    assert [el.findtext("{jabber:client}body") for el in routed if el.get("type") != "error"] == []
    errors = [el for el in routed if el.get("type") == "error"]
    assert [(e.get("to"), e.get("id")) for e in errors] == [(ALICE, "lost")]
    assert errors[0].find(f"{{jabber:client}}error/{{{ns.STANZAS}}}resource-constraint") is not None
    monkeypatch.setattr(archive, "append_many", append_many)
    await svc.receive(x(groupchat(BOB, "kept", "kept")))
    assert [el.findtext("{jabber:client}body") for el in router.take()] == ["kept", "kept"]
    assert len(archive.query(ROOM, ArchiveQuery(max=10)).items) == 1
    db.close()
