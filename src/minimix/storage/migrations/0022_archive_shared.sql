-- Group chat stored once for every account that archives it (XEP-0313 on the account).
-- The message is one row of `archive` whose archive name is '' (its seq orders it among the
-- accounts' other messages, its id is the stanza-id each of these accounts gives it, its stanza
-- has U+0001 where each account's JID goes); each account holds a reference to it in
-- `archive_refs`. The references are written in batches: until then the row lists its archives
-- (`archives`, a JSON array; NULL once they are written), so a stored message is never without
-- them. The archive store deletes references before the rows they name (no foreign key: a
-- check per reference stored, for what one module does).
ALTER TABLE archive ADD COLUMN archives TEXT;
CREATE INDEX archive_unreferenced ON archive (seq) WHERE archives IS NOT NULL;
CREATE TABLE archive_refs (
  archive TEXT NOT NULL,
  seq INTEGER NOT NULL,
  PRIMARY KEY (archive, seq)
) WITHOUT ROWID;
CREATE INDEX archive_refs_seq ON archive_refs (seq)
