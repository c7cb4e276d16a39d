-- Message archives (XEP-0313): one per account and one per room, ordered by seq.
CREATE TABLE archive (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  archive TEXT NOT NULL,
  id TEXT NOT NULL,
  with_jid TEXT NOT NULL,
  with_full TEXT NOT NULL DEFAULT '',
  stamp REAL NOT NULL,
  kind TEXT NOT NULL,
  stanza TEXT NOT NULL,
  room_stanza_id TEXT
);
CREATE UNIQUE INDEX archive_id ON archive (archive, id);
CREATE INDEX archive_with ON archive (archive, with_jid, seq);
CREATE INDEX archive_stamp ON archive (archive, stamp);
CREATE INDEX archive_room_stanza ON archive (archive, room_stanza_id);
CREATE TABLE archive_prefs (
  archive TEXT PRIMARY KEY,
  default_mode TEXT NOT NULL,
  always TEXT NOT NULL DEFAULT '[]',
  never TEXT NOT NULL DEFAULT '[]'
)
