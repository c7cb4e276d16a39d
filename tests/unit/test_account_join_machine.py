"""The account-join state machine, stanzas in and actions out: every row of the specification's
client -> server (§2) and room -> account (§3) tables, the policy of §0, and the races."""

from __future__ import annotations

import math

import pytest

from minimix.extensions.account_join import machine as m
from minimix.extensions.account_join.machine import Phase
from minimix.protocol.xml import Element
from tests.unit.account_join_helpers import (
    ACCOUNT,
    MUC,
    NOW,
    ROOM,
    USER,
    A,
    B,
    C,
    bring_to_joined,
    codes_of,
    error_presence,
    groupchat,
    join,
    kinds_for,
    make_occupancy,
    occupant,
    self_presence,
    subject,
    text,
    timers,
    to_client,
    to_room,
    x,
)

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
PING = "<ping xmlns='urn:xmpp:ping'/>"


def condition(el: Element) -> str | None:
    err = el.find("{jabber:client}error")
    if err is None:
        return None
    for c in err:
        if c.tag.startswith(f"{{{STANZAS}}}") and not c.tag.endswith("}text"):
            return c.tag.split("}", 1)[1]
    return None


# =========================================================================== §2 client -> server


class TestJoinWhenIdle:
    def test_first_client_makes_the_account_join_once_from_the_bare_jid(self) -> None:
        occ = make_occupancy()
        acts = occ.client_join(A, join(A, inner="<password>pw</password>"))
        sent = to_room(acts)
        assert len(sent) == 1
        p = sent[0]
        assert p.get("from") == str(ACCOUNT)
        assert p.get("to") == f"{ROOM}/alice"
        assert p.find(f"{{{MUC}}}x/{{{MUC}}}password").text == "pw"  # type: ignore[union-attr]
        assert occ.phase is Phase.JOINING
        assert A in occ.pending
        assert "join" in timers(acts)

    def test_bookmark_password_is_used_when_the_client_gives_none(self) -> None:
        occ = make_occupancy()
        occ.password = "from-bookmark"
        p = to_room(occ.client_join(A, join(A)))[0]
        assert p.findtext(f"{{{MUC}}}x/{{{MUC}}}password") == "from-bookmark"

    def test_history_since_last_archived_message(self) -> None:
        occ = make_occupancy()
        occ.last_stamp = 1_600_000_000.0
        p = to_room(occ.client_join(A, join(A, inner="<history maxstanzas='5'/>")))[0]
        h = p.find(f"{{{MUC}}}x/{{{MUC}}}history")
        assert h is not None and h.get("since") == "2020-09-13T12:26:40Z"
        assert h.get("maxstanzas") is None

    def test_room_default_history_when_nothing_is_archived(self) -> None:
        occ = make_occupancy()
        p = to_room(occ.client_join(A, join(A, inner="<history maxstanzas='5'/>")))[0]
        assert p.find(f"{{{MUC}}}x/{{{MUC}}}history") is None

    def test_more_history_when_the_first_client_asks_for_more(self) -> None:
        occ = make_occupancy()
        p = to_room(occ.client_join(A, join(A, inner="<history maxstanzas='500'/>")))[0]
        h = p.find(f"{{{MUC}}}x/{{{MUC}}}history")
        assert h is not None and h.get("maxstanzas") == "500"

    def test_join_carries_the_clients_availability(self) -> None:
        occ = make_occupancy()
        p = to_room(occ.client_join(A, join(A, extra="<show>dnd</show><status>busy</status>")))[0]
        assert p.findtext("{jabber:client}show") == "dnd"
        assert p.findtext("{jabber:client}status") == "busy"

    def test_join_without_nick_is_jid_malformed(self) -> None:
        occ = make_occupancy()
        bad = x(f"<presence from='{A}' to='{ROOM}' id='n'><x xmlns='{MUC}'/></presence>")
        acts = occ.client_join(A, bad)
        assert to_room(acts) == []
        (reply,) = to_client(acts, A)
        assert reply.get("type") == "error" and condition(reply) == "jid-malformed"


class TestJoinWhileJoining:
    def test_second_client_waits_for_the_join_in_flight(self) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A))
        acts = occ.client_join(B, join(B, id_="jb"))
        assert to_room(acts) == []
        assert set(occ.pending) == {A, B}


