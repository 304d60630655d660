-- 0015 rollback: drop the per-project segment btree (exact searches fall back to the (project_id, text_id) key).
-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS embeddings_project_segment_idx;
