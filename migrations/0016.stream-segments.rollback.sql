-- 0016 rollback: forget which segments streams wrote (their rows stay indexed in them; the indexer builds them as sealed segments).
ALTER TABLE embedding_segments DROP COLUMN IF EXISTS writing_until;
