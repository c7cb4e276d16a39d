"""Operator views of account-join: ``minimix rooms [--account JID]``.

Reads the server's database (safe while the server runs): which accounts are in which rooms,
why, under which nick, and which clients are attached right now.
"""

from __future__ import annotations

import datetime
import sys

from minimix.config import Config
from minimix.protocol.jid import JID, InvalidJID


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "nothing archived yet"
    t = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
    return "last message " + t.strftime("%Y-%m-%d %H:%M:%S UTC")


def show_rooms(config: Config, account: str | None) -> int:
    """Print each account's rooms and attached clients; exit status for the CLI."""
    from minimix.app import open_database
    from minimix.storage.account_join import AccountJoinStore

    wanted: str | None = None
    if account:
        try:
            jid = JID.parse(account if "@" in account else f"{account}@{config.domain}")
        except InvalidJID as exc:
            print(f"minimix: --account: {exc}", file=sys.stderr)
            return 2
        if not jid.local:
            print(f"minimix: --account: expected user@{config.domain}", file=sys.stderr)
            return 2
        wanted = str(jid.bare)
    db = open_database(config)
    try:
        memberships = AccountJoinStore(db).memberships(wanted)
    finally:
        db.close()
    if not config.account_join.enabled:
        print("account-join is off ([account_join] enabled = false); showing what is stored")
    if not memberships:
        print(f"{wanted} is in no room." if wanted else "No account is in any room.")
        return 0
    current = ""
    for m in memberships:
        if m.account != current:
            current = m.account
            rooms = sum(1 for x in memberships if x.account == current)
            print(f"{current} ({rooms} room{'s' if rooms != 1 else ''})")
        why = "autojoin bookmark" if m.autojoin else "joined by a client"
        print(f"  {m.room} as {m.nick!r}: {why}, {_when(m.last_stamp)}")
        if m.clients:
            print(f"    attached: {', '.join(m.clients)}")
        else:
            print("    no client attached (the account stays in the room for its clients)")
    return 0
