"""JIDs per RFC 7622: the examples of §3.5, preparation, limits, and the bare/full helpers."""

from __future__ import annotations

import pytest

from minimix.protocol.jid import JID, InvalidJID, prep_domain, try_parse

VALID = [
    # RFC 7622 §3.5.1 examples (as prepared).
    ("juliet@example.com", "juliet@example.com"),
    ("juliet@example.com/foo", "juliet@example.com/foo"),
    ("juliet@example.com/foo bar", "juliet@example.com/foo bar"),
    ("juliet@example.com/foo@bar", "juliet@example.com/foo@bar"),
    ("foo\\20bar@example.com", "foo\\20bar@example.com"),
    ("fussball@example.com", "fussball@example.com"),
    ("fu\u00dfball@example.com", "fu\u00dfball@example.com"),
    ("\u03c0@example.com", "\u03c0@example.com"),
    ("\u03a3@example.com/foo", "\u03c3@example.com/foo"),
    ("\u03c3@example.com/foo", "\u03c3@example.com/foo"),
    ("\u03c2@example.com/foo", "\u03c2@example.com/foo"),
    ("king@example.com/\u265a", "king@example.com/\u265a"),
    ("example.com", "example.com"),
    ("example.com/foobar", "example.com/foobar"),
    ("a.example.com/b@example.net", "a.example.com/b@example.net"),
    # Case mapping of local and domain parts; resources keep their case.
    ("Juliet@Example.COM/Balcony", "juliet@example.com/Balcony"),
    # A trailing dot on the domain is removed (RFC 7622 §3.2).
    ("juliet@example.com.", "juliet@example.com"),
    # Internationalized domains (IDNA2008 with UTS #46 mapping).
    ("juliet@\u00c9xample.com", "juliet@\u00e9xample.com"),
    ("user@xn--bcher-kva.example", "user@b\u00fccher.example"),
    # IP literals.
    ("user@[::1]", "user@[::1]"),
    ("user@127.0.0.1", "user@127.0.0.1"),
]

INVALID = [
    # RFC 7622 §3.5.2 examples.
    '"juliet"@example.com',
    "foo bar@example.com",
    "henry\u2163@example.com",
    "\u265a@example.com",
    "@example.com",
    "juliet@",
    "juliet@example.com/",
    "/foobar",
    "node@/server",
    # Structure and length.
    "",
    "a@b@c",
    "a@example..com",
    "a@-example.com",
    "a@exa mple.com",
    "x" * 1024 + "@example.com",
    "a@example.com/" + "r" * 1024,
    "a@" + "d" * 64 + ".com",
    "a@example.com/\u0007",
    "a@example.com/tab\there",
]


@pytest.mark.parametrize(("text", "prepared"), VALID)
def test_valid(text: str, prepared: str) -> None:
    jid = JID.parse(text)
    assert str(jid) == prepared
    # Preparation is idempotent.
    assert JID.parse(prepared) == jid


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidJID):
        JID.parse(text)
    assert try_parse(text) is None


def test_parts_and_helpers() -> None:
    full = JID.parse("romeo@montague.lit/orchard")
    assert (full.local, full.domain, full.resource) == ("romeo", "montague.lit", "orchard")
    assert full.is_full and not full.is_bare and not full.is_domain
    bare = full.bare
    assert str(bare) == "romeo@montague.lit" and bare.is_bare
    assert bare.bare is bare
    assert bare.with_resource("garden") == JID.parse("romeo@montague.lit/garden")
    domain = JID.parse("montague.lit")
    assert domain.is_domain and domain.bare is domain
    assert JID.make("Romeo", "Montague.LIT", "Orchard") == JID("romeo", "montague.lit", "Orchard")
    assert JID.make(None, "montague.lit") == domain
    assert repr(full) == "JID('romeo@montague.lit/orchard')"
    assert try_parse(None) is None


def test_equal_after_preparation_and_hashable() -> None:
    a = JID.parse("ROMEO@Montague.lit")
    b = JID.parse("romeo@montague.lit")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


def test_resource_may_contain_slashes() -> None:
    jid = JID.parse("a@example.com/b/c")
    assert jid.resource == "b/c"


def test_domain_labels_and_length() -> None:
    assert prep_domain("A" * 63 + ".example") == "a" * 63 + ".example"
    with pytest.raises(InvalidJID):
        prep_domain("a" * 64 + ".example")
    with pytest.raises(InvalidJID):
        prep_domain(".")