class TestSelfPresenceFirstTime:
    def test_every_pending_client_gets_its_own_full_sequence(self) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A, id_="ja", inner="<history maxstanzas='3'/>"))
        occ.client_join(B, join(B, id_="jb", inner="<history maxchars='0'/>"))
        acts = occ.room_presence(occupant("bob"))
        acts += occ.room_presence(self_presence(codes=(110, 201), id_=occ.join_id))
        acts += occ.room_message(subject())
        assert occ.phase is Phase.JOINED
        assert occ.pending == {}
        assert set(occ.joined) == {A, B}
        assert kinds_for(acts, A) == ["occupant:bob", "self", "history", "subject"]
        assert kinds_for(acts, B) == ["occupant:bob", "self", "subject"]  # maxchars=0
        self_a = next(p for p in to_client(acts, A) if 110 in codes_of(p))
        self_b = next(p for p in to_client(acts, B) if 110 in codes_of(p))
        assert self_a.get("id") == "ja" and self_b.get("id") == "jb"
        assert self_a.get("to") == str(A) and self_b.get("to") == str(B)
        # The creator (the client whose join made the account join) gets 201; the other not.
        assert 201 in codes_of(self_a)
        assert 201 not in codes_of(self_b)
        hist = [a for a in acts if isinstance(a, m.SendHistory)]
        assert hist == [m.SendHistory(A, m.HistoryRequest(maxstanzas=3))]

    def test_a_room_created_with_no_client_waiting_is_made_an_instant_room(self) -> None:
        occ = make_occupancy()
        occ.bookmark_set(True, None, None)
        occ.room_presence(self_presence(codes=(110, 201)))
        acts = occ.room_message(subject())
        (iq,) = to_room(acts)
        assert iq.get("type") == "set" and iq.get("to") == str(ROOM)
        assert iq.get("from") == str(ACCOUNT)
        form = iq.find("{http://jabber.org/protocol/muc#owner}query/{jabber:x:data}x")
        assert form is not None and form.get("type") == "submit"

    def test_the_creating_client_configures_the_room_itself(self) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A))
        occ.room_presence(self_presence(codes=(110, 201)))
        assert to_room(occ.room_message(subject())) == []

    def test_history_from_the_room_is_archived_before_any_client_is_served(self) -> None:
        occ = make_occupancy()
        acts = bring_to_joined(occ)
        archive_at = next(i for i, a in enumerate(acts) if isinstance(a, m.ArchiveGroupchat))
        history_at = next(i for i, a in enumerate(acts) if isinstance(a, m.SendHistory))
        assert archive_at < history_at
        stored = acts[archive_at]
        assert isinstance(stored, m.ArchiveGroupchat)
        assert stored.clients == ()  # history is served per client from the archive
        assert stored.room_stanza_id == "r1"

    def test_settle_timeout_finishes_a_join_whose_subject_never_comes(self) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A))
        acts = occ.room_presence(self_presence())
        assert "settle" in timers(acts)
        acts = occ.timer_fired(m.SETTLE)
        assert occ.phase is Phase.JOINED
        assert kinds_for(acts, A) == ["self", "history", "subject"]

    def test_persisted_once_joined(self) -> None:
        occ = make_occupancy()
        acts = bring_to_joined(occ)
        persisted = [a.membership for a in acts if isinstance(a, m.Persist)]
        assert persisted and persisted[-1].nick == "alice" and persisted[-1].clients == (str(A),)


class TestJoinWhenJoined:
    def test_answered_from_state_in_xep0045_order_and_nothing_to_the_room(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.room_presence(occupant("carol"))
        acts = occ.client_join(B, join(B, id_="jb", inner="<history maxstanzas='7'/>"))
        assert to_room(acts) == []
        assert kinds_for(acts, B) == [
            "occupant:bob",
            "occupant:carol",
            "self",
            "history",
            "subject",
        ]
        sent = to_client(acts, B)
        assert all(p.get("to") == str(B) for p in sent)
        me = sent[2]
        assert me.get("id") == "jb"
        assert me.get("from") == f"{ROOM}/alice"
        assert codes_of(me) == {110, 100, 170}  # cached 100/170, never 201
        assert [a for a in acts if isinstance(a, m.SendHistory)] == [
            m.SendHistory(B, m.HistoryRequest(maxstanzas=7))
        ]
        assert sent[3].findtext("{jabber:client}subject") == "Welcome"
        assert B in occ.joined

    def test_a_different_nick_gets_the_accounts_nick_with_210(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.client_join(B, join(B, nick="laptop-alice", id_="jb"))
        me = next(p for p in to_client(acts, B) if 110 in codes_of(p))
        assert me.get("from") == f"{ROOM}/alice"
        assert 210 in codes_of(me)
        assert to_room(acts) == []

    def test_a_rejoin_by_an_attached_client_is_a_full_resynchronisation(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.client_join(A, join(A, id_="again"))
        assert kinds_for(acts, A) == ["occupant:bob", "self", "history", "subject"]
        assert to_room(acts) == []

    def test_no_history_element_gets_the_default_amount(self) -> None:
        occ = make_occupancy(default_history=20)
        bring_to_joined(occ)
        acts = occ.client_join(B, join(B))
        assert [a for a in acts if isinstance(a, m.SendHistory)] == [
            m.SendHistory(B, m.HistoryRequest(maxstanzas=20))
        ]


class TestJoinErrors:
    @pytest.mark.parametrize(
        "cond",
        [
            "conflict",
            "not-authorized",
            "registration-required",
            "forbidden",
            "item-not-found",
            "service-unavailable",
            "not-allowed",
            "not-acceptable",
            "jid-malformed",
        ],
    )
    def test_each_waiting_client_gets_the_error_with_its_id(self, cond: str) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A, id_="ja"))
        occ.client_join(B, join(B, nick="bee", id_="jb"))
        acts = occ.room_presence(error_presence("alice", cond, id_=occ.join_id))
        (ea,) = to_client(acts, A)
        (eb,) = to_client(acts, B)
        assert ea.get("type") == "error" and condition(ea) == cond and ea.get("id") == "ja"
        assert eb.get("type") == "error" and condition(eb) == cond and eb.get("id") == "jb"
        assert ea.get("from") == f"{ROOM}/alice"
        assert eb.get("from") == f"{ROOM}/bee"
        assert ea.find(f"{{{MUC}}}x") is not None
        assert occ.phase is Phase.IDLE and occ.pending == {}
        assert occ.disposable

    def test_no_answer_at_all_fails_the_waiting_clients(self) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A, id_="ja"))
        acts = occ.timer_fired(m.JOIN_TIMEOUT)
        (ea,) = to_client(acts, A)
        assert condition(ea) == "remote-server-timeout"
        assert occ.phase is Phase.IDLE


