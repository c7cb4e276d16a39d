"""XEP-0313 Message Archive Management: the wire format, shared by user and room archives.

Pure functions, no server state: read a ``<query/>`` (data form + XEP-0059 ``<set/>`` +
``<flip-page/>``) into an :class:`ArchiveQuery`, write the result messages and the ``<fin/>``,
and describe the query form. Timestamps use the XEP-0082 DateTime profile.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from minimix.protocol import ns
from minimix.protocol.dates import format_datetime, parse_datetime
from minimix.protocol.jid import try_parse
from minimix.protocol.stanza import StanzaError, new_id
from minimix.protocol.xml import Element, ParseError, SubElement, parse_element, tag
from minimix.storage.archive import (
    ArchivedMessage,
    ArchivePage,
    ArchiveQuery,
    ArchiveStore,
    UnknownArchiveId,
)

QUERY = tag(ns.MAM, "query")
FIN = tag(ns.MAM, "fin")
RESULT = tag(ns.MAM, "result")
METADATA = tag(ns.MAM, "metadata")
PREFS = tag(ns.MAM, "prefs")
FLIP_PAGE = tag(ns.MAM, "flip-page")
_X = tag(ns.DATA, "x")
_FIELD = tag(ns.DATA, "field")
_VALUE = tag(ns.DATA, "value")
_SET = tag(ns.RSM, "set")

STANDARD_FIELDS = ("with", "start", "end", "before-id", "after-id", "ids", "include-groupchat")


format_stamp = format_datetime


def parse_stamp(text: str) -> float:
    """Read an XEP-0082 DateTime; raises ``ValueError``. A missing offset means UTC."""
    t = parse_datetime(text)
    if t is None:
        raise ValueError(f"not a XEP-0082 DateTime: {text!r}")
    return t


def _values(field: Element) -> list[str]:
    return [(v.text or "").strip() for v in field.findall(_VALUE)]


def _one(field: Element) -> str:
    vals = _values(field)
    if len(vals) != 1:
        raise StanzaError("bad-request", f"field {field.get('var')!r} needs exactly one value")
    return vals[0]


def _boolean(field: Element) -> bool:
    v = _one(field).lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    raise StanzaError("bad-request", f"field {field.get('var')!r} is not a boolean")


def _time(field: Element) -> float:
    try:
        return parse_stamp(_one(field))
    except ValueError:
        raise StanzaError("bad-request", f"field {field.get('var')!r} is not a date") from None


def parse_query(
    iq: Element,
    max_page: int,
    *,
    groupchat_by_default: bool = True,
    extra_fields: tuple[str, ...] = (),
) -> tuple[ArchiveQuery, str | None]:
    """Read an ``<iq type='set'><query xmlns='urn:xmpp:mam:2'/></iq>``; returns (query, queryid).

    ``max_page`` caps the page size (also the default). When the form has no
    ``include-groupchat``, group chat is included if ``groupchat_by_default`` or the query is
    ``with`` someone (a user archive passes False: unfiltered queries leave group chat out, a
    query with a room's JID returns that room). Fields in ``extra_fields`` are accepted and left
    to the caller; any other unknown field is ``feature-not-implemented`` (XEP-0313 §4.1.6).
    Raises :class:`StanzaError` for a malformed query.
    """
    query = iq[0] if len(iq) else None
    if query is None or query.tag != QUERY:
        raise StanzaError("bad-request", "expected a MAM query")
    if query.get("node"):
        raise StanzaError("feature-not-implemented", "pubsub archives are not offered here")
    q = ArchiveQuery(max=max_page)
    include_groupchat: bool | None = None
    form = query.find(_X)
    if form is not None:
        if form.get("type", "submit") != "submit":
            raise StanzaError("bad-request", "the form must be submitted")
        for field in form.findall(_FIELD):
            var = field.get("var", "")
            if var == "FORM_TYPE":
                if _values(field) != [ns.MAM]:
                    raise StanzaError("bad-request", f"FORM_TYPE must be {ns.MAM}")
            elif var == "with":
                jid = try_parse(_one(field))
                if jid is None:
                    raise StanzaError("jid-malformed", "'with' is not a JID")
                q.with_jid = str(jid)
            elif var == "start":
                q.start = _time(field)
            elif var == "end":
                q.end = _time(field)
            elif var == "before-id":
                q.before_id = _one(field) or None
            elif var == "after-id":
                q.after_id = _one(field) or None
            elif var == "ids":
                q.ids = [v for v in _values(field) if v]
            elif var == "include-groupchat":
                include_groupchat = _boolean(field)
            elif var in extra_fields:
                continue
            else:
                raise StanzaError("feature-not-implemented", f"unknown field {var!r}")
    if include_groupchat is None:
        include_groupchat = groupchat_by_default or q.with_jid is not None
    q.include_groupchat = include_groupchat
    rsm = query.find(_SET)
    if rsm is not None:
        max_el = rsm.find(tag(ns.RSM, "max"))
        if max_el is not None:
            try:
                requested = int((max_el.text or "").strip())
            except ValueError:
                raise StanzaError("bad-request", "<max/> must be a number") from None
            if requested < 0:
                raise StanzaError("bad-request", "<max/> must not be negative")
            q.max = min(requested, max_page)
        after = rsm.find(tag(ns.RSM, "after"))
        if after is not None:
            q.after = (after.text or "").strip()
            if not q.after:
                raise StanzaError("bad-request", "<after/> needs an id")
        before = rsm.find(tag(ns.RSM, "before"))
        if before is not None:
            q.before = (before.text or "").strip()
        if rsm.find(tag(ns.RSM, "index")) is not None:
            raise StanzaError("feature-not-implemented", "paging by index is not supported")
    q.flip = query.find(FLIP_PAGE) is not None
    return q, query.get("queryid")


def result_message(
    item: ArchivedMessage, archive_jid: str, to: str | None, queryid: str | None
) -> Element:
    """One ``<message><result><forwarded><delay/>stanza</forwarded></result></message>``."""
    attrs = {"from": archive_jid, "id": new_id()}
    if to:
        attrs["to"] = to
    msg = Element("{jabber:client}message", attrs)
    rattrs = {"id": item.id}
    if queryid is not None:
        rattrs["queryid"] = queryid
    result = SubElement(msg, RESULT, rattrs)
    fwd = SubElement(result, tag(ns.FORWARD, "forwarded"))
    SubElement(fwd, tag(ns.DELAY, "delay"), {"stamp": format_stamp(item.stamp)})
    try:
        fwd.append(parse_element(item.stanza))
    except ParseError:
        pass  # an unreadable copy: the id, time and JID still stand (XEP-0313 §3.2)
    return msg


def fin_element(page: ArchivePage) -> Element:
    """The ``<fin/>`` for the iq result, with the XEP-0059 ``<set/>``."""
    fin = Element(FIN)
    if page.complete:
        fin.set("complete", "true")
    rsm = SubElement(fin, _SET)
    if page.items:
        first = SubElement(rsm, tag(ns.RSM, "first"))
        first.text = page.items[0].id
        if page.first_index is not None:
            first.set("index", str(page.first_index))
        SubElement(rsm, tag(ns.RSM, "last")).text = page.items[-1].id
    SubElement(rsm, tag(ns.RSM, "count")).text = str(page.count)
    return fin


async def send_results(
    send: Callable[[Element], Awaitable[None] | None],
    iq: Element,
    page: ArchivePage,
    archive_jid: str,
    queryid: str | None,
) -> Element:
    """Send each result to the requester (``iq``'s ``from``) through ``send``; returns ``<fin/>``.

    Results go in chronological order, or newest first when the query asked ``<flip-page/>``.
    """
    query = iq[0] if len(iq) else None
    flip = query is not None and query.find(FLIP_PAGE) is not None
    items = list(reversed(page.items)) if flip else page.items
    to = iq.get("from")
    for item in items:
        out = send(result_message(item, archive_jid, to, queryid))
        if inspect.isawaitable(out):
            await out
    return fin_element(page)


def form_fields(extra: list[str]) -> Element:
    """The query form (``type='form'``): the standard fields, then ``extra`` as text fields."""
    x = Element(_X, {"type": "form"})
    ft = SubElement(x, _FIELD, {"type": "hidden", "var": "FORM_TYPE"})
    SubElement(ft, _VALUE).text = ns.MAM
    SubElement(x, _FIELD, {"type": "jid-single", "var": "with"})
    SubElement(x, _FIELD, {"type": "text-single", "var": "start"})
    SubElement(x, _FIELD, {"type": "text-single", "var": "end"})
    SubElement(x, _FIELD, {"type": "text-single", "var": "before-id"})
    SubElement(x, _FIELD, {"type": "text-single", "var": "after-id"})
    ids = SubElement(x, _FIELD, {"type": "list-multi", "var": "ids"})
    validate = SubElement(ids, tag(ns.XDATA_VALIDATE, "validate"), {"datatype": "xs:string"})
    SubElement(validate, tag(ns.XDATA_VALIDATE, "open"))
    SubElement(x, _FIELD, {"type": "boolean", "var": "include-groupchat"})
    for var in extra:
        SubElement(x, _FIELD, {"type": "text-single", "var": var})
    return x


def metadata_element(bounds: tuple[ArchivedMessage, ArchivedMessage] | None) -> Element:
    """``<metadata/>`` with the first and last message of an archive (empty when none)."""
    md = Element(METADATA)
    if bounds is not None:
        first, last = bounds
        SubElement(
            md, tag(ns.MAM, "start"), {"id": first.id, "timestamp": format_stamp(first.stamp)}
        )
        SubElement(md, tag(ns.MAM, "end"), {"id": last.id, "timestamp": format_stamp(last.stamp)})
    return md


def run_query(store: ArchiveStore, archive: str, q: ArchiveQuery) -> ArchivePage:
    """``store.query`` with an unknown id turned into ``item-not-found`` (XEP-0313 §4.1.4)."""
    try:
        return store.query(archive, q)
    except UnknownArchiveId as exc:
        raise StanzaError("item-not-found", f"no message {exc.archive_id!r} here") from None
