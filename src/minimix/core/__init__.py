"""The runtime: sessions, routing, hooks and the extension base. It knows no XEPs."""
