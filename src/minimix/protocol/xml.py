"""XML elements, the restricted incremental stream parser, and the serializer.

Elements are :class:`xml.etree.ElementTree.Element` objects with Clark-notation tags
(``{namespace}local``). The parser is fed bytes and yields complete top-level elements; it
refuses what RFC 6120 §11.1 forbids (DTDs, entity declarations, comments, processing
instructions) and enforces a stanza size and nesting depth limit.
"""

from __future__ import annotations

import pyexpat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement, TreeBuilder

from minimix.protocol import ns

__all__ = [
    "Element",
    "ParseError",
    "StreamParser",
    "SubElement",
    "child",
    "children",
    "element",
    "escape_attr",
    "escape_text",
    "local_name",
    "namespace",
    "serialize",
    "tag",
]


class ParseError(Exception):
    """The input violates XML or XMPP's restricted XML. ``condition`` is a stream error."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(text or condition)
        self.condition = condition
        self.text = text


def tag(namespace_uri: str, name: str) -> str:
    return f"{{{namespace_uri}}}{name}"


def namespace(el: Element) -> str:
    t = el.tag
    if t[0] == "{":
        return t[1 : t.index("}")]
    return ""


def local_name(el: Element) -> str:
    t = el.tag
    return t[t.index("}") + 1 :] if t[0] == "{" else t


def element(
    namespace_uri: str,
    name: str,
    attrs: dict[str, str] | None = None,
    text: str | None = None,
    kids: Iterable[Element] = (),
) -> Element:
    el = Element(f"{{{namespace_uri}}}{name}", attrs or {})
    if text is not None:
        el.text = text
    el.extend(kids)
    return el


def child(el: Element, namespace_uri: str, name: str) -> Element | None:
    return el.find(f"{{{namespace_uri}}}{name}")


def children(el: Element, namespace_uri: str, name: str) -> list[Element]:
    return el.findall(f"{{{namespace_uri}}}{name}")


# --------------------------------------------------------------------------- serializer

# Carriage returns and (in attributes) tabs and newlines are written as character references:
# a parser would otherwise normalize them, and the recipient would read different text.
_TEXT_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESC = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "'": "&apos;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_XML_PREFIX = "{" + ns.XML + "}"


def escape_text(s: str) -> str:
    return s.translate(_TEXT_ESC)


def escape_attr(s: str) -> str:
    return s.translate(_ATTR_ESC)


def _attr_name(name: str, out_decls: list[str], counter: list[int]) -> str:
    if name[0] != "{":
        return name
    if name.startswith(_XML_PREFIX):
        return "xml:" + name[len(_XML_PREFIX) :]
    uri, local = name[1:].split("}", 1)
    counter[0] += 1
    prefix = f"ns{counter[0]}"
    out_decls.append(f' xmlns:{prefix}="{escape_attr(uri)}"')
    return f"{prefix}:{local}"


def _write(
    el: Element, parent_ns: str, out: list[str], remap: dict[str, str] | None = None
) -> None:
    t = el.tag
    if t[0] == "{":
        close = t.index("}")
        uri, name = t[1:close], t[close + 1 :]
        if remap is not None:
            uri = remap.get(uri, uri)
    else:
        uri, name = "", t
    out.append("<" + name)
    if uri != parent_ns:
        out.append(f' xmlns="{escape_attr(uri)}"')
    attrib = el.attrib
    if attrib:
        decls: list[str] = []
        counter = [0]
        for k, v in attrib.items():
            out.append(f' {_attr_name(k, decls, counter)}="{v.translate(_ATTR_ESC)}"')
        out.extend(decls)
    text = el.text
    if len(el) == 0 and not text:
        out.append("/>")
    else:
        out.append(">")
        if text:
            out.append(text.translate(_TEXT_ESC))
        for sub in el:
            _write(sub, uri, out, remap)
            if sub.tail:
                out.append(sub.tail.translate(_TEXT_ESC))
        out.append(f"</{name}>")


def serialize(el: Element, parent_ns: str = ns.CLIENT) -> str:
    """Serialize ``el`` as it appears inside a stream whose default namespace is ``parent_ns``.

    Top-level stanzas in any of the stanza namespaces are written in the stream's own default
    namespace, so a stanza routed from a component stream to a client stream needs no rewriting.
    Pass ``parent_ns=""`` for a self-contained element (WebSocket framing).
    """
    out: list[str] = []
    t = el.tag
    remap = None
    if parent_ns and not t.startswith("{" + parent_ns + "}"):
        source = namespace(el)
        if source in _STANZA_NAMESPACES and parent_ns in _STANZA_NAMESPACES:
            # A stanza crossing between stream kinds: it and its children in the stanza
            # namespace (body, subject, error...) are written in the stream's namespace.
            remap = {source: parent_ns}
    _write(el, parent_ns, out, remap)
    return "".join(out)


def serialize_split(
    el: Element, parent_ns: str = ns.CLIENT, omit: str = "", content: str | None = None
) -> tuple[str, str, str]:
    """``el`` as :func:`serialize` writes it, in three parts: ``"<name"``, its namespace
    declaration and attributes (without ``omit``), and the rest (``/>``, or ``>`` with the
    content and the end tag). ``parts[0] + ' a="v"' + parts[1] + parts[2]`` is ``el`` with one
    more attribute (a per-recipient ``to`` spliced into a stanza serialized once).

    ``content`` is the serialized text and children when the caller knows them already
    (see :func:`serialize_content`); they are written here otherwise.
    """
    t = el.tag
    remap = None
    if parent_ns and not t.startswith("{" + parent_ns + "}"):
        source = namespace(el)
        if source in _STANZA_NAMESPACES and parent_ns in _STANZA_NAMESPACES:
            remap = {source: parent_ns}
    if t[0] == "{":
        close = t.index("}")
        uri, name = t[1:close], t[close + 1 :]
        if remap is not None:
            uri = remap.get(uri, uri)
    else:
        uri, name = "", t
    out: list[str] = []
    if uri != parent_ns:
        out.append(f' xmlns="{escape_attr(uri)}"')
    attrib = el.attrib
    if attrib:
        decls: list[str] = []
        counter = [0]
        for k, v in attrib.items():
            if k != omit:
                out.append(f' {_attr_name(k, decls, counter)}="{v.translate(_ATTR_ESC)}"')
        out.extend(decls)
    if content is None:
        content = _content(el, uri, remap)
    rest = f">{content}</{name}>" if content else "/>"
    return "<" + name, "".join(out), rest


def serialize_content(el: Element, parent_ns: str = ns.CLIENT) -> str:
    """The text and children of ``el`` as :func:`serialize` writes them inside it."""
    uri, remap = _inner_namespace(el, parent_ns)
    return _content(el, uri, remap)


def serialize_children(el: Element, parent_ns: str = ns.CLIENT, start: int = 0) -> list[str]:
    """Each child of ``el`` from index ``start`` (with the text after it) as :func:`serialize`
    writes it inside ``el``: ``escape_text(el.text or "") + "".join(...)`` from 0 is the content.
    """
    uri, remap = _inner_namespace(el, parent_ns)
    parts: list[str] = []
    for sub in el[start:]:
        out: list[str] = []
        _write(sub, uri, out, remap)
        if sub.tail:
            out.append(sub.tail.translate(_TEXT_ESC))
        parts.append("".join(out))
    return parts


def _inner_namespace(el: Element, parent_ns: str) -> tuple[str, dict[str, str] | None]:
    """The namespace ``el`` is written in inside ``parent_ns``, and the stanza remap if any."""
    t = el.tag
    remap = None
    if parent_ns and not t.startswith("{" + parent_ns + "}"):
        source = namespace(el)
        if source in _STANZA_NAMESPACES and parent_ns in _STANZA_NAMESPACES:
            remap = {source: parent_ns}
    uri = namespace(el)
    if remap is not None:
        uri = remap.get(uri, uri)
    return uri, remap


def _content(el: Element, uri: str, remap: dict[str, str] | None) -> str:
    out: list[str] = []
    if el.text:
        out.append(el.text.translate(_TEXT_ESC))
    for sub in el:
        _write(sub, uri, out, remap)
        if sub.tail:
            out.append(sub.tail.translate(_TEXT_ESC))
    return "".join(out)


_STANZA_NAMESPACES = frozenset((ns.CLIENT, ns.SERVER, ns.COMPONENT))


def inner_xml(el: Element) -> str:
    """Serialize the children and text of ``el`` (its content, without its own tag)."""
    out: list[str] = []
    uri = namespace(el)
    if el.text:
        out.append(el.text.translate(_TEXT_ESC))
    for sub in el:
        _write(sub, uri, out)
        if sub.tail:
            out.append(sub.tail.translate(_TEXT_ESC))
    return "".join(out)


def renamespace(el: Element, source_ns: str, target_ns: str) -> None:
    """Move ``el`` and its descendants from ``source_ns`` to ``target_ns``, in place (for a
    freshly parsed stanza entering the router from a component or server stream)."""
    prefix = "{" + source_ns + "}"
    cut = len(prefix)
    for e in el.iter():
        if e.tag.startswith(prefix):
            e.tag = "{" + target_ns + "}" + e.tag[cut:]


# --------------------------------------------------------------------------- parser


@dataclass(slots=True)
class StreamHeader:
    """The opening tag of a stream (``<stream:stream>`` or WebSocket ``<open/>``)."""

    tag: str
    attrs: dict[str, str]


class StreamParser:
    """Incremental parser for an XMPP stream: feed bytes, iterate over events.

    Events are :class:`StreamHeader` for the stream root, :class:`Element` for each complete
    top-level child, and ``None`` once the stream root is closed. Errors raise
    :class:`ParseError` with the stream error condition to send.

    ``framed=True`` parses WebSocket framing (RFC 7395), where every frame is a document of its
    own: the caller calls :meth:`reset` before each frame.
    """

    def __init__(
        self, max_stanza_size: int = 262144, max_depth: int = 64, framed: bool = False
    ) -> None:
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.framed = framed
        self._events: list[StreamHeader | Element | None] = []
        self._names = _NAMES
        self.reset()

    def reset(self) -> None:
        """Start a fresh document (after STARTTLS or SASL success, or per WebSocket frame).

        The expat parser itself is made when the first byte arrives.
        """
        self._parser: Any = None
        self._default_ns = ""
        self._root_ns: tuple[tuple[str, str], ...] = ()  # the root's namespace declarations
        self._prologue = b""  # their replay, for a parser made again after :meth:`release`
        self._base = 0  # stream byte index of the current expat parser's first byte
        self._depth = 0
        self._builder: TreeBuilder | None = None
        self._fed = 0  # bytes received since the reset
        self._mark = 0  # byte index of the last stanza boundary: the size limit counts from it
        self._closed = False

    def _make_parser(self) -> Any:
        p = pyexpat.ParserCreate("UTF-8", " ")
        # Text arrives in pieces of at most this many characters (joined by the tree
        # builder); every connection's parser holds such a buffer, so it is kept small.
        p.buffer_size = _TEXT_BUFFER
        p.buffer_text = True
        p.ordered_attributes = False
        p.specified_attributes = True
        if hasattr(p, "SetReparseDeferralEnabled"):
            p.SetReparseDeferralEnabled(False)
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._data
        p.StartDoctypeDeclHandler = self._refuse_doctype
        p.EntityDeclHandler = self._refuse_entity
        p.CommentHandler = self._refuse_comment
        p.ProcessingInstructionHandler = self._refuse_pi
        p.ExternalEntityRefHandler = self._refuse_external
        p.SkippedEntityHandler = self._refuse_skipped
        p.DefaultHandler = self._default
        p.StartCdataSectionHandler = self._cdata_boundary
        p.EndCdataSectionHandler = self._cdata_boundary
        self._parser = p
        if self._depth:
            # Made again after release(), between stanzas: the replayed root (before the
            # handlers that would report it) puts the new parser in the same namespace
            # context as the one it replaces.
            p.Parse(self._prologue, False)
            self._base = self._fed - len(self._prologue)
        else:
            self._base = self._fed
        p.StartElementHandler = self._start
        p.StartNamespaceDeclHandler = self._namespace_declared
        return p

    def release(self) -> bool:
        """Free the expat parser while the stream is between stanzas (an idle connection's
        largest allocation, about 10 KB); the next :meth:`feed` makes a new one. False, and
        nothing changes, when the parser is in the middle of something.
        """
        p = self._parser
        if p is None:
            return True
        if self.framed:
            self._parser = None
            return True
        if self._closed or self._depth != 1 or self._builder is not None:
            return False
        if not self._prologue:
            return False  # the root's own name cannot be written again (see _prologue)
        if p.CurrentByteIndex + self._base != self._fed:
            return False  # part of a tag or character is waiting for the rest
        # (Buffered text is handed over at the end of each Parse call: none is held here.)
        self._parser = None
        return True

    # expat callbacks ------------------------------------------------------
    def _fix(self, name: str) -> str:
        fixed = self._names.get(name)
        if fixed is None:
            if " " in name:
                uri, local = name.split(" ", 1)
                fixed = f"{{{uri}}}{local}"
            else:
                fixed = name
            if len(self._names) < _MAX_NAMES:
                self._names[name] = fixed
        return fixed

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if attrs:
            attrs = {(self._fix(k) if " " in k else k): v for k, v in attrs.items()}
        t = self._fix(name)
        if self._depth == 1 and not self.framed:
            attrs["xmlns"] = self._default_ns
            self._prologue = _prologue(name, self._root_ns)
            self._root_ns = ()
            self._events.append(StreamHeader(t, attrs))
            self._mark = self._parser.CurrentByteIndex + self._base
            return
        if self._depth > self.max_depth:
            raise ParseError("policy-violation", "nesting too deep")
        if self._builder is None:
            self._builder = TreeBuilder()
            # A stanza starts: count from its "<".
            self._mark = self._parser.CurrentByteIndex + self._base
        self._builder.start(t, attrs)

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0 and not self.framed:
            self._closed = True
            self._events.append(None)
            return
        b = self._builder
        assert b is not None
        b.end(self._fix(name))
        if self._depth == (0 if self.framed else 1):
            end = self._parser.CurrentByteIndex + self._base
            if end - self._mark > self.max_stanza_size:
                raise ParseError("policy-violation", "stanza too large")
            self._events.append(b.close())
            self._builder = None
            self._mark = end

    def _data(self, text: str) -> None:
        if self._builder is not None:
            self._builder.data(text)
        elif text.strip():
            raise ParseError("bad-format", "text at stream level")
        else:
            # Whitespace keepalives between stanzas.
            self._mark = self._parser.CurrentByteIndex + self._base

    def _cdata_boundary(self) -> None:
        """CDATA sections are allowed (RFC 6120 §11.1 does not restrict them); their text
        arrives through :meth:`_data` like any other text."""

    def _namespace_declared(self, prefix: str | None, uri: str | None) -> None:
        if uri is None:  # xmlns="" (back to no namespace)
            return
        if _BAD_NAMESPACE_CHARS.intersection(uri):
            # A "}" would end the Clark-notation namespace early: the element would be written
            # out under another name, and the recipient would read different XML. Braces and
            # whitespace are not allowed in a URI reference anyway (RFC 3986).
            raise ParseError("not-well-formed", "invalid namespace name")
        if self._depth == 0:
            self._root_ns += ((prefix or "", uri),)
            if not prefix:
                self._default_ns = uri

    def _refuse_doctype(self, *args: object) -> None:
        raise ParseError("restricted-xml", "DTDs are not allowed")

    def _refuse_entity(self, *args: object) -> None:
        raise ParseError("restricted-xml", "entity declarations are not allowed")

    def _refuse_comment(self, *args: object) -> None:
        raise ParseError("restricted-xml", "comments are not allowed")

    def _refuse_pi(self, *args: object) -> None:
        raise ParseError("restricted-xml", "processing instructions are not allowed")

    def _refuse_external(self, *args: object) -> int:
        raise ParseError("restricted-xml", "external entities are not allowed")

    def _refuse_skipped(self, *args: object) -> None:
        raise ParseError("restricted-xml", "undefined entity")

    def _default(self, data: str) -> None:
        # Reached for the XML declaration and for stray markup expat hands over unparsed.
        if data.startswith("<!"):
            raise ParseError("restricted-xml", "markup declarations are not allowed")

    # public ------------------------------------------------------------------
    def feed(self, data: bytes) -> Iterator[StreamHeader | Element | None]:
        """Feed bytes; yield every event they complete.

        The size limit counts a stanza's bytes from its first ``<`` to its end tag, and while
        it is incomplete, every byte since the last boundary (the stream header, the end of the
        last stanza, whitespace between stanzas); checked after each piece of at most 64 KiB, so
        the parser never holds more than the limit plus one piece.
        """
        if self._closed:
            if data.strip():
                raise ParseError("not-well-formed", "data after stream end")
            return
        parser = self._parser
        if parser is None:
            parser = self._make_parser()
        view = memoryview(data)
        for start in range(0, len(view), _PIECE):
            piece = view[start : start + _PIECE]
            try:
                parser.Parse(piece, False)
            except pyexpat.ExpatError as exc:
                raise _expat_error(exc) from None
            except RecursionError:
                raise ParseError("policy-violation", "nesting too deep") from None
            self._fed += len(piece)
            if self._fed - self._mark > self.max_stanza_size:
                raise ParseError("policy-violation", "stanza too large")
            events = self._events
            if events:
                self._events = []
                yield from events
            if self._closed:
                rest = view[start + _PIECE :]
                if bytes(rest).strip():
                    raise ParseError("not-well-formed", "data after stream end")
                return

    def feed_frame(self, data: bytes) -> Element:
        """Parse one complete WebSocket frame (a self-contained document) into an element."""
        self.reset()
        if len(data) > self.max_stanza_size:
            raise ParseError("policy-violation", "stanza too large")
        try:
            self._make_parser().Parse(data, True)
        except pyexpat.ExpatError as exc:
            raise _expat_error(exc) from None
        finally:
            self._parser = None  # each frame is a document of its own
        events, self._events = self._events, []
        if len(events) != 1 or not isinstance(events[0], Element):
            raise ParseError("not-well-formed", "a frame must hold exactly one element")
        return events[0]


_PIECE = 65536
_TEXT_BUFFER = 1024
# Replayed roots by name and namespace declarations (the same few for every client); bounded.
_PROLOGUES: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}


def _prologue(name: str, declarations: tuple[tuple[str, str], ...]) -> bytes:
    """The root's opening tag again, as far as a parser reading what follows can tell: its
    qualified name (the stream's end tag must match it) and its namespace declarations
    (prefix, namespace), without its other attributes. ``name`` is expat's ``"uri local"``.

    Empty when the name's prefix is ambiguous (two declarations of the root's namespace).
    """
    key = (name, declarations)
    out = _PROLOGUES.get(key)
    if out is not None:
        return out
    uri, space, local = name.partition(" ")
    if space:
        prefixes = [prefix for prefix, declared in declarations if declared == uri]
        if len(prefixes) != 1:
            return b""
        qname = f"{prefixes[0]}:{local}" if prefixes[0] else local
    else:
        qname = name
    out = (
        f"<{qname}"
        + "".join(
            f' xmlns{":" + prefix if prefix else ""}="{escape_attr(declared)}"'
            for prefix, declared in declarations
        )
        + ">"
    ).encode()
    if len(_PROLOGUES) < 64:
        _PROLOGUES[key] = out
    return out


# Expat's "uri local" names in Clark notation, shared by every parser (names seen often are
# the same few hundred everywhere); bounded, so hostile input cannot grow it for ever.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 16384
_BAD_NAMESPACE_CHARS = frozenset("{} \t\r\n")

_RESTRICTED_ERRORS = frozenset(
    {
        pyexpat.errors.codes[pyexpat.errors.XML_ERROR_UNDEFINED_ENTITY],
        pyexpat.errors.codes[pyexpat.errors.XML_ERROR_RECURSIVE_ENTITY_REF],
        pyexpat.errors.codes[pyexpat.errors.XML_ERROR_EXTERNAL_ENTITY_HANDLING],
        pyexpat.errors.codes[pyexpat.errors.XML_ERROR_ENTITY_DECLARED_IN_PE],
    }
)


def _expat_error(exc: pyexpat.ExpatError) -> ParseError:
    """Entity references other than the five predefined ones are restricted XML (RFC 6120
    §11.1); everything else expat refuses is not well-formed."""
    if exc.code in _RESTRICTED_ERRORS:
        return ParseError("restricted-xml", "entity references are not allowed")
    return ParseError("not-well-formed", str(exc))


def parse_element(text: str | bytes, max_size: int = 1 << 24) -> Element:
    """Parse one serialized element (as stored by the server) back into a tree.

    Unqualified top-level elements are read in ``jabber:client``.
    """
    data = text.encode() if isinstance(text, str) else text
    parser = StreamParser(max_size + 64, 256)
    for ev in parser.feed(b"<s xmlns='jabber:client'>" + data + b"</s>"):
        if isinstance(ev, Element):
            return ev
    raise ParseError("not-well-formed", "no element")
