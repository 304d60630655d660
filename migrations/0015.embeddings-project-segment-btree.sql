-- 0015: a btree (project_id, vector_dim, indexed, index_segment), so every exact part of a search (a small project, the not-yet-indexed tail, a segment still being built) reads only that project's rows of that dimension instead of scanning every project's rows.
-- depends: 0012.embedding-segments
-- transactional: false
--
-- CONCURRENTLY: an adopted database may hold millions of rows; uploads keep running while it builds.
CREATE INDEX CONCURRENTLY IF NOT EXISTS embeddings_project_segment_idx
    ON embeddings (project_id, vector_dim, indexed, index_segment);