class TestAvailability:
    def test_presence_to_the_account_nick_changes_the_aggregate(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.client_presence_to_room(
            A, x(f"<presence from='{A}' to='{ROOM}/alice'><show>away</show></presence>")
        )
        (p,) = to_room(acts)
        assert p.get("from") == str(ACCOUNT) and p.findtext("{jabber:client}show") == "away"
        # The same again is not a change: nothing is sent.
        acts = occ.client_presence_to_room(
            A, x(f"<presence from='{A}' to='{ROOM}/alice'><show>away</show></presence>")
        )
        assert to_room(acts) == []

    def test_the_most_available_client_wins_with_its_status(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B, extra="<show>xa</show><status>asleep</status>"))
        acts = occ.client_presence_to_room(
            A, x(f"<presence to='{ROOM}/alice'><show>dnd</show><status>meeting</status></presence>")
        )
        (p,) = to_room(acts)
        assert p.findtext("{jabber:client}show") == "dnd"
        assert p.findtext("{jabber:client}status") == "meeting"
        acts = occ.client_presence_to_room(
            B, x(f"<presence to='{ROOM}/alice'><show>chat</show><status>here</status></presence>")
        )
        (p,) = to_room(acts)
        assert p.findtext("{jabber:client}show") == "chat"
        assert p.findtext("{jabber:client}status") == "here"

    def test_presence_from_a_client_that_is_not_attached_is_item_not_found(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.client_presence_to_room(C, x(f"<presence to='{ROOM}/alice' id='p1'/>"))
        assert to_room(acts) == []
        (err,) = to_client(acts, C)
        assert condition(err) == "item-not-found" and err.get("id") == "p1"

    def test_broadcast_presence_updates_the_aggregate(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.client_broadcast(A, x("<presence><show>xa</show></presence>"))
        (p,) = to_room(acts)
        assert p.findtext("{jabber:client}show") == "xa" and p.get("type") is None


class TestNickChange:
    def test_nick_change_goes_from_the_bare_jid_and_reaches_every_client(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        acts = occ.client_presence_to_room(A, x(f"<presence to='{ROOM}/alicia' id='n1'/>"))
        (p,) = to_room(acts)
        assert p.get("from") == str(ACCOUNT) and p.get("to") == f"{ROOM}/alicia"
        acts = occ.room_presence(
            occupant(
                "alice", (110, 303), aff="owner", type_="unavailable", item_extra=" nick='alicia'"
            )
        )
        acts += occ.room_presence(occupant("alicia", (110,), aff="owner"))
        assert occ.nick == "alicia"
        for client in (A, B):
            got = to_client(acts, client)
            assert [g.get("type") for g in got] == ["unavailable", None]
            assert 303 in codes_of(got[0]) and 110 in codes_of(got[0])
            assert 110 in codes_of(got[1])
        assert any(isinstance(a, m.Persist) and a.membership.nick == "alicia" for a in acts)

    @pytest.mark.parametrize("cond", ["conflict", "not-acceptable"])
    def test_a_refused_nick_goes_back_only_to_the_client_that_asked(self, cond: str) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        occ.client_presence_to_room(A, x(f"<presence to='{ROOM}/bob' id='n1'/>"))
        acts = occ.room_presence(error_presence("bob", cond))
        assert to_client(acts, B) == []
        (err,) = to_client(acts, A)
        assert condition(err) == cond and err.get("id") == "n1"
        assert err.get("from") == f"{ROOM}/bob"
        assert occ.nick == "alice" and occ.phase is Phase.JOINED


class TestClientLeaves:
    def test_only_that_client_detaches_and_the_room_is_not_told(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        acts = occ.client_leave(A, x(f"<presence to='{ROOM}/alice' type='unavailable' id='l1'/>"))
        assert to_room(acts) == []
        (u,) = to_client(acts, A)
        assert u.get("type") == "unavailable" and u.get("id") == "l1"
        assert codes_of(u) == {110}
        item = u.find(f"{{{USER}}}x/{{{USER}}}item")
        assert (
            item is not None and item.get("role") == "none" and item.get("affiliation") == "owner"
        )
        assert set(occ.joined) == {B}
        # B keeps receiving.
        acts = occ.room_message(groupchat("bob", "still here", "r9"))
        assert len(to_client(acts, B)) == 1 and to_client(acts, A) == []

    def test_last_explicit_leave_without_autojoin_makes_the_account_leave(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.client_leave(A, x(f"<presence to='{ROOM}/alice' type='unavailable'/>"))
        (p,) = to_room(acts)
        assert p.get("type") == "unavailable" and p.get("from") == str(ACCOUNT)
        assert occ.phase is Phase.LEAVING
        assert any(isinstance(a, m.Forget) for a in acts)
        acts = occ.room_presence(occupant("alice", (110,), aff="owner", type_="unavailable"))
        assert occ.phase is Phase.IDLE and occ.disposable
        assert to_client(acts, A) == []

    def test_last_explicit_leave_with_an_autojoin_bookmark_stays(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.bookmark_set(True, None, None)
        acts = occ.client_leave(A, x(f"<presence to='{ROOM}/alice' type='unavailable'/>"))
        assert to_room(acts) == []
        assert occ.phase is Phase.JOINED and occ.joined == {}


class TestDisconnect:
    def test_session_end_detaches_silently(self) -> None:
        occ = make_occupancy(linger=60)
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        acts = occ.client_gone(A)
        assert to_room(acts) == []
        assert to_client(acts, A) == []
        assert set(occ.joined) == {B}

    def test_broadcast_unavailable_is_never_a_per_client_unavailable_to_the_room(self) -> None:
        occ = make_occupancy(linger=60)
        bring_to_joined(occ)
        acts = occ.client_broadcast(A, x("<presence type='unavailable'/>"))
        assert to_room(acts) == []
        assert occ.phase is Phase.JOINED and occ.joined == {}
        assert timers(acts) == {"linger": 60}

    def test_the_account_stays_for_the_linger_time_then_leaves(self) -> None:
        occ = make_occupancy(linger=30)
        bring_to_joined(occ)
        acts = occ.client_gone(A)
        assert timers(acts) == {"linger": 30}
        acts = occ.timer_fired(m.LINGER)
        (p,) = to_room(acts)
        assert p.get("type") == "unavailable"

    def test_a_client_coming_back_cancels_the_linger(self) -> None:
        occ = make_occupancy(linger=30)
        bring_to_joined(occ)
        occ.client_gone(A)
        acts = occ.client_join(A, join(A))
        assert m.CancelTimer(m.LINGER) in acts
        assert to_room(occ.timer_fired(m.LINGER)) == []

    def test_linger_zero_leaves_at_once_and_forever_never(self) -> None:
        occ = make_occupancy(linger=0)
        bring_to_joined(occ)
        acts = occ.client_gone(A)
        assert [p.get("type") for p in to_room(acts)] == ["unavailable"]
        occ = make_occupancy(linger=math.inf)
        bring_to_joined(occ)
        acts = occ.client_gone(A)
        assert to_room(acts) == [] and timers(acts) == {}

    def test_autojoin_bookmark_keeps_the_account_without_clients(self) -> None:
        occ = make_occupancy(linger=30)
        bring_to_joined(occ)
        occ.bookmark_set(True, None, None)
        acts = occ.client_gone(A)
        assert timers(acts) == {} and to_room(acts) == []


class TestClientMessages:
    def test_groupchat_is_sent_as_the_account_keeping_id_and_origin_id(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        msg = x(
            f"<message from='{A}' to='{ROOM}' type='groupchat' id='g1'><body>hi</body>"
            "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>"
        )
        acts = occ.client_message(A, msg)
        assert acts is not None
        (out,) = to_room(acts)
        assert out.get("from") == str(ACCOUNT) and out.get("id") == "g1"
        assert out.find("{urn:xmpp:sid:0}origin-id").get("id") == "o1"  # type: ignore[union-attr]
        assert msg.get("from") == str(A)  # the client's stanza itself is not edited

    def test_groupchat_from_a_client_that_is_not_attached_is_not_acceptable(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.client_message(
            C, x(f"<message to='{ROOM}' type='groupchat' id='g2'><body>x</body></message>")
        )
        assert acts is not None and to_room(acts) == []
        (err,) = to_client(acts, C)
        assert condition(err) == "not-acceptable" and err.get("id") == "g2"

    def test_groupchat_while_the_account_is_not_joined_is_not_acceptable(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.room_presence(occupant("alice", (110, 333), aff="owner", type_="unavailable"))
        acts = occ.client_message(
            A, x(f"<message to='{ROOM}' type='groupchat' id='g3'><body>x</body></message>")
        )
        assert acts is not None and to_room(acts) == []
        assert condition(to_client(acts, A)[0]) == "not-acceptable"

    def test_other_messages_to_the_room_go_as_the_account(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        invite = x(
            f"<message to='{ROOM}'><x xmlns='{USER}'><invite to='dave@localhost'/></x></message>"
        )
        acts = occ.client_message(A, invite)
        assert acts is not None
        (out,) = to_room(acts)
        assert out.get("from") == str(ACCOUNT)

    def test_private_message_is_sent_as_the_account_carboned_and_archived(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        pm = x(
            f"<message from='{A}' to='{ROOM}/bob' type='chat' id='p1'><body>psst</body></message>"
        )
        acts = occ.client_message(A, pm)
        assert acts is not None
        (out,) = to_room(acts)
        assert out.get("from") == str(ACCOUNT) and out.get("to") == f"{ROOM}/bob"
        assert to_client(acts, A) == []
        (sent,) = [a for a in acts if isinstance(a, m.SentPrivate)]
        assert sent.client == A and sent.others == (B,)  # archived once, carbon-copied to B
        assert sent.stanza is pm and str(sent.occupant) == f"{ROOM}/bob"

    def test_messages_from_a_client_that_is_not_attached_pass_through(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        pm = x(f"<message to='{ROOM}/bob' type='chat'><body>x</body></message>")
        assert occ.client_message(C, pm) is None


class TestClientIqs:
    def test_self_ping_from_an_attached_client_is_answered_locally(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        ping = x(f"<iq from='{A}' to='{ROOM}/alice' type='get' id='sp'>{PING}</iq>")
        acts = occ.client_iq(A, ping)
        assert acts is not None and to_room(acts) == []
        (r,) = to_client(acts, A)
        assert (
            r.get("type") == "result" and r.get("id") == "sp" and r.get("from") == f"{ROOM}/alice"
        )

    def test_self_ping_from_a_client_that_is_not_attached_is_not_acceptable(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        ping = x(f"<iq from='{C}' to='{ROOM}/alice' type='get' id='sp'>{PING}</iq>")
        acts = occ.client_iq(C, ping)
        assert acts is not None and to_room(acts) == []
        (r,) = to_client(acts, C)
        assert r.get("type") == "error" and condition(r) == "not-acceptable"
        assert r.find("{jabber:client}error").get("by") == str(ROOM)  # type: ignore[union-attr]

    def test_self_ping_during_a_rejoin_is_held_until_joined(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.room_presence(occupant("alice", (110, 333), aff="owner", type_="unavailable"))
        ping = x(f"<iq from='{A}' to='{ROOM}/alice' type='get' id='sp'>{PING}</iq>")
        assert occ.client_iq(A, ping) == []
        occ.timer_fired(m.REJOIN)
        occ.room_presence(self_presence())
        acts = occ.room_message(subject())
        (r,) = [s for s in to_client(acts, A) if s.tag == "{jabber:client}iq"]
        assert r.get("type") == "result" and r.get("id") == "sp"

    def test_ping_to_the_old_nick_after_a_nick_change_is_item_not_found(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_presence_to_room(A, x(f"<presence to='{ROOM}/alicia'/>"))
        occ.room_presence(
            occupant(
                "alice", (110, 303), aff="owner", type_="unavailable", item_extra=" nick='alicia'"
            )
        )
        occ.room_presence(occupant("alicia", (110,), aff="owner"))
        ping = x(f"<iq to='{ROOM}/alice' type='get' id='sp'>{PING}</iq>")
        acts = occ.client_iq(A, ping)
        assert acts is not None
        assert condition(to_client(acts, A)[0]) == "item-not-found"

    def test_iq_to_an_occupant_is_proxied_and_the_answer_returns_to_the_asker(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        q = x(f"<iq from='{B}' to='{ROOM}/bob' type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>")
        acts = occ.client_iq(B, q)
        assert acts is not None
        (out,) = to_room(acts)
        assert out.get("from") == str(ACCOUNT) and out.get("id") != "v1"
        answer = x(
            f"<iq from='{ROOM}/bob' to='{ACCOUNT}' type='result' id='{out.get('id')}'>"
            "<vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>"
        )
        acts = occ.room_iq(answer)
        assert acts is not None
        assert to_client(acts, A) == []
        (r,) = to_client(acts, B)
        assert r.get("id") == "v1" and r.get("to") == str(B)

    def test_iq_to_the_room_itself_passes_through(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        q = x(
            f"<iq to='{ROOM}' type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
        assert occ.client_iq(A, q) is None


# =========================================================================== §3 room -> account


class TestOccupantPresence:
    def test_occupant_presences_update_state_and_reach_every_attached_client(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        acts = occ.room_presence(occupant("carol"))
        assert "carol" in occ.occupants
        (fan,) = [a for a in acts if isinstance(a, m.FanOut)]
        assert set(fan.clients) == {A, B}
        acts = occ.room_presence(occupant("carol", type_="unavailable"))
        assert "carol" not in occ.occupants
        assert [a.stanza.get("type") for a in acts if isinstance(a, m.FanOut)] == ["unavailable"]

    def test_occupant_nick_change_303(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.room_presence(
            occupant("bob", (303,), type_="unavailable", item_extra=" nick='robert'")
        )
        acts += occ.room_presence(occupant("robert"))
        assert "bob" not in occ.occupants and "robert" in occ.occupants
        assert len(to_client(acts, A)) == 2

    def test_clients_of_the_account_that_did_not_join_see_nothing(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.room_presence(occupant("carol"))
        acts += occ.room_message(groupchat("carol", "hi", "r5"))
        assert to_client(acts, C) == []


class TestSelfPresenceUpdates:
    def test_role_change_updates_self_presence_and_is_fanned_out(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.room_presence(self_presence(role="visitor"))
        assert occ.self_presence is not None
        assert occ.self_presence.find(f"{{{USER}}}x/{{{USER}}}item").get("role") == "visitor"  # type: ignore[union-attr]
        assert len(to_client(acts, A)) == 1

    def test_self_unavailable_303_updates_the_nick(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.room_presence(
            occupant("alice", (110, 303), aff="owner", type_="unavailable", item_extra=" nick='al'")
        )
        assert occ.nick == "al"
        assert len(to_client(acts, A)) == 1


class TestRemoval:
    @pytest.mark.parametrize("code", [307, 301, 321, 322])
    def test_removal_tells_attached_and_waiting_clients_and_never_rejoins(self, code: int) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        acts = occ.room_presence(occupant("alice", (110, code), aff="owner", type_="unavailable"))
        for client in (A, B):
            (u,) = to_client(acts, client)
            assert code in codes_of(u) and 110 in codes_of(u)
        assert occ.phase is Phase.IDLE and occ.joined == {} and occ.pending == {}
        assert any(isinstance(a, m.Forget) for a in acts)
        assert "rejoin" not in timers(acts)
        assert to_room(acts) == []

    def test_destruction_is_a_removal(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        destroyed = occupant(
            "alice",
            (110,),
            aff="none",
            type_="unavailable",
            x_extra="<destroy jid='new@conference.localhost'><reason>moved</reason></destroy>",
        )
        acts = occ.room_presence(destroyed)
        (u,) = to_client(acts, A)
        assert u.find(f"{{{USER}}}x/{{{USER}}}destroy") is not None
        assert occ.phase is Phase.IDLE
        assert "rejoin" not in timers(acts)

    def test_a_join_after_a_kick_is_a_real_room_join(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.room_presence(occupant("alice", (110, 307), aff="owner", type_="unavailable"))
        acts = occ.client_join(A, join(A))
        assert len(to_room(acts)) == 1 and occ.phase is Phase.JOINING

    @pytest.mark.parametrize("code", [332, 333])
    def test_shutdown_and_error_kicks_rejoin_transparently_with_backoff(self, code: int) -> None:
        occ = make_occupancy(backoff_first=2)
        bring_to_joined(occ)
        acts = occ.room_presence(occupant("alice", (110, code), aff="owner", type_="unavailable"))
        assert to_client(acts, A) == []  # transparent
        assert timers(acts)["rejoin"] == 2
        assert occ.phase is Phase.JOINING and A in occ.joined
        acts = occ.timer_fired(m.REJOIN)
        (p,) = to_room(acts)
        assert p.find(f"{{{MUC}}}x") is not None and p.get("from") == str(ACCOUNT)
        occ.room_presence(occupant("bob"))
        occ.room_presence(self_presence())
        acts = occ.room_message(subject())
        assert occ.phase is Phase.JOINED and A in occ.joined
        assert to_client(acts, A) == []  # nothing changed meanwhile: nothing to tell

    def test_333_takes_precedence_over_307(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.room_presence(
            occupant("alice", (110, 307, 333), aff="owner", type_="unavailable")
        )
        assert "rejoin" in timers(acts)

    def test_333_without_clients_or_autojoin_does_not_rejoin(self) -> None:
        occ = make_occupancy(linger=60)
        bring_to_joined(occ)
        occ.client_gone(A)
        acts = occ.room_presence(occupant("alice", (110, 333), aff="owner", type_="unavailable"))
        assert "rejoin" not in timers(acts) and occ.phase is Phase.IDLE

    def test_failed_rejoins_end_with_110_333_to_the_clients(self) -> None:
        occ = make_occupancy(quiet_attempts=2)
        bring_to_joined(occ)
        occ.room_presence(occupant("alice", (110, 332), aff="owner", type_="unavailable"))
        occ.timer_fired(m.REJOIN)
        acts = occ.room_presence(error_presence("alice", "service-unavailable", "wait"))
        assert to_client(acts, A) == [] and "rejoin" in timers(acts)
        occ.timer_fired(m.REJOIN)
        acts = occ.room_presence(error_presence("alice", "service-unavailable", "wait"))
        (u,) = to_client(acts, A)
        assert codes_of(u) == {110, 333} and u.get("type") == "unavailable"
        assert occ.joined == {} and occ.phase is Phase.IDLE

    def test_after_a_rejoin_clients_learn_only_what_changed(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.room_presence(occupant("carol"))
        occ.room_presence(occupant("alice", (110, 333), aff="owner", type_="unavailable"))
        occ.timer_fired(m.REJOIN)
        occ.room_presence(occupant("bob"))
        occ.room_presence(occupant("dave"))
        occ.room_presence(self_presence())
        acts = occ.room_message(
            groupchat("dave", "while you were out", "r7", delay="2023-11-14T22:30:00Z")
        )
        acts += occ.room_message(subject())
        got = to_client(acts, A)
        kinds = [(g.tag.split("}")[1], g.get("from"), g.get("type")) for g in got]
        assert ("presence", f"{ROOM}/carol", "unavailable") in kinds
        assert ("presence", f"{ROOM}/dave", None) in kinds
        assert ("message", f"{ROOM}/dave", "groupchat") in kinds  # the missed message
        assert not any(k[1] == f"{ROOM}/bob" for k in kinds)


class TestRoomMessages:
    def test_groupchat_is_archived_once_with_both_stanza_ids_and_fanned_out(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        spoof = f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ACCOUNT}' id='forged'/>"
        acts = occ.room_message(groupchat("bob", "hello", "r2", extra=spoof))
        (arch,) = [a for a in acts if isinstance(a, m.ArchiveGroupchat)]
        assert set(arch.clients) == {A, B}
        assert arch.room_stanza_id == "r2"
        ids = {(s.get("by"), s.get("id")) for s in arch.stanza.findall("{urn:xmpp:sid:0}stanza-id")}
        assert ids == {(str(ROOM), "r2")}  # the spoofed by=account one is gone
        assert arch.stamp is None  # live: stamped on arrival
        assert occ.last_room_stanza_id == "r2"
        assert m.Progress("r2", NOW) in acts
        assert to_room(acts) == []

    def test_subject_is_cached_and_fanned_out(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.room_message(subject("New topic"))
        assert (
            occ.subject is not None
            and occ.subject.findtext("{jabber:client}subject") == "New topic"
        )
        assert len(to_client(acts, A)) == 1
        assert not any(isinstance(a, m.ArchiveGroupchat) for a in acts)

    def test_without_attached_clients_it_is_archived_and_delivered_to_nobody(self) -> None:
        occ = make_occupancy(linger=60)
        bring_to_joined(occ)
        occ.client_gone(A)
        acts = occ.room_message(groupchat("bob", "anyone?", "r3"))
        (arch,) = [a for a in acts if isinstance(a, m.ArchiveGroupchat)]
        assert arch.clients == ()
        assert to_room(acts) == []  # never bounced
        assert not any(isinstance(a, m.DeliverToAccount) for a in acts)

    def test_private_message_from_an_occupant_is_archived_once_and_fanned_out(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        pm = x(
            f"<message from='{ROOM}/bob' to='{ACCOUNT}' type='chat' id='pm1'><body>hey</body>"
            f"<x xmlns='{USER}'/></message>"
        )
        acts = occ.room_message(pm)
        (rp,) = [a for a in acts if isinstance(a, m.ReceivedPrivate)]
        assert set(rp.clients) == {A, B} and str(rp.occupant) == f"{ROOM}/bob"
        assert not any(isinstance(a, m.FanOut) for a in acts)

    def test_private_message_without_attached_clients_goes_to_the_account(self) -> None:
        occ = make_occupancy(linger=60)
        bring_to_joined(occ)
        occ.client_gone(A)
        pm = x(f"<message from='{ROOM}/bob' to='{ACCOUNT}' type='chat'><body>hey</body></message>")
        acts = occ.room_message(pm)
        (rp,) = [a for a in acts if isinstance(a, m.ReceivedPrivate)]
        assert rp.clients == ()  # the glue delivers it to the account (offline, push)

    def test_messages_from_the_room_itself_are_fanned_out(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        status = x(
            f"<message from='{ROOM}' to='{ACCOUNT}' type='groupchat'><x xmlns='{USER}'>"
            "<status code='104'/></x></message>"
        )
        acts = occ.room_message(status)
        assert len(to_client(acts, A)) == 1
        invite = x(
            f"<message from='{ROOM}' to='{ACCOUNT}'><x xmlns='{USER}'>"
            "<status code='101'/></x></message>"
        )
        acts = occ.room_message(invite)
        assert len(to_client(acts, A)) == 1

    def test_an_error_for_a_clients_message_returns_to_that_client(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        occ.client_message(
            B, x(f"<message to='{ROOM}' type='groupchat' id='g9'><body>x</body></message>")
        )
        err = x(
            f"<message from='{ROOM}' to='{ACCOUNT}' type='error' id='g9'>"
            f"<error type='auth'><forbidden xmlns='{STANZAS}'/></error></message>"
        )
        acts = occ.room_message(err)
        assert to_client(acts, A) == []
        assert condition(to_client(acts, B)[0]) == "forbidden"


class TestRoomIqs:
    def test_a_ping_from_the_room_is_answered_as_the_account(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        ping = x(f"<iq from='{ROOM}' to='{ACCOUNT}' type='get' id='rp'>{PING}</iq>")
        acts = occ.room_iq(ping)
        assert acts is not None
        (r,) = to_room(acts)
        assert (
            r.get("type") == "result" and r.get("to") == str(ROOM) and r.get("from") == str(ACCOUNT)
        )

    def test_other_iqs_are_left_to_the_servers_handlers(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        q = x(
            f"<iq from='{ROOM}/bob' to='{ACCOUNT}' type='get' id='v'>"
            "<vCard xmlns='vcard-temp'/></iq>"
        )
        assert occ.room_iq(q) is None


# =========================================================================== §0 / §7 lifecycle


class TestBookmarks:
    def test_autojoin_bookmark_joins_without_any_client(self) -> None:
        occ = make_occupancy()
        acts = occ.bookmark_set(True, "ali", "pw")
        (p,) = to_room(acts)
        assert p.get("to") == f"{ROOM}/ali" and p.get("from") == str(ACCOUNT)
        assert p.findtext(f"{{{MUC}}}x/{{{MUC}}}password") == "pw"
        occ.room_presence(self_presence("ali"))
        acts = occ.room_message(subject())
        assert occ.phase is Phase.JOINED
        assert timers(acts) == {}  # no linger: the bookmark keeps it

    def test_turning_autojoin_off_leaves_and_tells_the_clients(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.bookmark_set(True, None, None)
        acts = occ.bookmark_set(False, None, None)
        (p,) = to_room(acts)
        assert p.get("type") == "unavailable"
        (u,) = to_client(acts, A)
        assert codes_of(u) == {110} and u.get("type") == "unavailable"

    def test_retracting_an_autojoin_bookmark_leaves(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.bookmark_set(True, None, None)
        acts = occ.bookmark_removed()
        assert [p.get("type") for p in to_room(acts)] == ["unavailable"]
        assert len(to_client(acts, A)) == 1

    def test_a_bookmark_without_autojoin_does_not_pull_the_account_out(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.bookmark_set(False, None, None)
        assert to_room(acts) == []
        assert occ.phase is Phase.JOINED

    def test_a_bookmark_nick_differing_from_the_account_nick_changes_it(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.bookmark_set(True, "ally", None)
        (p,) = to_room(acts)
        assert p.get("to") == f"{ROOM}/ally"


class TestRestoreAndLiveness:
    def test_restore_rejoins_asking_for_the_gap(self) -> None:
        occ = make_occupancy()
        mem = m.Membership(
            str(ACCOUNT), str(ROOM), "alice", None, "client", False, "r1", 1_600_000_000.0
        )
        acts = occ.restore(mem)
        (p,) = to_room(acts)
        h = p.find(f"{{{MUC}}}x/{{{MUC}}}history")
        assert h is not None and h.get("since") is not None
        occ.room_presence(self_presence())
        occ.room_message(groupchat("bob", "missed", "r2", delay="2023-11-14T22:10:00Z"))
        acts = occ.room_message(subject())
        assert occ.phase is Phase.JOINED
        assert "linger" in timers(acts)  # nobody attached yet: the linger time runs

    def test_server_self_ping_success_changes_nothing(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        acts = occ.self_ping()
        (iq,) = to_room(acts)
        assert iq.get("from") == str(ACCOUNT) and iq.get("to") == f"{ROOM}/alice"
        res = x(f"<iq from='{ROOM}/alice' to='{ACCOUNT}' type='result' id='{iq.get('id')}'/>")
        acts = occ.room_iq(res)
        assert acts == [m.CancelTimer(m.PING_TIMEOUT)]
        assert occ.phase is Phase.JOINED

    def test_server_self_ping_not_acceptable_rejoins_transparently(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        (iq,) = to_room(occ.self_ping())
        err = x(
            f"<iq from='{ROOM}/alice' to='{ACCOUNT}' type='error' id='{iq.get('id')}'>"
            f"<error type='cancel'><not-acceptable xmlns='{STANZAS}'/></error></iq>"
        )
        acts = occ.room_iq(err)
        assert occ.phase is Phase.JOINING and A in occ.joined
        assert to_client(acts, A) == []
        assert to_room(occ.timer_fired(m.REJOIN))[0].find(f"{{{MUC}}}x") is not None

    def test_two_unanswered_self_pings_rejoin(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.self_ping()
        assert occ.timer_fired(m.PING_TIMEOUT) == []
        occ.self_ping()
        acts = occ.timer_fired(m.PING_TIMEOUT)
        assert "rejoin" in timers(acts)


# =========================================================================== races


class TestRaces:
    def test_two_clients_joining_at_once_make_one_room_join(self) -> None:
        occ = make_occupancy()
        first = occ.client_join(A, join(A, id_="ja"))
        second = occ.client_join(B, join(B, id_="jb"))
        assert len(to_room(first) + to_room(second)) == 1
        occ.room_presence(occupant("bob"))
        occ.room_presence(self_presence())
        acts = occ.room_message(subject())
        for client, cid in ((A, "ja"), (B, "jb")):
            assert kinds_for(acts, client) == ["occupant:bob", "self", "history", "subject"]
            me = next(p for p in to_client(acts, client) if 110 in codes_of(p))
            assert me.get("id") == cid

    def test_a_client_leaving_while_the_join_is_in_flight(self) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A, id_="ja"))
        acts = occ.client_leave(A, x(f"<presence to='{ROOM}/alice' type='unavailable' id='lv'/>"))
        (u,) = to_client(acts, A)
        assert u.get("type") == "unavailable" and u.get("id") == "lv"
        (p,) = to_room(acts)
        assert p.get("type") == "unavailable"  # nobody waits: the account does not stay
        # The room answers the join, then the leave: the client hears none of it.
        late = occ.room_presence(occupant("bob"))
        late += occ.room_presence(self_presence())
        late += occ.room_message(subject())
        late += occ.room_presence(occupant("alice", (110,), aff="owner", type_="unavailable"))
        assert to_client(late, A) == []
        assert occ.phase is Phase.IDLE

    def test_one_of_two_waiting_clients_leaving_keeps_the_join_for_the_other(self) -> None:
        occ = make_occupancy()
        occ.client_join(A, join(A, id_="ja"))
        occ.client_join(B, join(B, id_="jb"))
        acts = occ.client_leave(A, x(f"<presence to='{ROOM}/alice' type='unavailable'/>"))
        assert to_room(acts) == []
        occ.room_presence(self_presence())
        acts = occ.room_message(subject())
        assert set(occ.joined) == {B}
        assert kinds_for(acts, A) == []

    def test_a_client_joining_while_the_account_leaves_triggers_a_new_join(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_leave(A, x(f"<presence to='{ROOM}/alice' type='unavailable'/>"))
        assert occ.phase is Phase.LEAVING
        acts = occ.client_join(B, join(B, id_="jb"))
        assert to_room(acts) == []
        acts = occ.room_presence(occupant("alice", (110,), aff="owner", type_="unavailable"))
        (p,) = to_room(acts)
        assert p.find(f"{{{MUC}}}x") is not None
        occ.room_presence(self_presence())
        acts = occ.room_message(subject())
        assert set(occ.joined) == {B}
        assert kinds_for(acts, B) == ["self", "history", "subject"]

    def test_a_kick_arriving_while_a_client_attaches(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        # The account lost the room; while it rejoins, B attaches (waits), then the rejoin
        # ends in a kick: A (attached) and B (waiting) both hear it, and nothing rejoins.
        occ.room_presence(occupant("alice", (110, 333), aff="owner", type_="unavailable"))
        occ.timer_fired(m.REJOIN)
        assert occ.client_join(B, join(B, id_="jb")) == []
        occ.room_presence(self_presence())
        acts = occ.room_presence(occupant("alice", (110, 307), aff="owner", type_="unavailable"))
        for client in (A, B):
            (u,) = to_client(acts, client)
            assert 307 in codes_of(u) and 110 in codes_of(u)
        assert occ.phase is Phase.IDLE and occ.joined == {} and occ.pending == {}
        assert "rejoin" not in timers(acts)
        # A subsequent join is a real room join again.
        assert len(to_room(occ.client_join(B, join(B)))) == 1

    def test_a_kick_processed_just_before_an_attach_makes_the_attach_a_real_join(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.room_presence(occupant("alice", (110, 307), aff="owner", type_="unavailable"))
        acts = occ.client_join(B, join(B, id_="jb"))
        assert len(to_room(acts)) == 1
        acts = occ.room_presence(error_presence("alice", "forbidden", "auth"))
        (e,) = to_client(acts, B)
        assert condition(e) == "forbidden" and e.get("id") == "jb"

    def test_a_kick_processed_just_after_an_attach_reaches_the_new_client(self) -> None:
        occ = make_occupancy()
        bring_to_joined(occ)
        occ.client_join(B, join(B, id_="jb"))
        acts = occ.room_presence(occupant("alice", (110, 307), aff="owner", type_="unavailable"))
        assert len(to_client(acts, A)) == 1 and len(to_client(acts, B)) == 1


class TestRegistry:
    def test_stats_count_joined_rooms_and_attached_clients(self) -> None:
        reg = m.Occupancies()
        occ = reg.get_or_create(ACCOUNT, ROOM, "alice")
        bring_to_joined(occ)
        occ.client_join(B, join(B))
        assert reg.stats()["account_join_rooms"] == 1
        assert reg.stats()["account_join_clients"] == 2
        assert reg.rooms_of(ACCOUNT) == [occ]

    def test_idle_occupancies_are_dropped(self) -> None:
        reg = m.Occupancies()
        occ = reg.get_or_create(ACCOUNT, ROOM, "alice")
        occ.client_join(A, join(A))
        occ.room_presence(error_presence("alice", "forbidden", "auth"))
        reg.discard_if_done(ACCOUNT, ROOM)
        assert reg.get(ACCOUNT, ROOM) is None and len(reg) == 0


def test_fan_out_stanzas_are_never_the_clients_own_elements() -> None:
    """Fan-out shares the room's stanza; a client's stanza is copied before re-addressing."""
    occ = make_occupancy()
    bring_to_joined(occ)
    msg = groupchat("bob", "x", "r4")
    before = text(msg)
    occ.room_message(msg)
    assert text(msg) == before
