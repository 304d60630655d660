-- 0009: embeddings gain an `indexed` flag so HNSW maintenance leaves the upload path: uploads write
-- indexed = false, the server's background indexer later flips rows to true, and the runtime HNSW indexes
-- (embeddings_hnsw_<N>, partial WHERE vector_dim = N AND indexed) only ever see flipped rows. 0002's
-- per-dimension HNSW indexes indexed every row on insert (~100x the cost of the insert) and are dropped.
-- depends: 0006.embedding-identity

-- Existing rows start unindexed; the indexer picks them up after the upgrade.
ALTER TABLE embeddings ADD COLUMN indexed boolean NOT NULL DEFAULT false;

DROP INDEX IF EXISTS embeddings_vector_384;
DROP INDEX IF EXISTS embeddings_vector_768;
DROP INDEX IF EXISTS embeddings_vector_1024;
DROP INDEX IF EXISTS embeddings_vector_1536;
DROP INDEX IF EXISTS embeddings_vector_3072;

-- Finds a project's not-yet-indexed rows (exact-scanned by searches, picked up by the indexer); stays small
-- because the indexer empties it.
CREATE INDEX embeddings_unindexed_idx ON embeddings (project_id) WHERE NOT indexed;
