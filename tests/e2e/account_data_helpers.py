"""Shared code of the account-data end-to-end tests: archive queries, stanza capture, PEP."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from minimix.protocol.jid import JID
from minimix.storage.stores import RosterItem
from tests.e2e.raw_client import SASL_NS, RawClient
from tests.support import Client, Running, connect

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


# ---------------------------------------------------------------------- PEP
PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = f"{PUBSUB}#owner"
EVENT = f"{PUBSUB}#event"
ERRORS = f"{PUBSUB}#errors"
MOOD = "urn:example:mood"
PEP_PLUGINS = ("xep_0030", "xep_0199", "xep_0115", "xep_0163")


async def pep_client(srv: Running, jid: str, *interests: str) -> Client:
    """A slixmpp client whose caps ask for ``interests``; returns once the server knows them."""
    c = await connect(srv, jid, plugins=PEP_PLUGINS, presence=False)
    for node in interests:
        c.plugin["xep_0163"].add_interest(node)
    await c.plugin["xep_0115"].update_caps(broadcast=False)
    c.send_presence()
    await c.get_roster()
    full = JID.parse(jid)
    await eventually(lambda: full in srv.server.pep.caps.of_jid)
    for node in interests:
        assert f"{node}+notify" in srv.server.pep.caps.features(full)
    return c


def events(client: Client) -> Capture:
    return Capture(client, f"{{jabber:client}}message/{{{EVENT}}}event")


def friends(srv: Running, a: str, b: str) -> None:
    srv.server.roster_store.put(a, RosterItem(f"{b}@localhost", subscription="both"))
    srv.server.roster_store.put(b, RosterItem(f"{a}@localhost", subscription="both"))


def mood(text: str) -> str:
    return f"<mood xmlns='{MOOD}'>{text}</mood>"


async def publish(
    client: Client,
    node: str,
    payload: str,
    item_id: str = "",
    options: str = "",
    to: str | None = None,
) -> ET.Element:
    item_attr = f" id='{item_id}'" if item_id else ""
    extra = ""
    if options:
        extra = (
            "<publish-options><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE' type='hidden'>"
            f"<value>{PUBSUB}#publish-options</value></field>{options}</x></publish-options>"
        )
    return await iq_xml(
        client,
        "set",
        f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item{item_attr}>{payload}</item>"
        f"</publish>{extra}</pubsub>",
        to=to,
    )


def option(var: str, value: str) -> str:
    return f"<field var='pubsub#{var}'><value>{value}</value></field>"


async def items(client: Client, owner: str, node: str, extra: str = "") -> ET.Element:
    return await iq_xml(
        client, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{extra}/></pubsub>", to=owner
    )


def item_ids(result: ET.Element) -> list[str]:
    return [i.get("id", "") for i in result.iter(f"{{{PUBSUB}}}item")]


def app_error(err: ET.Element) -> str:
    for c in err:
        if c.tag.startswith(f"{{{ERRORS}}}"):
            return c.tag.split("}")[1]
    return ""


# ---------------------------------------------------------------------- stream management
SM = "urn:xmpp:sm:3"
STANZA_TAGS = {f"{{{CLIENT}}}message", f"{{{CLIENT}}}presence", f"{{{CLIENT}}}iq"}


class SmClient:
    """A raw client that counts what it handles (``h``) and acknowledges only when told."""

    def __init__(self, raw: RawClient) -> None:
        self.raw = raw
        self.h = 0
        self.sm_id = ""
        self.bodies: list[str] = []

    @classmethod
    async def login(cls, srv: Running, user: str, resource: str) -> SmClient:
        raw = await RawClient().login(srv.port, user, ca=srv.ca, resource=resource)
        client = cls(raw)
        raw.send_raw(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await raw.recv_until(f"{{{SM}}}enabled")
        assert enabled.get("resume") in ("true", "1")
        client.sm_id = enabled.get("id", "")
        raw.send_raw("<presence/>")
        return client

    async def next_stanza(self, timeout: float = 5.0) -> ET.Element:
        """The next stanza (counted); ack requests and acks are skipped."""
        while True:
            el = await self.raw.recv(timeout)
            if el.tag in STANZA_TAGS:
                self.h += 1
                text = el.findtext(f"{{{CLIENT}}}body")
                if el.tag == f"{{{CLIENT}}}message" and text is not None:
                    self.bodies.append(text)
                return el

    async def read_bodies(self, n: int, timeout: float = 5.0) -> list[str]:
        """Handle stanzas until ``n`` more message bodies arrived; returns those bodies."""
        start = len(self.bodies)
        while len(self.bodies) < start + n:
            await self.next_stanza(timeout)
        return self.bodies[start:]

    def ack(self) -> None:
        self.raw.send_raw(f"<a xmlns='{SM}' h='{self.h}'/>")

    def kill(self) -> None:
        """Drop the TCP connection without closing the stream (a phone losing its network)."""
        assert self.raw.writer is not None
        self.raw.writer.transport.abort()

    async def resume(self, srv: Running, user: str) -> tuple[RawClient, ET.Element]:
        """A new connection that asks to resume; returns it and <resumed/> (or <failed/>)."""
        raw = RawClient()
        await raw.connect(srv.port, srv.ca)
        await raw.start()
        await raw.starttls()
        result = await raw.authenticate(user, "secret", "SCRAM-SHA-256")
        assert result.tag == f"{{{SASL_NS}}}success"
        features = await raw.start()
        assert features.find(f"{{{SM}}}sm") is not None
        raw.send_raw(f"<resume xmlns='{SM}' previd='{self.sm_id}' h='{self.h}'/>")
        answer = await raw.wait_for(lambda el: el.tag in (f"{{{SM}}}resumed", f"{{{SM}}}failed"))
        return raw, answer
