"""Properties of JIDs (RFC 7622): parsing never raises anything but InvalidJID, a parsed JID
formats back to a string that parses to the same JID, preparation is idempotent, and two
spellings of one address compare equal."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from minimix.protocol.jid import JID, InvalidJID, prep_domain, prep_local, prep_resource, try_parse

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

local_chars = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\"&'/:<>@ ")
locals_ = st.text(local_chars, min_size=1, max_size=12)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domains = st.one_of(
    st.lists(labels, min_size=1, max_size=4).map(".".join),
    st.sampled_from(
        ["localhost", "Example.COM", "b\u00fccher.example", "[::1]", "xn--bcher-kva.example"]
    ),
)
resources = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
jid_like = st.builds(
    lambda lo, d, r: (f"{lo}@" if lo else "") + d + (f"/{r}" if r else ""),
    st.one_of(st.none(), locals_),
    domains,
    st.one_of(st.none(), resources),
)


@SETTINGS
@given(st.one_of(st.text(max_size=40), jid_like))
@example("a@b/c/d")
@example("@localhost")
@example("a@/r")
@example("x" * 5000)
@example("a@[::1]/r")
def test_try_parse_never_raises(text: str) -> None:
    j = try_parse(text)
    assert j is None or isinstance(j, JID)
    if j is None:
        with pytest.raises(InvalidJID):
            JID.parse(text)


@SETTINGS
@given(jid_like)
def test_format_then_parse_is_identity(text: str) -> None:
    j = try_parse(text)
    assume(j is not None)
    assert j is not None
    again = JID.parse(str(j))
    assert again == j
    assert str(again) == str(j)
    assert again.bare == j.bare and not j.bare.resource
    assert (j.local, j.domain) == (j.bare.local, j.bare.domain)
    if j.resource:
        assert j.bare.with_resource(j.resource) == j


@SETTINGS
@given(locals_, resources, domains)
def test_preparation_is_idempotent(local: str, resource: str, domain: str) -> None:
    for prep, value in ((prep_local, local), (prep_resource, resource), (prep_domain, domain)):
        try:
            once = prep(value)
        except InvalidJID:
            continue
        assert prep(once) == once


@SETTINGS
@given(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.lists(labels, min_size=1, max_size=3))
def test_case_spellings_are_one_account(local: str, labels_: list[str]) -> None:
    domain = ".".join(labels_)
    lower = JID.parse(f"{local}@{domain}")
    assert JID.parse(f"{local.upper()}@{domain.upper()}") == lower
    assert JID.parse(f"{local}@{domain}.") == lower  # the trailing dot of a domain is dropped


@SETTINGS
@given(st.text(min_size=1, max_size=30))
def test_resources_keep_their_case_and_any_slashes(resource: str) -> None:
    try:
        prepared = prep_resource(resource)
    except InvalidJID:
        return
    j = JID.parse(f"user@example.org/{prepared}")
    assert j.resource == prepared
    assert str(j).endswith("/" + prepared)


def test_over_long_parts_are_refused() -> None:
    assert try_parse("a" * 1024 + "@example.org") is None
    assert try_parse("user@" + ".".join(["a" * 63] * 17)) is None
    assert try_parse("user@example.org/" + "r" * 1024) is None
    assert try_parse("user@example.org/" + "r" * 1023) is not None


@given(st.text(min_size=1, max_size=12))
@settings(max_examples=50, deadline=None)
@example("not an ip")
def test_bracketed_domains_are_ipv6_addresses(inner: str) -> None:
    j = try_parse(f"user@[{inner}]")
    if j is not None:
        ipaddress.IPv6Address(j.domain[1:-1])
