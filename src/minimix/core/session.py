"""Client sessions (one bound resource each) and the registry that finds them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from minimix.protocol.jid import JID
from minimix.protocol.stanza import StreamError
from minimix.protocol.xml import (
    Element,
    escape_attr,
    escape_text,
    serialize_children,
    serialize_split,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class Link(Protocol):
    """What a session needs from its connection: write stanzas, close."""

    framed: bool

    def write_element(self, el: Element) -> None: ...

    def write_text(self, text: str, el: Element | None) -> None: ...

    def close(self, error: StreamError | None = None) -> None: ...


class BatchLink(Link, Protocol):
    """A link that takes many serialized stanzas at once (each still counted as one)."""

    def write_texts(self, texts: Sequence[str], kind: str) -> None: ...


class Prepared:
    """A stanza serialized once for fan-out: the per-recipient ``to`` is spliced in.

    ``for_recipient`` costs one string concatenation, not a tree copy or a serialization.
    Stanzas that share their children (copies made with ``copy_shallow`` for each recipient,
    as a room's reflections are) share the serialization of those children too, and of their
    attributes when those are the same: the last one is remembered, keyed on the child objects
    themselves, which nobody edits once shared.
    """

    __slots__ = ("_head", "_tail", "element")

    # The last stanza prepared: tag, text, attributes but ``to``, children; then its name,
    # attributes and the rest as serialized, and each child serialized.
    _memo: ClassVar[
        tuple[str, str | None, dict[str, str], tuple[Element, ...], str, str, list[str]] | None
    ] = None

    def __init__(self, el: Element) -> None:
        self.element = el
        kids = tuple(el)
        attrs = dict(el.attrib)
        attrs.pop("to", None)
        memo = Prepared._memo
        if memo is not None and memo[0] == el.tag and memo[1] == el.text:
            # Elements compare by identity: the same child objects, the same serialization.
            if memo[3] == kids and memo[2] == attrs:
                self._head = memo[4]
                self._tail = memo[5]
                return
            # The leading children it shares with the last one (a copy's, plus an id of its
            # own at the end, say) are not serialized again.
            old = memo[3]
            same = 0
            n = min(len(old), len(kids))
            while same < n and old[same] is kids[same]:
                same += 1
            parts = memo[6][:same] + serialize_children(el, start=same)
        else:
            parts = serialize_children(el)
        text = el.text
        content = (escape_text(text) if text else "") + "".join(parts)
        head, attr_text, rest = serialize_split(el, omit="to", content=content)
        self._head = head
        self._tail = attr_text + rest
        Prepared._memo = (el.tag, text, attrs, kids, head, self._tail, parts)

    def replaced(self, element: Element, old: str, new: str) -> Prepared:
        """``element`` prepared from this: a copy that differs from this stanza only by ``new``
        where this one has ``old`` (in its text after ``to``), without serializing again."""
        out = Prepared.__new__(Prepared)
        out.element = element
        out._head = self._head
        out._tail = self._tail.replace(old, new)
        return out

    def for_recipient(self, to: str, framed: bool = False) -> str:
        return self.splice(f' to="{escape_attr(to)}"', framed)

    @staticmethod
    def containing(batch: Sequence[Prepared], fragment: str) -> list[Prepared]:
        """The stanzas of ``batch`` whose serialization (but ``to``) contains ``fragment``."""
        return [p for p in batch if fragment in p._tail]  # the head is "<" and the name

    def splice(self, to_attr: str, framed: bool = False) -> str:
        """The stanza with ``to_attr`` (`` to="..."``, escaped) after its name."""
        if framed:
            return f'{self._head} xmlns="jabber:client"{to_attr}{self._tail}'
        return f"{self._head}{to_attr}{self._tail}"


class Session:
    """One bound client: a full JID on one connection."""

    def __init__(self, jid: JID, link: Link, stream_id: str) -> None:
        self.jid = jid
        self.account = jid.bare
        self.link = link
        self.to_attr = f' to="{escape_attr(str(jid))}"'  # spliced into prepared stanzas
        self.stream_id = stream_id
        self.priority = 0
        self.presence: Element | None = None  # last broadcast available presence
        self.interested = False  # has requested the roster
        self.directed: set[JID] = set()
        self.closed = False
        self.hibernating = False
        self.started = time.monotonic()
        self._slots: dict[type, Any] = {}
        # Filters see every stanza on its way to the client; returning None holds it back.
        self.send_filters: list[Callable[[Element], Element | None]] = []

    @property
    def available(self) -> bool:
        return self.presence is not None

    def slot(self, owner: type[T], factory: Callable[[], T]) -> T:
        """Per-session state owned by one extension, created on first use."""
        v = self._slots.get(owner)
        if v is None:
            v = factory()
            self._slots[owner] = v
        return v

    def peek_slot(self, owner: type[T]) -> T | None:
        return self._slots.get(owner)

    def send(self, el: Element) -> None:
        if self.closed:
            return
        for f in self.send_filters:
            out = f(el)
            if out is None:
                return
            el = out
        self.link.write_element(el)

    def send_prepared(self, prepared: Prepared) -> None:
        """Deliver a fan-out stanza: spliced text, no re-serialization (filters still apply)."""
        if self.closed:
            return
        if self.send_filters:
            el = prepared.element
            for f in self.send_filters:
                out = f(el)
                if out is None:
                    return
                if out is not el:
                    self.link.write_element(out)
                    return
        link = self.link
        link.write_text(prepared.splice(self.to_attr, link.framed), prepared.element)

    def send_prepared_many(self, batch: Sequence[Prepared]) -> None:
        """Deliver fan-out stanzas of one kind (presences, say), in order, in one write: each
        spliced, each counted on its own (XEP-0198 acknowledgements and resumption).

        Filters still see every stanza: one that can vouch for the whole batch (a
        ``passes_all(batch)`` method answering True: every stanza goes out unchanged) is asked
        once; otherwise each stanza goes through :meth:`send_prepared`."""
        if self.closed or not batch:
            return
        for f in self.send_filters:
            passes_all: Callable[[Sequence[Prepared]], bool] | None = getattr(f, "passes_all", None)
            if passes_all is None or not passes_all(batch):
                for prepared in batch:
                    self.send_prepared(prepared)
                return
        link = self.link
        to_attr = self.to_attr
        if link.framed:
            to_attr = ' xmlns="jabber:client"' + to_attr
        texts = [f"{p._head}{to_attr}{p._tail}" for p in batch]  # splice(), inlined
        write_texts: Callable[[Sequence[str], str], None] | None = getattr(
            link, "write_texts", None
        )
        if write_texts is not None:
            write_texts(texts, batch[0].element.tag)
        else:
            for text, prepared in zip(texts, batch, strict=True):
                link.write_text(text, prepared.element)

    def __repr__(self) -> str:
        return f"<Session {self.jid}>"


class SessionRegistry:
    def __init__(self) -> None:
        self._by_account: dict[JID, dict[str, Session]] = {}
        self._by_full: dict[JID, Session] = {}
        self._by_stream: dict[str, Session] = {}

    def add(self, session: Session) -> Session | None:
        """Register; returns the session that held the same full JID, if any."""
        resources = self._by_account.setdefault(session.account, {})
        old = resources.get(session.jid.resource)
        resources[session.jid.resource] = session
        self._by_full[session.jid] = session
        self._by_stream[session.stream_id] = session
        return old

    def remove(self, session: Session) -> None:
        resources = self._by_account.get(session.account)
        if resources and resources.get(session.jid.resource) is session:
            del resources[session.jid.resource]
            if not resources:
                del self._by_account[session.account]
        if self._by_full.get(session.jid) is session:
            del self._by_full[session.jid]
        if self._by_stream.get(session.stream_id) is session:
            del self._by_stream[session.stream_id]

    def get(self, full: JID) -> Session | None:
        return self._by_full.get(full)

    def has_account(self, bare: JID) -> bool:
        """Whether the account has a session (bound client) now."""
        return bare in self._by_account

    def of_account(self, bare: JID) -> list[Session]:
        resources = self._by_account.get(bare)
        return list(resources.values()) if resources else []

    def by_stream_id(self, stream_id: str) -> Session | None:
        return self._by_stream.get(stream_id)

    def accounts(self) -> Iterator[JID]:
        return iter(list(self._by_account))

    def __iter__(self) -> Iterator[Session]:
        for resources in list(self._by_account.values()):
            yield from list(resources.values())

    def __len__(self) -> int:
        return sum(len(r) for r in self._by_account.values())
