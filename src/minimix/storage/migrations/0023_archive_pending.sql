-- The archives a shared row was stored for, until their references are written, in a table of
-- their own: the row itself is written once (not a second time to clear its list), and the
-- lists waiting are a few pages at the end of one small table instead of an index on `archive`.
CREATE TABLE archive_pending (
  seq INTEGER PRIMARY KEY,
  archives TEXT NOT NULL
);
INSERT INTO archive_pending (seq, archives) SELECT seq, archives FROM archive WHERE archives IS NOT NULL;
UPDATE archive SET archives = NULL WHERE archives IS NOT NULL;
DROP INDEX archive_unreferenced
;
-- Shared rows are stored through this view: one statement stores a batch of them (a JSON array
-- of [id, with_jid, stamp, kind, stanza, room_stanza_id, archives]) and lists each one's
-- archives, as one transaction of its own.
CREATE VIEW archive_shared_batch AS SELECT NULL AS batch
;
CREATE TRIGGER archive_shared_batch_insert INSTEAD OF INSERT ON archive_shared_batch BEGIN INSERT OR IGNORE INTO archive (archive, id, with_jid, with_full, stamp, kind, stanza, room_stanza_id) SELECT '', json_extract(value, '$[0]'), json_extract(value, '$[1]'), '', json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]') FROM json_each(NEW.batch) ORDER BY key; INSERT OR REPLACE INTO archive_pending (seq, archives) SELECT a.seq, json_extract(j.value, '$[6]') FROM json_each(NEW.batch) j CROSS JOIN archive a ON a.archive = '' AND a.id = json_extract(j.value, '$[0]'); END
