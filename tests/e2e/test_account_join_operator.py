"""What an operator sees of account-join: ``minimix rooms``, the log, ``minimix demo``."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from minimix.cli import main
from tests.e2e.account_join_helpers import self_unavailable, wait_until
from tests.e2e.muc_helpers import SERVICE, admin_item, close, create, join, send_groupchat, send_iq
from tests.e2e.muc_helpers import client as muc_client
from tests.support import running_server, write_config

ROOM = f"ops@{SERVICE}"


async def test_minimix_rooms_shows_who_is_in_which_room_with_which_clients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "minimix.toml", data)
    async with running_server(data) as srv:
        b, rb = await muc_client(srv, "bob", "desk")
        await create(b, rb, ROOM, "Bob")
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        srv.add_user("carol")
        capsys.readouterr()
        assert main(["rooms", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "alice@localhost (1 room)" in out
        assert f"{ROOM} as 'alice'" in out
        assert "attached: alice@localhost/laptop, alice@localhost/phone" in out
        assert "bob@localhost (1 room)" in out
        assert main(["rooms", "--config", str(config), "--account", "alice"]) == 0
        only = capsys.readouterr().out
        assert "alice@localhost" in only and "bob@localhost" not in only
        assert main(["rooms", "--config", str(config), "--account", "carol"]) == 0
        assert "carol@localhost is in no room." in capsys.readouterr().out
        # A client going away is no longer shown as attached; the account stays.
        await close(a1)
        await wait_until(
            lambda: (
                srv.server.account_join.store.memberships("alice@localhost")[0].clients
                == ("alice@localhost/laptop",)
            )
        )
        assert main(["rooms", "--config", str(config), "--account", "alice"]) == 0
        out = capsys.readouterr().out
        assert "attached: alice@localhost/laptop" in out and "phone" not in out
        assert main(["rooms", "--config", str(config), "--account", "not a jid@"]) == 2
        await close(a2, b)


async def test_joins_attaches_detaches_leaves_and_removals_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="minimix.account_join")
    async with running_server(tmp_path) as srv:
        b, rb = await muc_client(srv, "bob", "desk")
        await create(b, rb, ROOM, "Bob")
        a1, r1 = await muc_client(srv, "alice", "phone")
        a2, r2 = await muc_client(srv, "alice", "laptop")
        await join(a1, r1, ROOM, "alice")
        await join(a2, r2, ROOM, "alice")
        send_groupchat(b, ROOM, "a secret body")
        a2.send_raw(f"<presence to='{ROOM}/alice' type='unavailable'/>")
        await r2.take(self_unavailable(ROOM))
        res = await send_iq(b, admin_item(nick="alice", role="none"), ROOM, "set")
        assert res.get("type") == "result"
        await r1.take(self_unavailable(ROOM))
        await close(a1, a2, b)
    lines = [r.getMessage() for r in caplog.records if r.name == "minimix.account_join"]
    text = "\n".join(lines)
    assert f"alice@localhost joins {ROOM} as alice" in text
    assert f"alice@localhost joined {ROOM} as alice" in text
    assert f"alice@localhost/phone attached to {ROOM}" in text
    assert f"alice@localhost/laptop attached to {ROOM}" in text
    assert f"alice@localhost/laptop detached from {ROOM} (left)" in text
    assert f"alice@localhost removed from {ROOM} (110,307)" in text
    assert all(
        r.levelno == logging.INFO for r in caplog.records if r.name == "minimix.account_join"
    )
    assert "a secret body" not in text


def test_minimix_demo_tells_its_story_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "minimix", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "the room saw one occupant throughout: one join, no leave" in out
    assert "FAILED" not in out
    assert "every claim held" in out
