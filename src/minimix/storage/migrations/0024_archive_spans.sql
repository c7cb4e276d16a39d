-- Shared rows are held by spans instead of one reference per row and archive: an archive holds
-- the shared rows whose with_jid is its span's and whose seq lies between first_seq and
-- last_seq (both included). A span still growing (the archive holds every new shared row of
-- that with_jid) ends at 9223372036854775807. An account in a room holds one span per stretch
-- of time it was there: what a room message adds to the archives is its row alone.
CREATE TABLE archive_spans (
  archive TEXT NOT NULL,
  with_jid TEXT NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  PRIMARY KEY (archive, with_jid, first_seq)
) WITHOUT ROWID;
CREATE INDEX archive_spans_with ON archive_spans (with_jid, last_seq);
-- References still listed, written first; shared rows nobody references go.
INSERT OR IGNORE INTO archive_refs (archive, seq) SELECT j.value, p.seq FROM archive_pending p, json_each(p.archives) j;
DELETE FROM archive WHERE archive = '' AND NOT EXISTS (SELECT 1 FROM archive_refs r WHERE r.seq = archive.seq);
-- Each run of references to consecutive shared rows of one with_jid becomes a span: within a
-- run, a row's rank among its with_jid's rows minus its rank among the archive's references
-- to that with_jid stays the same.
INSERT INTO archive_spans (archive, with_jid, first_seq, last_seq) SELECT archive, with_jid, MIN(seq), MAX(seq) FROM (SELECT r.archive, s.with_jid, r.seq, s.n - ROW_NUMBER() OVER (PARTITION BY r.archive, s.with_jid ORDER BY r.seq) AS run FROM archive_refs r JOIN (SELECT seq, with_jid, ROW_NUMBER() OVER (PARTITION BY with_jid ORDER BY seq) AS n FROM archive WHERE archive = '') s ON s.seq = r.seq) GROUP BY archive, with_jid, run;
-- A span reaching its with_jid's newest row grows on.
UPDATE archive_spans SET last_seq = 9223372036854775807 WHERE last_seq = (SELECT MAX(a.seq) FROM archive a WHERE a.archive = '' AND a.with_jid = archive_spans.with_jid);
DROP TRIGGER IF EXISTS archive_shared_batch_insert;
DROP VIEW IF EXISTS archive_shared_batch;
DROP TABLE archive_pending;
DROP TABLE archive_refs
