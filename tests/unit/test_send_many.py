"""Many fan-out stanzas to one client at once (a room's occupants for a client attaching to it):
``Session.send_prepared_many`` and the connection's ``write_texts``. Filters still see every
stanza, each stanza still counts for stream management (XEP-0198)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from minimix.core.c2s import ClientConnection, SmState
from minimix.core.session import Prepared, Session
from minimix.extensions.client_state import ClientState
from minimix.protocol.jid import JID
from minimix.protocol.stanza import StreamError
from minimix.protocol.xml import Element, parse_element
from tests.unit.test_stream import FakeTransport, harness

ME = JID.parse("alice@localhost/laptop")
ROOM = "room@conference.localhost"
USER = "http://jabber.org/protocol/muc#user"


def occupant(nick: str, codes: Sequence[int] = ()) -> Element:
    status = "".join(f"<status code='{c}'/>" for c in codes)
    return parse_element(
        f"<presence xmlns='jabber:client' from='{ROOM}/{nick}' to='alice@localhost'>"
        f"<x xmlns='{USER}'><item affiliation='none' role='participant'/>{status}</x></presence>"
    )


def batch(*nicks: str) -> list[Prepared]:
    return [Prepared(occupant(n)) for n in nicks]


def expected(nick: str, framed: bool = False) -> str:
    ns = ' xmlns="jabber:client"' if framed else ""
    return (
        f'<presence{ns} to="{ME}" from="{ROOM}/{nick}"><x xmlns="{USER}">'
        '<item affiliation="none" role="participant"/></x></presence>'
    )


@dataclass
class Link:
    """A link without a bulk write: one ``write_text`` per stanza."""

    framed: bool = False
    texts: list[str] = field(default_factory=list)
    elements: list[Element] = field(default_factory=list)

    def write_element(self, el: Element) -> None:
        self.elements.append(el)

    def write_text(self, text: str, el: Element | None) -> None:
        self.texts.append(text)

    def close(self, error: StreamError | None = None) -> None:
        pass


@dataclass
class BulkLink(Link):
    writes: list[tuple[list[str], str]] = field(default_factory=list)

    def write_texts(self, texts: Sequence[str], kind: str) -> None:
        self.writes.append((list(texts), kind))


def test_one_bulk_write_with_each_stanza_spliced_in_order() -> None:
    link = BulkLink()
    Session(ME, link, "s1").send_prepared_many(batch("a", "b", "c"))
    assert link.writes == [
        ([expected("a"), expected("b"), expected("c")], "{jabber:client}presence")
    ]
    assert link.texts == []


def test_framed_links_get_the_namespace_on_each_stanza() -> None:
    link = BulkLink(framed=True)
    Session(ME, link, "s1").send_prepared_many(batch("a", "b"))
    assert link.writes[0][0] == [expected("a", framed=True), expected("b", framed=True)]


def test_a_link_without_bulk_writes_gets_each_stanza() -> None:
    link = Link()
    Session(ME, link, "s1").send_prepared_many(batch("a", "b"))
    assert link.texts == [expected("a"), expected("b")]


def test_nothing_after_the_session_closed_and_nothing_for_an_empty_batch() -> None:
    link = BulkLink()
    s = Session(ME, link, "s1")
    s.send_prepared_many([])
    s.closed = True
    s.send_prepared_many(batch("a"))
    assert link.writes == [] and link.texts == []


def test_a_filter_that_cannot_vouch_for_the_batch_sees_every_stanza() -> None:
    link = BulkLink()
    s = Session(ME, link, "s1")
    seen: list[str | None] = []

    def drop_b(el: Element) -> Element | None:
        seen.append(el.get("from"))
        return None if el.get("from", "").endswith("/b") else el

    s.send_filters.append(drop_b)
    s.send_prepared_many(batch("a", "b", "c"))
    assert seen == [f"{ROOM}/a", f"{ROOM}/b", f"{ROOM}/c"]
    assert link.writes == []
    assert link.texts == [expected("a"), expected("c")]


class _Vouching:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[int] = []
        self.each: list[str | None] = []

    def __call__(self, el: Element) -> Element | None:
        self.each.append(el.get("from"))
        return el

    def passes_all(self, items: Sequence[Prepared]) -> bool:
        self.asked.append(len(items))
        return self.answer


def test_a_filter_that_vouches_for_the_batch_is_asked_once() -> None:
    link = BulkLink()
    s = Session(ME, link, "s1")
    f = _Vouching(True)
    s.send_filters.append(f)
    s.send_prepared_many(batch("a", "b"))
    assert f.asked == [2] and f.each == []
    assert len(link.writes) == 1


def test_a_filter_refusing_the_batch_gets_each_stanza() -> None:
    link = BulkLink()
    s = Session(ME, link, "s1")
    f = _Vouching(False)
    s.send_filters.append(f)
    s.send_prepared_many(batch("a", "b"))
    assert f.asked == [2] and f.each == [f"{ROOM}/a", f"{ROOM}/b"]
    assert link.writes == [] and link.texts == [expected("a"), expected("b")]


# --------------------------------------------------------------------------- client state


async def test_an_active_client_takes_the_batch_at_once_and_learns_its_nick() -> None:
    link = BulkLink()
    s = Session(ME, link, "s1")
    csi = ClientState()
    st = csi._install(s)
    me = Prepared(occupant("alice", (110,)))
    s.send_prepared_many([*batch("a", "b"), me])
    assert len(link.writes) == 1 and len(link.writes[0][0]) == 3
    assert st.nicks == {ROOM: "alice"}


async def test_an_inactive_client_has_the_batch_held_per_stanza() -> None:
    link = BulkLink()
    s = Session(ME, link, "s1")
    csi = ClientState()
    st = csi._install(s)
    await csi.inactive(Element("inactive"), s)
    s.send_prepared_many(batch("a", "b", "a"))
    assert link.writes == [] and link.texts == [] and link.elements == []
    assert [el.get("from") for el in st.held] == [f"{ROOM}/b", f"{ROOM}/a"]  # newest of each
    # Its own presence (110) matters: what was held goes first, in order, then it.
    s.send_prepared_many([Prepared(occupant("alice", (110,)))])
    assert [el.get("from") for el in link.elements] == [f"{ROOM}/b", f"{ROOM}/a"]
    assert link.texts == [expected("alice").replace("</x>", '<status code="110"/></x>')]


# --------------------------------------------------------------------------- the connection


class FramesTransport(FakeTransport):
    def __init__(self, framed: bool) -> None:
        super().__init__(framed=framed)
        self.frames: list[list[str]] = []

    def write_frames(self, frames: list[str]) -> None:
        self.frames.append(list(frames))


async def test_write_texts_counts_each_stanza_for_stream_management() -> None:
    async with harness() as h:
        t = FakeTransport()
        conn = ClientConnection(h.services, t)
        conn.stream.data_to_send()
        conn.sm = SmState(Session(ME, conn, "s1"), resumable=True)
        conn.write_texts(
            ["<presence>1</presence>", "<presence>2</presence>"], "{jabber:client}presence"
        )
        conn.write_text("<message>3</message>", Element("{jabber:client}message"))
        assert conn.sm.h_out == 3
        assert list(conn.sm.queue) == [
            "<presence>1</presence>",
            "<presence>2</presence>",
            "<message>3</message>",
        ]
        assert h.services.counters["out_presence"] == 2
        assert conn.sm.acknowledge(2) and list(conn.sm.queue) == ["<message>3</message>"]
        conn._flush()
        assert b"".join(t.out).decode() == (
            "<presence>1</presence><presence>2</presence><message>3</message>"
        )


async def test_write_texts_on_websocket_is_one_frame_per_stanza() -> None:
    async with harness() as h:
        t = FramesTransport(framed=True)
        conn = ClientConnection(h.services, t)
        conn.stream.frames_to_send()
        conn.write_texts(
            ["<presence>1</presence>", "<presence>2</presence>"], "{jabber:client}presence"
        )
        conn._flush()
        assert t.frames == [["<presence>1</presence>", "<presence>2</presence>"]]
