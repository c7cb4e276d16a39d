"""Test helpers for the group chat service: record what a real client receives, in order, and
drive rooms with raw XEP-0045 stanzas."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.exceptions import IqError

from minimix.protocol import ns
from tests.support import Client, Running, connect

SERVICE = "conference.localhost"
Pred = Callable[[ET.Element], bool]
_ids = itertools.count(1)


def muc_user_x(el: ET.Element) -> ET.Element | None:
    return el.find(f"{{{ns.MUC_USER}}}x")


def codes(el: ET.Element) -> set[str]:
    x = muc_user_x(el)
    if x is None:
        return set()
    return {s.get("code", "") for s in x.findall(f"{{{ns.MUC_USER}}}status")}


def item(el: ET.Element) -> ET.Element | None:
    x = muc_user_x(el)
    return None if x is None else x.find(f"{{{ns.MUC_USER}}}item")


def kind(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def is_subject(el: ET.Element) -> bool:
    return (
        kind(el) == "message"
        and el.find("{jabber:client}subject") is not None
        and el.find("{jabber:client}body") is None
    )


def error_condition(el: ET.Element) -> str | None:
    err = el.find("{jabber:client}error")
    if err is None:
        return None
    for c in err:
        if c.tag.startswith(f"{{{ns.STANZAS}}}") and not c.tag.endswith("}text"):
            return c.tag.rsplit("}", 1)[-1]
    return "undefined-condition"


def body(el: ET.Element) -> str | None:
    return el.findtext("{jabber:client}body")


class Recorder:
    """Every stanza a client receives, in arrival order; tests take them by predicate."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.items: list[ET.Element] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Event()
        client.add_filter("in", self._incoming)

    def _incoming(self, stanza: Any) -> Any:
        self.items.append(stanza.xml)
        self._changed.set()
        return stanza

    def _pending(self) -> list[tuple[int, ET.Element]]:
        return [(i, el) for i, el in enumerate(self.items) if i not in self._taken]

    async def _wait(self, timeout: float) -> None:
        self._changed.clear()
        await asyncio.wait_for(self._changed.wait(), timeout)

    async def take(self, pred: Pred, timeout: float = 5.0) -> ET.Element:
        """The first stanza not taken yet that matches (waiting for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, el in self._pending():
                if pred(el):
                    self._taken.add(i)
                    return el
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no matching stanza; got: " + self.dump())
            try:
                await self._wait(left)
            except TimeoutError:
                pass

    async def take_until(
        self, pred: Pred, timeout: float = 5.0, only: Pred | None = None
    ) -> list[ET.Element]:
        """Every stanza (matching ``only``) up to and including the first matching ``pred``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            seen: list[tuple[int, ET.Element]] = []
            for i, el in self._pending():
                if only is not None and not only(el):
                    continue
                seen.append((i, el))
                if pred(el):
                    for j, _ in seen:
                        self._taken.add(j)
                    return [e for _, e in seen]
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no matching stanza; got: " + self.dump())
            try:
                await self._wait(left)
            except TimeoutError:
                pass

    def pending(self, pred: Pred | None = None) -> list[ET.Element]:
        return [el for _, el in self._pending() if pred is None or pred(el)]

    async def settle(self) -> None:
        """A round trip to the server: anything sent to this client before is in by now."""
        await send_iq(self.client, f"<ping xmlns='{ns.PING}'/>", "localhost", "get")

    def dump(self) -> str:
        return "\n".join(ET.tostring(el, encoding="unicode") for _, el in self._pending())


def from_room(room: str) -> Pred:
    return lambda el: (el.get("from") or "").split("/", 1)[0] == room


def from_jid(jid: str) -> Pred:
    return lambda el: el.get("from") == jid


def self_presence(room: str) -> Pred:
    return lambda el: kind(el) == "presence" and from_room(room)(el) and "110" in codes(el)


