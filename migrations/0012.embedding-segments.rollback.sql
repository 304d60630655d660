-- 0012 rollback: drop the segment registry and the column (which drops every segment HNSW index with it); the old indexer then rebuilds embeddings_hnsw_<N> from the indexed rows.
DROP TABLE embedding_segments;
ALTER TABLE embeddings DROP COLUMN index_segment;
