-- Group chat rooms (XEP-0045): persistent rooms, their affiliations and discussion history.
CREATE TABLE muc_rooms (
  room TEXT PRIMARY KEY,
  config TEXT NOT NULL,
  secret TEXT NOT NULL,
  subject TEXT,
  subject_nick TEXT NOT NULL DEFAULT '',
  subject_occupant_id TEXT NOT NULL DEFAULT '',
  subject_stamp REAL NOT NULL DEFAULT 0,
  created REAL NOT NULL
);
CREATE TABLE muc_affiliations (
  room TEXT NOT NULL,
  jid TEXT NOT NULL,
  affiliation TEXT NOT NULL,
  nick TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (room, jid)
);
CREATE TABLE muc_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  room TEXT NOT NULL,
  stamp REAL NOT NULL,
  stanza TEXT NOT NULL
);
CREATE INDEX muc_history_room ON muc_history (room, id)
