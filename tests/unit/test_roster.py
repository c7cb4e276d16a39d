"""The RFC 6121 subscription state machine, two local accounts, no sockets: each row sends one
presence and checks both rosters afterwards (RFC 6121 Appendix A)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from minimix.core.hooks import Hooks
from minimix.core.router import Router
from minimix.core.session import Session, SessionRegistry
from minimix.extensions.roster import Roster
from minimix.protocol.jid import JID
from minimix.protocol.stanza import StreamError
from minimix.protocol.xml import Element, parse_element
from minimix.storage.database import Database
from minimix.storage.stores import AccountStore, DocumentStore, RosterItem, RosterStore

A = JID.parse("alice@example.org")
B = JID.parse("bob@example.org")


@dataclass
class Link:
    framed: bool = False
    got: list[Element] = field(default_factory=list)

    def write_element(self, el: Element) -> None:
        self.got.append(el)

    def write_text(self, text: str, el: Element | None) -> None:
        pass

    def close(self, error: StreamError | None = None) -> None:
        pass


@dataclass
class Two:
    roster: Roster
    router: Router
    store: RosterStore
    alice: Session
    bob: Session
    links: dict[str, Link]

    def state(self, who: JID, contact: JID) -> tuple[str, str | None, bool]:
        item = self.store.get(who.local, str(contact))
        if item is None:
            return ("absent", None, False)
        return (item.subscription, item.ask, item.approved)

    async def send(self, session: Session, ptype: str, to: JID) -> None:
        p = parse_element(f"<presence type='{ptype}' to='{to}' from='{session.jid}'/>")
        await self.router.from_client(session, p)

    def set(self, who: JID, contact: JID, sub: str, ask: str | None = None) -> None:
        self.store.put(who.local, RosterItem(str(contact), subscription=sub, ask=ask))


@asynccontextmanager
async def two() -> AsyncIterator[Two]:
    db = Database(":memory:")
    accounts = AccountStore(db)
    accounts.create("alice", "x")
    accounts.create("bob", "x")
    hooks = Hooks()
    sessions = SessionRegistry()
    router = Router("example.org", hooks, sessions)
    router.account_exists = accounts.exists
    store = RosterStore(db)
    roster = Roster(router, sessions, store, DocumentStore(db))
    roster.register(hooks)
    links = {"alice": Link(), "bob": Link()}
    alice = Session(A.with_resource("a"), links["alice"], "1")
    bob = Session(B.with_resource("b"), links["bob"], "2")
    for s in (alice, bob):
        s.interested = True
        s.presence = parse_element("<presence/>")
        sessions.add(s)
    try:
        yield Two(roster, router, store, alice, bob, links)
    finally:
        db.close()


# (alice's state before, bob's state before, who sends, type) -> (alice after, bob after)
ROWS = [
    # subscribe
    (
        ("absent", None),
        ("absent", None),
        "alice",
        "subscribe",
        ("none", "subscribe"),
        ("absent", None),
    ),
    (("none", None), ("none", None), "alice", "subscribe", ("none", "subscribe"), ("none", None)),
    (("from", None), ("to", None), "alice", "subscribe", ("from", "subscribe"), ("to", None)),
    (("to", None), ("from", None), "alice", "subscribe", ("to", None), ("from", None)),
    # subscribed (bob approves a pending request from alice)
    (("none", "subscribe"), ("none", None), "bob", "subscribed", ("to", None), ("from", None)),
    (("from", "subscribe"), ("to", None), "bob", "subscribed", ("both", None), ("both", None)),
    # unsubscribe
    (("to", None), ("from", None), "alice", "unsubscribe", ("none", None), ("none", None)),
    (("both", None), ("both", None), "alice", "unsubscribe", ("from", None), ("to", None)),
    (("none", "subscribe"), ("none", None), "alice", "unsubscribe", ("none", None), ("none", None)),
    # unsubscribed (bob cancels alice's subscription, or denies her request)
    (("to", None), ("from", None), "bob", "unsubscribed", ("none", None), ("none", None)),
    (("both", None), ("both", None), "bob", "unsubscribed", ("from", None), ("to", None)),
    (("none", "subscribe"), ("none", None), "bob", "unsubscribed", ("none", None), ("none", None)),
]


@pytest.mark.parametrize(("a0", "b0", "sender", "ptype", "a1", "b1"), ROWS)
async def test_state_machine(
    a0: tuple[str, str | None],
    b0: tuple[str, str | None],
    sender: str,
    ptype: str,
    a1: tuple[str, str | None],
    b1: tuple[str, str | None],
) -> None:
    async with two() as t:
        if a0[0] != "absent":
            t.set(A, B, a0[0], a0[1])
        if b0[0] != "absent":
            t.set(B, A, b0[0], b0[1])
        if a0[1] == "subscribe":  # alice's request waits for bob's answer
            t.roster.documents.set("bob", "subscription-requests", str(A), "")
        if sender == "alice":
            await t.send(t.alice, ptype, B)
        else:
            await t.send(t.bob, ptype, A)
        assert t.state(A, B)[:2] == a1
        assert t.state(B, A)[:2] == b1


async def test_inbound_request_waits_then_approval_and_pre_approval() -> None:
    async with two() as t:
        await t.send(t.alice, "subscribe", B)
        assert any(e.get("type") == "subscribe" for e in t.links["bob"].got)
        assert t.roster.documents.keys("bob", "subscription-requests") == ["alice@example.org"]
        await t.send(t.bob, "subscribed", A)
        assert t.roster.documents.keys("bob", "subscription-requests") == []
        assert t.state(B, A)[0] == "from"
    async with two() as t:
        await t.send(t.bob, "subscribed", A)  # pre-approval
        assert t.state(B, A) == ("none", None, True)
        await t.send(t.alice, "subscribe", B)
        assert t.state(B, A) == ("from", None, False)
        assert t.state(A, B)[0] == "to"
        # bob never saw a request.
        assert not any(e.get("type") == "subscribe" for e in t.links["bob"].got)


async def test_pushes_carry_increasing_versions() -> None:
    async with two() as t:
        await t.send(t.alice, "subscribe", B)
        await t.send(t.bob, "subscribed", A)
        versions = [
            int(q.get("ver", "0"))
            for e in t.links["alice"].got
            if (q := e.find("{jabber:iq:roster}query")) is not None
        ]
        assert len(versions) == 2 and versions[0] < versions[1]
        assert t.store.version("alice") == versions[-1]
