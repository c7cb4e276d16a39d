-- Account-join: the rooms each account is in (restored at start) and the clients attached to
-- each occupancy right now (rewritten at start; shown by `minimix rooms`).
CREATE TABLE account_join_rooms (
  account TEXT NOT NULL,
  room TEXT NOT NULL,
  nick TEXT NOT NULL,
  password TEXT,
  origin TEXT NOT NULL DEFAULT 'client',
  autojoin INTEGER NOT NULL DEFAULT 0,
  last_room_stanza_id TEXT,
  last_stamp REAL,
  joined_at REAL NOT NULL,
  PRIMARY KEY (account, room)
);
CREATE TABLE account_join_clients (
  account TEXT NOT NULL,
  room TEXT NOT NULL,
  client TEXT NOT NULL,
  attached_at REAL NOT NULL,
  PRIMARY KEY (account, room, client)
)
