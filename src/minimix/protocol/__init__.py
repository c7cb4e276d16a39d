"""Pure protocol code: JIDs, XML elements, parser, serializer, stanza views. No asyncio here."""
