"""Storage: small typed interfaces per need, one SQL implementation (SQLite by default)."""
