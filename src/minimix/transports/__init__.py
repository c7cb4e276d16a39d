"""Transports move bytes only: TCP (STARTTLS and direct TLS) and WebSocket feed one stream."""
