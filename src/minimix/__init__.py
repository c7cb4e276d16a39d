"""minimix: an XMPP server where the account, not each device, joins group chats."""

__version__ = "0.1.0"
