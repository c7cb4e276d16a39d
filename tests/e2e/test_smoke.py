"""The newcomer's path: a real slixmpp client logs in and talks to another account."""

from __future__ import annotations

from pathlib import Path

from tests.support import connect, disconnect, running_server


async def test_two_accounts_exchange_a_message(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        bob = srv.add_user("bob")
        a = await connect(srv, f"{alice}/phone")
        b = await connect(srv, f"{bob}/laptop")
        a.send_message(mto=bob, mbody="hello bob", mtype="chat")
        msg = await b.next_message()
        assert msg["body"] == "hello bob"
        assert str(msg["from"]) == f"{alice}/phone"
        await disconnect(a, b)
