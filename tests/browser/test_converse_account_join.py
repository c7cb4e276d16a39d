"""A person's view: the bundled Converse.js, in Chromium, over XMPP over WebSocket.

Two browser contexts log in as alice (two devices), one as bob. Both of alice's contexts join
one room through Converse.js's own interface; a message typed in one appears in the other and
for bob; bob sees one occupant for alice (her account, not one per device); closing one of
alice's contexts leaves her in the room, and the other still receives messages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from minimix.protocol.jid import JID
from tests.support import running_server

ROOM = "lobby@conference.localhost"
TIMEOUT = 20_000  # ms: a cold Chromium on a 2-core machine


async def login(browser: Any, port: int, user: str, shots: Path, label: str) -> tuple[Any, Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 760})
    page = await context.new_page()
    await page.goto(f"http://127.0.0.1:{port}/")
    await page.fill("input[name=jid]", user)  # the domain is the page's default
    await page.fill("input[name=password]", "secret")
    await page.click("converse-login-form [type=submit]")
    await expect(page.locator("converse-rooms-list")).to_be_visible(timeout=TIMEOUT)
    await page.screenshot(path=shots / f"01-{label}-logged-in.png")
    return context, page


async def join_room(page: Page, shots: Path, label: str) -> None:
    """Through the interface: Groupchats menu, "Add a new groupchat", room address, Join."""
    await page.click("converse-rooms-list converse-dropdown button.dropdown-toggle")
    await page.click("a.show-add-muc-modal")
    room_input = page.locator("converse-add-muc-modal [name=chatroom] input, input[name=chatroom]")
    await room_input.first.fill(ROOM)
    await page.click("converse-add-muc-modal input[name=join]")
    await expect(page.locator(f'converse-muc[jid="{ROOM}"] textarea.chat-textarea')).to_be_visible(
        timeout=TIMEOUT
    )
    await page.screenshot(path=shots / f"02-{label}-joined.png")


async def say(page: Page, text: str) -> None:
    box = page.locator(f'converse-muc[jid="{ROOM}"] textarea.chat-textarea')
    await box.fill(text)
    await box.press("Enter")


async def expect_message(page: Page, text: str) -> None:
    messages = page.locator(f'converse-muc[jid="{ROOM}"] .chat-msg__text')
    await expect(messages.filter(has_text=text)).to_have_count(1, timeout=TIMEOUT)


def occupants(page: Page) -> Any:
    return page.locator(f'converse-muc[jid="{ROOM}"] converse-muc-occupants li.occupant')


async def test_two_tabs_of_one_account_and_another_account_in_one_room(
    tmp_path: Path, browser: Any, artifacts: Path
) -> None:
    # A closed tab's stream may be resumed for a while (XEP-0198); keep that short here so the
    # tab's session really ends and only account-join keeps alice in the room.
    async with running_server(tmp_path, limits={"sm_resume_timeout": 0.5}) as srv:
        alice = srv.add_user("alice")
        srv.add_user("bob")
        port = srv.server.ports["http"]

        ctx1, tab1 = await login(browser, port, "alice", artifacts, "alice-tab1")
        ctx2, tab2 = await login(browser, port, "alice", artifacts, "alice-tab2")
        ctx3, bob = await login(browser, port, "bob", artifacts, "bob")
        alices = srv.server.sessions.of_account(JID.parse(alice))
        assert len(alices) == 2 and all(s.link.framed for s in alices)  # both over WebSocket

        await join_room(tab1, artifacts, "alice-tab1")
        await join_room(tab2, artifacts, "alice-tab2")
        await join_room(bob, artifacts, "bob")

        # Typed in one of alice's tabs: shown in her other tab and to bob.
        await say(tab1, "hello from the first tab")
        await expect_message(tab2, "hello from the first tab")
        await expect_message(bob, "hello from the first tab")
        await expect_message(tab1, "hello from the first tab")  # the room's reflection, once

        # Bob sees alice once: her account is the occupant, not each of her tabs.
        await expect(occupants(bob)).to_have_count(2, timeout=TIMEOUT)
        await expect(occupants(bob).filter(has_text="alice")).to_have_count(1)
        await expect(occupants(tab2)).to_have_count(2, timeout=TIMEOUT)
        await bob.screenshot(path=artifacts / "03-bob-sees-one-alice.png")
        await tab2.screenshot(path=artifacts / "03-alice-tab2-conversation.png")

        # One tab closes: alice stays in the room, her other tab still gets the messages.
        await ctx1.close()
        for _ in range(200):
            if len(srv.server.sessions.of_account(JID.parse(alice))) == 1:
                break
            await asyncio.sleep(0.05)
        remaining = srv.server.sessions.of_account(JID.parse(alice))
        assert len(remaining) == 1 and not remaining[0].hibernating
        await say(bob, "are you still there, alice?")
        await expect_message(tab2, "are you still there, alice?")
        await expect(occupants(bob).filter(has_text="alice")).to_have_count(1)
        await expect(occupants(bob)).to_have_count(2)
        await say(tab2, "yes, on my other tab")
        await expect_message(bob, "yes, on my other tab")
        await bob.screenshot(path=artifacts / "04-bob-after-tab1-closed.png")
        await tab2.screenshot(path=artifacts / "04-alice-tab2-after-tab1-closed.png")

        # The server's own view agrees: one membership for alice's account in the room.
        joins = [
            occ
            for occ in srv.server.account_join.registry
            if str(occ.account) == alice and str(occ.room) == ROOM
        ]
        assert len(joins) == 1
        assert [str(c) for c in joins[0].joined] == [str(remaining[0].jid)]
        room = srv.server.muc.rooms["lobby"]
        assert sorted(room.occupants) == ["alice", "bob"]

        # The operator's status page shows the same, live.
        ctx4 = await browser.new_context(viewport={"width": 1280, "height": 760})
        admin = await ctx4.new_page()
        await admin.goto(f"http://127.0.0.1:{port}/admin")
        joins = admin.locator("#joins tbody tr")
        await expect(joins).to_have_count(2, timeout=TIMEOUT)  # alice's and bob's memberships
        alice_row = joins.filter(has_text=alice)
        await expect(alice_row).to_contain_text(ROOM)
        await expect(alice_row).to_contain_text(str(remaining[0].jid))
        await expect(admin.locator("#rooms tbody tr").filter(has_text=ROOM)).to_contain_text("2")
        await admin.screenshot(path=artifacts / "05-admin-status.png", full_page=True)

        for ctx in (ctx2, ctx3, ctx4):
            await ctx.close()
