"""Helpers for account-join end-to-end tests: watch what reaches the room service from an
account, hold joins to make a race certain, query the account's archive, free ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET

from minimix.protocol import ns
from minimix.protocol.xml import Element, serialize
from tests.e2e.muc_helpers import Recorder, codes, from_room, kind, send_iq
from tests.support import Client, Running

SID = "urn:xmpp:sid:0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RoomTap:
    """Everything the group chat service receives from one account, in order; optionally holds
    join presences back (``hold``) so a second client's join certainly meets a join in flight."""

    def __init__(self, srv: Running, account: str) -> None:
        self.muc = srv.server.muc
        self.account = account
        self.seen: list[Element] = []
        self.hold = False
        self._held: list[Element] = []
        self._inner = self.muc.receive
        self.muc.receive = self._receive

    async def _receive(self, stanza: Element) -> None:
        frm = (stanza.get("from") or "").split("/", 1)[0]
        if frm == self.account:
            self.seen.append(stanza)
            if self.hold and stanza.tag.endswith("presence") and stanza.get("type") is None:
                self._held.append(stanza)
                return
        await self._inner(stanza)

    async def release(self) -> None:
        self.hold = False
        held, self._held = self._held, []
        for stanza in held:
            await self._inner(stanza)

    def joins(self) -> list[Element]:
        return [
            s
            for s in self.seen
            if s.tag.endswith("presence")
            and s.get("type") is None
            and s.find(f"{{{ns.MUC}}}x") is not None
        ]

    def of_kind(self, name: str) -> list[Element]:
        return [s for s in self.seen if s.tag.endswith(name)]

    def text(self) -> str:
        return "\n".join(serialize(s) for s in self.seen)


def is_unavailable_from(room_occupant: str) -> Callable[[ET.Element], bool]:
    return lambda el: (
        kind(el) == "presence"
        and el.get("from") == room_occupant
        and el.get("type") == "unavailable"
    )


def self_unavailable(room: str) -> Callable[[ET.Element], bool]:
    return lambda el: (
        kind(el) == "presence"
        and from_room(room)(el)
        and el.get("type") == "unavailable"
        and "110" in codes(el)
    )


async def no_stanza(rec: Recorder, pred: Callable[[ET.Element], bool]) -> None:
    """After a round trip, nothing matching ``pred`` has arrived (nor is waiting)."""
    await rec.settle()
    await asyncio.sleep(0.05)
    await rec.settle()
    got = rec.pending(pred)
    assert not got, [ET.tostring(e) for e in got]


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError("condition never became true")
        await asyncio.sleep(0.02)


def stanza_ids(el: ET.Element) -> dict[str, str]:
    """``by`` -> ``id`` of each XEP-0359 stanza-id."""
    return {s.get("by", ""): s.get("id", "") for s in el.findall(f"{{{SID}}}stanza-id")}


async def mam_query(
    c: Client, rec: Recorder, with_jid: str | None = None, include_groupchat: bool | None = None
) -> list[ET.Element]:
    """Query the account's own archive; returns the archived messages (unwrapped)."""
    fields = f"<field var='FORM_TYPE' type='hidden'><value>{ns.MAM}</value></field>"
    if with_jid:
        fields += f"<field var='with'><value>{with_jid}</value></field>"
    if include_groupchat is not None:
        value = "true" if include_groupchat else "false"
        fields += f"<field var='include-groupchat'><value>{value}</value></field>"
    qid = f"q{id(rec)}{len(rec.items)}"
    payload = (
        f"<query xmlns='{ns.MAM}' queryid='{qid}'>"
        f"<x xmlns='{ns.DATA}' type='submit'>{fields}</x></query>"
    )
    fin = await send_iq(c, payload, c.boundjid.bare, "set")
    assert fin.get("type") == "result", ET.tostring(fin)
    await rec.settle()
    out: list[ET.Element] = []
    for el in rec.pending(lambda e: e.find(f"{{{ns.MAM}}}result") is not None):
        result = el.find(f"{{{ns.MAM}}}result")
        assert result is not None
        if result.get("queryid") != qid:
            continue
        inner = result.find(f"{{{ns.FORWARD}}}forwarded/{{jabber:client}}message")
        if inner is not None:
            out.append(inner)
    return out


async def send_raw_iq(c: Client, xml: str) -> ET.Element:
    """Send a complete raw ``<iq>`` and wait for the answer with the same id."""
    el = ET.fromstring(xml)
    iq = c.make_iq(ito=el.get("to"), itype=el.get("type"), id=el.get("id"))
    for child in el:
        iq.append(child)
    from slixmpp.exceptions import IqError

    try:
        resp = await iq.send(timeout=5)
    except IqError as exc:
        return exc.iq.xml  # type: ignore[no-any-return]
    return resp.xml  # type: ignore[no-any-return]


def attrs(el: ET.Element) -> dict[str, Any]:
    return dict(el.attrib)
