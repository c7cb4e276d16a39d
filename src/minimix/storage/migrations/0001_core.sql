-- Accounts, rosters, offline messages, per-account key-value documents.
CREATE TABLE accounts (
  username TEXT PRIMARY KEY,
  scram_sha1 TEXT NOT NULL,
  scram_sha256 TEXT NOT NULL,
  created REAL NOT NULL
);
CREATE TABLE roster (
  username TEXT NOT NULL,
  contact TEXT NOT NULL,
  name TEXT,
  subscription TEXT NOT NULL DEFAULT 'none',
  ask TEXT,
  approved INTEGER NOT NULL DEFAULT 0,
  groups TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (username, contact)
);
CREATE TABLE roster_version (
  username TEXT PRIMARY KEY,
  version INTEGER NOT NULL
);
CREATE TABLE offline (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL,
  stanza TEXT NOT NULL,
  stamp REAL NOT NULL
);
CREATE INDEX offline_user ON offline (username, id);
CREATE TABLE documents (
  username TEXT NOT NULL,
  store TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (username, store, key)
)
