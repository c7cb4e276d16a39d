-- Personal eventing (XEP-0163): each account's pubsub nodes, their items, affiliations and
-- explicit subscriptions.
CREATE TABLE pubsub_nodes (
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  config TEXT NOT NULL,
  created REAL NOT NULL,
  PRIMARY KEY (owner, node)
);
CREATE TABLE pubsub_items (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  item_id TEXT NOT NULL,
  payload TEXT NOT NULL,
  publisher TEXT NOT NULL,
  stamp REAL NOT NULL
);
CREATE UNIQUE INDEX pubsub_item ON pubsub_items (owner, node, item_id);
CREATE INDEX pubsub_node_items ON pubsub_items (owner, node, seq);
CREATE TABLE pubsub_affiliations (
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  jid TEXT NOT NULL,
  affiliation TEXT NOT NULL,
  PRIMARY KEY (owner, node, jid)
);
CREATE TABLE pubsub_subscriptions (
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  jid TEXT NOT NULL,
  PRIMARY KEY (owner, node, jid)
)
