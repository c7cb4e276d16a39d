"""The XMPP stream as a sans-I/O state machine: bytes in, events out, bytes to send."""
