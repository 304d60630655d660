-- 0012: index segments, so index work never takes the live index away: every indexed row records the segment (one generation of index work) it was sealed into, and each HNSW index covers a range of segments, built beside the live ones and swapped in (docs/search.md).
-- depends: 0011.server-side-embedding
--
-- Rows indexed before this migration are segment 0 (a constant default: no table rewrite). The indexer
-- replaces the old per-dimension index embeddings_hnsw_<N> by embeddings_hnsw_<N>_0_0 beside it, then drops it.
ALTER TABLE embeddings ADD COLUMN index_segment integer NOT NULL DEFAULT 0;

-- One row per sealed segment: which dimension, how many rows were sealed into it. The HNSW indexes themselves
-- (embeddings_hnsw_<N>_<lo>_<hi>, partial WHERE vector_dim = N AND indexed AND index_segment BETWEEN lo AND hi)
-- live in the catalog; this table tells the indexer which segments still need one.
CREATE TABLE embedding_segments (
    segment integer GENERATED ALWAYS AS IDENTITY (START WITH 1) PRIMARY KEY,
    vector_dim integer NOT NULL,
    sealed_rows bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
