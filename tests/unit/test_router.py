"""The router with fake client links (no sockets): addressing, RFC 6121 §8.5 delivery rules,
hooks and their priorities, IQ dispatch, bounces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minimix.core.hooks import Direction, Hooks, IqScope, Priority
from minimix.core.router import Router
from minimix.core.session import Prepared, Session, SessionRegistry
from minimix.protocol.jid import JID
from minimix.protocol.stanza import StanzaError, StreamError
from minimix.protocol.xml import Element, element, parse_element, serialize


@dataclass
class Link:
    framed: bool = False
    got: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def write_element(self, el: Element) -> None:
        self.got.append(el)

    def write_text(self, text: str, el: Element | None) -> None:
        self.texts.append(text)

    def close(self, error: StreamError | None = None) -> None:
        pass


@dataclass
class World:
    router: Router
    hooks: Hooks
    sessions: SessionRegistry
    accounts: set[str]
    stored: list[Element] = field(default_factory=list)

    def online(self, jid: str, priority: int | None = 0) -> tuple[Session, Link]:
        link = Link()
        s = Session(JID.parse(jid), link, jid)
        if priority is not None:
            s.presence = parse_element(f"<presence><priority>{priority}</priority></presence>")
            s.priority = priority
        self.sessions.add(s)
        return s, link


def world(*accounts: str) -> World:
    hooks = Hooks()
    sessions = SessionRegistry()
    router = Router("example.org", hooks, sessions)
    names = set(accounts)
    router.account_exists = names.__contains__
    w = World(router, hooks, sessions, names)

    async def store(stanza: Element) -> bool:
        w.stored.append(stanza)
        return True

    router.undeliverable.append(store)
    return w


def msg(to: str, frm: str = "alice@example.org/a", mtype: str | None = "chat") -> Element:
    t = f" type='{mtype}'" if mtype else ""
    return parse_element(f"<message to='{to}' from='{frm}'{t} id='m'><body>x</body></message>")


def bodies(link: Link) -> list[str]:
    return [e.findtext("{jabber:client}body") or "" for e in link.got]


async def test_bare_jid_goes_to_the_highest_non_negative_priority() -> None:
    w = world("alice", "bob")
    _, low = w.online("bob@example.org/low", 1)
    _, high = w.online("bob@example.org/high", 5)
    _, neg = w.online("bob@example.org/neg", -1)
    _, quiet = w.online("bob@example.org/quiet", None)
    await w.router.route(msg("bob@example.org"))
    assert (len(high.got), len(low.got), len(neg.got), len(quiet.got)) == (1, 0, 0, 0)


async def test_equal_top_priorities_all_get_it_and_headlines_go_to_all() -> None:
    w = world("alice", "bob")
    _, one = w.online("bob@example.org/one", 3)
    _, two = w.online("bob@example.org/two", 3)
    _, low = w.online("bob@example.org/low", 0)
    await w.router.route(msg("bob@example.org"))
    assert (len(one.got), len(two.got), len(low.got)) == (1, 1, 0)
    await w.router.route(msg("bob@example.org", mtype="headline"))
    assert (len(one.got), len(two.got), len(low.got)) == (2, 2, 1)


async def test_no_eligible_session_stores_chat_and_drops_headline() -> None:
    w = world("alice", "bob")
    w.online("bob@example.org/neg", -5)
    await w.router.route(msg("bob@example.org"))
    await w.router.route(msg("bob@example.org", mtype="headline"))
    assert len(w.stored) == 1


async def test_full_jid_and_unknown_resource() -> None:
    w = world("alice", "bob")
    alice, alice_link = w.online("alice@example.org/a")
    _, neg = w.online("bob@example.org/neg", -1)
    _, main = w.online("bob@example.org/main", 0)
    await w.router.route(msg("bob@example.org/neg"))
    assert len(neg.got) == 1 and len(main.got) == 0
    await w.router.route(msg("bob@example.org/gone"))  # chat: as if to the bare JID
    assert len(main.got) == 1
    await w.router.route(msg("bob@example.org/gone", mtype="groupchat"))
    assert alice_link.got[-1].get("type") == "error"
    iq = parse_element(
        "<iq type='get' id='q' to='bob@example.org/gone' from='alice@example.org/a'>"
        "<ping xmlns='urn:xmpp:ping'/></iq>"
    )
    await w.router.route(iq, alice)
    err = alice_link.got[-1]
    assert err.get("id") == "q" and err.get("type") == "error"


async def test_unknown_account_bounces_and_unsubscribes() -> None:
    w = world("alice")
    _, link = w.online("alice@example.org/a")
    await w.router.route(msg("ghost@example.org"))
    assert link.got[-1].get("type") == "error"
    assert (
        link.got[-1].find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    )
    sub = parse_element(
        "<presence type='subscribe' to='ghost@example.org' from='alice@example.org'/>"
    )
    await w.router.route(sub)
    reply = link.got[-1]
    assert (reply.get("type"), reply.get("from")) == ("unsubscribed", "ghost@example.org")
    assert w.stored == []


async def test_errors_are_never_bounced() -> None:
    w = world("alice")
    _, link = w.online("alice@example.org/a")
    await w.router.route(msg("ghost@example.org", mtype="error"))
    await w.router.route(msg("x@elsewhere.net", mtype="error"))
    assert link.got == []
    await w.router.route(msg("x@elsewhere.net"))
    assert (
        link.got[-1].find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-not-found")
        is not None
    )


async def test_hooks_run_by_priority_and_can_take_or_refuse() -> None:
    w = world("alice", "bob")
    _, bob = w.online("bob@example.org/b")
    _, alice = w.online("alice@example.org/a")
    order: list[str] = []

    async def observe(stanza: Element, origin: Any) -> bool:
        order.append("observe")
        return False

    async def refuse(stanza: Element, origin: Any) -> bool:
        order.append("filter")
        if stanza.findtext("{jabber:client}body") == "bad":
            raise StanzaError("not-acceptable")
        return False

    w.hooks.on_stanza(Direction.INBOUND_FULL, "message", observe, Priority.OBSERVE)
    w.hooks.on_stanza(Direction.INBOUND_FULL, "message", refuse, Priority.FILTER)
    await w.router.route(msg("bob@example.org/b"))
    assert order == ["filter", "observe"] and len(bob.got) == 1
    bad = msg("bob@example.org/b")
    bad.find("{jabber:client}body").text = "bad"  # type: ignore[union-attr]
    await w.router.route(bad)
    assert len(bob.got) == 1
    assert alice.got[-1].find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}not-acceptable") is not None


async def test_iq_dispatch_by_scope() -> None:
    w = world("alice")
    alice, link = w.online("alice@example.org/a")

    async def host_version(iq: Element, origin: Any) -> Element | None:
        return element("jabber:iq:version", "query")

    async def fails(iq: Element, origin: Any) -> Element | None:
        raise StanzaError("forbidden")

    w.hooks.on_iq("get", "{jabber:iq:version}query", host_version, IqScope.HOST)
    w.hooks.on_iq("get", "{urn:x}q", fails, IqScope.ANY)
    iq = parse_element(
        "<iq type='get' id='1' from='alice@example.org/a' to='example.org'>"
        "<query xmlns='jabber:iq:version'/></iq>"
    )
    await w.router.route(iq, alice)
    assert link.got[-1].get("type") == "result" and link.got[-1].get("from") == "example.org"
    # The same payload to an account: no ACCOUNT-scope handler.
    iq.set("to", "alice@example.org")
    await w.router.route(iq, alice)
    assert link.got[-1].get("type") == "error"
    iq2 = parse_element(
        "<iq type='get' id='2' from='alice@example.org/a' to='alice@example.org'>"
        "<q xmlns='urn:x'/></iq>"
    )
    await w.router.route(iq2, alice)
    assert link.got[-1].find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None
    empty = parse_element("<iq type='get' id='3' from='alice@example.org/a' to='example.org'/>")
    await w.router.route(empty, alice)
    assert link.got[-1].find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None


async def test_components_receive_their_domain() -> None:
    w = world("alice")
    got: list[Element] = []

    class Gateway:
        domain = "gw.example.org"

        async def receive(self, stanza: Element) -> None:
            got.append(stanza)

    gw = Gateway()
    w.router.register_component(gw)
    await w.router.route(msg("user@gw.example.org"))
    assert len(got) == 1
    w.router.unregister_component(gw)
    await w.router.route(msg("user@gw.example.org"))
    assert len(got) == 1


def test_prepared_splices_the_recipient() -> None:
    m = msg("x@example.org", "alice@example.org/a")
    p = Prepared(m)
    text = p.for_recipient("bob@example.org/b")
    assert parse_element(text).get("to") == "bob@example.org/b"
    assert parse_element(text).findtext("{jabber:client}body") == "x"
    assert serialize(parse_element(text)) == text
    framed = p.for_recipient("b'<@example.org", framed=True)
    assert parse_element(framed).get("to") == "b'<@example.org"


async def test_copies_handlers_take_recipients_in_priority_order_and_the_rest_is_routed() -> None:
    w = world("alice", "bob", "carol")
    _, bob = w.online("bob@example.org/b")
    _, carol = w.online("carol@example.org/c")
    seen: list[tuple[str, list[str]]] = []

    def first(stanza: Element, recipients: list[str], origin: Any) -> list[str]:
        seen.append(("first", list(recipients)))
        return [r for r in recipients if not r.startswith("alice")]  # takes alice's copy

    def broken(stanza: Element, recipients: list[str], origin: Any) -> list[str]:
        raise RuntimeError("a failing handler takes nothing")

    def last(stanza: Element, recipients: list[str], origin: Any) -> list[str]:
        seen.append(("last", list(recipients)))
        return recipients

    w.hooks.on_copies("message", last, Priority.NORMAL)
    w.hooks.on_copies("message", broken, Priority.INTERCEPT)
    w.hooks.on_copies("message", first, Priority.FILTER)
    m = msg("", frm="room@rooms.example.org/nick", mtype="chat")
    del m.attrib["to"]
    recipients = ["alice@example.org", "bob@example.org/b", "carol@example.org/c"]
    await w.router.route_copies(m, recipients)
    assert seen == [("first", recipients), ("last", recipients[1:])]
    # Each recipient left gets its own copy, addressed to it; the original is untouched.
    assert [e.get("to") for e in bob.got + carol.got] == recipients[1:]
    assert bodies(bob) == bodies(carol) == ["x"]
    assert "to" not in m.attrib
    assert w.stored == []  # alice's copy was taken, not stored offline


async def test_copies_without_handlers_are_routed_one_by_one_like_any_stanza() -> None:
    w = world("bob")
    _, bob = w.online("bob@example.org/b")
    m = msg("", frm="room@rooms.example.org/nick", mtype="groupchat")
    del m.attrib["to"]
    bounced: list[Element] = []
    w.router.components["rooms.example.org"] = _Recorder("rooms.example.org", bounced)
    await w.router.route_copies(m, ["bob@example.org/b", "nobody@example.org"])
    assert [e.get("to") for e in bob.got] == ["bob@example.org/b"]
    # The copy for an account that does not exist bounces to the room, as a routed copy would.
    assert [e.get("type") for e in bounced] == ["error"]


@dataclass
class _Recorder:
    domain: str
    got: list[Element]

    async def receive(self, stanza: Element) -> None:
        self.got.append(stanza)
