"""Helpers for the account-data end-to-end tests: archive queries, stanza capture, carbons."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.support import Client

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
CLIENT = "jabber:client"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class Capture:
    """Every stanza matching an XPath, as raw ElementTree elements, in arrival order."""

    def __init__(
        self, client: Client, xpath: str, where: Callable[[ET.Element], bool] | None = None
    ) -> None:
        self.items: list[ET.Element] = []
        self.where = where
        self._new = asyncio.Event()
        self.name = f"capture-{uuid.uuid4().hex[:8]}"
        client.register_handler(Callback(self.name, MatchXPath(xpath), self._got))

    def _got(self, stanza: Any) -> None:
        if self.where is not None and not self.where(stanza.xml):
            return
        self.items.append(stanza.xml)
        self._new.set()

    async def wait(self, n: int = 1, timeout: float = 5.0) -> list[ET.Element]:
        """Wait until at least ``n`` stanzas arrived; returns all of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.items) < n:
            self._new.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"expected {n} stanzas, got {len(self.items)}")
            try:
                await asyncio.wait_for(self._new.wait(), left)
            except TimeoutError:
                continue
        return self.items


def capture_messages(client: Client, child: str = "{jabber:client}body") -> Capture:
    """Messages with a given child (Clark notation), e.g. every message with a body."""
    return Capture(client, f"{{{CLIENT}}}message/{child}")


async def settle(*clients: Client) -> None:
    """A round trip to the server for each client: everything sent before has been handled."""
    for c in clients:
        await c.plugin["xep_0199"].ping(timeout=5)


def stanza_ids(msg: ET.Element) -> dict[str, str]:
    """by -> id of each XEP-0359 stanza-id in a message."""
    return {s.get("by", ""): s.get("id", "") for s in msg.findall(f"{{{SID}}}stanza-id")}


def body(msg: ET.Element) -> str | None:
    return msg.findtext(f"{{{CLIENT}}}body")


def forwarded(result_or_carbon: ET.Element) -> ET.Element:
    """The message inside a MAM <result/> or a carbons <sent/>/<received/> wrapper."""
    inner = result_or_carbon.find(f".//{{{FORWARD}}}forwarded/{{{CLIENT}}}message")
    assert inner is not None, ET.tostring(result_or_carbon)
    return inner


def _form(fields: dict[str, str | list[str]]) -> str:
    out = "<x xmlns='jabber:x:data' type='submit'>"
    out += f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        out += f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
        out += "</field>"
    return out + "</x>"


class MamPage:
    def __init__(self, results: list[ET.Element], fin: ET.Element | None, error: str) -> None:
        self.results = results
        self.fin = fin
        self.error = error

    @property
    def ids(self) -> list[str]:
        return [r.get("id", "") for r in self.results]

    @property
    def bodies(self) -> list[str | None]:
        return [body(forwarded(r)) for r in self.results]

    @property
    def complete(self) -> bool:
        return self.fin is not None and self.fin.get("complete") in ("true", "1")

    def rsm(self, name: str) -> str | None:
        assert self.fin is not None
        return self.fin.findtext(f"{{{RSM}}}set/{{{RSM}}}{name}")


async def mam(
    client: Client,
    fields: dict[str, str | list[str]] | None = None,
    rsm: str = "",
    flip: bool = False,
    to: str | None = None,
) -> MamPage:
    """Run one MAM query (raw XML, as a client sends it); collects results and <fin/>."""
    qid = uuid.uuid4().hex[:10]
    results: list[ET.Element] = []

    def on_result(msg: Any) -> None:
        r = msg.xml.find(f"{{{MAM}}}result")
        if r is not None and r.get("queryid") == qid:
            results.append(r)

    name = f"mam-{qid}"
    client.register_handler(
        Callback(name, MatchXPath(f"{{{CLIENT}}}message/{{{MAM}}}result"), on_result)
    )
    inner = _form(fields) if fields else ""
    if rsm:
        inner += f"<set xmlns='{RSM}'>{rsm}</set>"
    if flip:
        inner += "<flip-page/>"
    iq = client.make_iq_set(ito=to)
    iq.xml.append(ET.fromstring(f"<query xmlns='{MAM}' queryid='{qid}'>{inner}</query>"))
    try:
        resp = await iq.send(timeout=10)
        return MamPage(results, resp.xml.find(f"{{{MAM}}}fin"), "")
    except IqError as err:
        return MamPage(results, None, err.iq["error"]["condition"])
    finally:
        client.remove_handler(name)


async def iq_xml(client: Client, kind: str, xml: str, to: str | None = None) -> ET.Element:
    """Send an iq with a raw payload; return the reply's payload (or the error element)."""
    iq = client.make_iq_get(ito=to) if kind == "get" else client.make_iq_set(ito=to)
    iq.xml.append(ET.fromstring(xml))
    try:
        resp = await iq.send(timeout=10)
    except IqError as err:
        found = err.iq.xml.find(f"{{{CLIENT}}}error")
        assert found is not None
        return found
    return resp.xml[0] if len(resp.xml) else resp.xml


def error_condition(err: ET.Element) -> str:
    for c in err:
        if c.tag.startswith(f"{{{STANZAS}}}") and not c.tag.endswith("}text"):
            return c.tag.split("}")[1]
    return ""


async def enable_carbons(*clients: Client) -> None:
    for c in clients:
        await iq_xml(c, "set", f"<enable xmlns='{CARBONS}'/>")


def send_xml(client: Client, xml: str) -> None:
    """Send a stanza exactly as written (the client's stream adds nothing)."""
    client.send_raw(xml)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


async def close(*clients: Client) -> None:
    """End each client's stream and wait for the server to close it."""
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
