"""XEP-0045 Multi-User Chat: the group chat service (``service.py``) and its rooms (``room.py``)."""

from minimix.extensions.muc.service import MucService

__all__ = ["MucService"]
