"""Account-join: the account (bare JID) is the room occupant; each client attaches to it.

``machine`` is the pure per-(account, room) state machine, ``stanzas`` the XEP-0045 shapes it
reads and builds, ``extension`` the glue that hooks it into the router.
"""

from minimix.extensions.account_join.extension import AccountJoin
from minimix.extensions.account_join.machine import Occupancies, Occupancy, Phase, Settings

__all__ = ["AccountJoin", "Occupancies", "Occupancy", "Phase", "Settings"]