async def client(srv: Running, name: str, resource: str = "r") -> tuple[Client, Recorder]:
    jid = f"{name}@localhost"
    if not srv.server.accounts.exists(name):
        srv.add_user(name)
    c = await connect(srv, f"{jid}/{resource}")
    return c, Recorder(c)


async def send_iq(c: Client, payload: str, to: str, itype: str = "get") -> ET.Element:
    """Send an IQ with a raw payload; returns the result or the error stanza."""
    iq = c.make_iq(ito=to, itype=itype)
    iq.append(ET.fromstring(payload))
    try:
        resp = await iq.send(timeout=5)
    except IqError as exc:
        return exc.iq.xml  # type: ignore[no-any-return]
    return resp.xml  # type: ignore[no-any-return]


def join_stanza(
    room: str,
    nick: str,
    *,
    history: dict[str, str] | None = None,
    password: str | None = None,
    pid: str | None = None,
    extra: str = "",
) -> str:
    inner = ""
    if password is not None:
        inner += f"<password>{password}</password>"
    if history is not None:
        attrs = " ".join(f"{k}='{v}'" for k, v in history.items())
        inner += f"<history {attrs}/>"
    pid = pid or f"join{next(_ids)}"
    return (
        f"<presence to='{room}/{nick}' id='{pid}'><x xmlns='{ns.MUC}'>{inner}</x>{extra}</presence>"
    )


async def join(c: Client, rec: Recorder, room: str, nick: str, **kw: Any) -> list[ET.Element]:
    """Join and return the room's stanzas up to the subject (or up to the error)."""
    c.send_raw(join_stanza(room, nick, **kw))

    def done(el: ET.Element) -> bool:
        return is_subject(el) or (kind(el) == "presence" and el.get("type") == "error")

    return await rec.take_until(done, only=from_room(room))


async def configure(
    c: Client, room: str, fields: dict[str, str | list[str]] | None = None
) -> ET.Element:
    """Submit the owner form (an empty submit makes an instant room)."""
    inner = ""
    if fields:
        inner = f"<field var='FORM_TYPE'><value>{ns.MUC_ROOMCONFIG}</value></field>"
        for var, value in fields.items():
            values = value if isinstance(value, list) else [value]
            inner += f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
            inner += "</field>"
    return await send_iq(
        c,
        f"<query xmlns='{ns.MUC_OWNER}'><x xmlns='{ns.DATA}' type='submit'>{inner}</x></query>",
        room,
        "set",
    )


async def create(
    c: Client,
    rec: Recorder,
    room: str,
    nick: str,
    fields: dict[str, str | list[str]] | None = None,
) -> list[ET.Element]:
    """Create a room (201) and configure it; returns the join stanzas."""
    stanzas = await join(c, rec, room, nick)
    own = [el for el in stanzas if "110" in codes(el)]
    assert own and "201" in codes(own[-1]), [ET.tostring(e) for e in stanzas]
    result = await configure(c, room, fields)
    assert result.get("type") == "result", ET.tostring(result)
    return stanzas


def send_groupchat(c: Client, room: str, text: str, mid: str | None = None, extra: str = "") -> str:
    mid = mid or f"m{next(_ids)}"
    c.send_raw(
        f"<message to='{room}' type='groupchat' id='{mid}'><body>{text}</body>{extra}</message>"
    )
    return mid


async def close(*clients: Client) -> None:
    """Disconnect clients; waits on each client's current ``disconnected`` future (slixmpp
    replaces the future once it resolves, so it is taken before disconnecting)."""
    futures = [c.disconnected for c in clients]
    for c in clients:
        c.disconnect()
    await asyncio.wait(futures, timeout=3)


def admin_item(**attrs: str) -> str:
    reason = attrs.pop("reason", None)
    a = " ".join(f"{k}='{v}'" for k, v in attrs.items())
    inner = f"<reason>{reason}</reason>" if reason else ""
    return f"<query xmlns='{ns.MUC_ADMIN}'><item {a}>{inner}</item></query>"
