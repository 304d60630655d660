-- 0009 rollback: drop the indexed flag (and every index using it) and restore 0002's per-dimension HNSW
-- indexes exactly as 0002 defined them (building them over existing rows can take a while).
DROP INDEX IF EXISTS embeddings_unindexed_idx;
ALTER TABLE embeddings DROP COLUMN indexed;

CREATE INDEX embeddings_vector_384 ON embeddings
    USING hnsw ((vector::halfvec(384)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 384;

CREATE INDEX embeddings_vector_768 ON embeddings
    USING hnsw ((vector::halfvec(768)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 768;

CREATE INDEX embeddings_vector_1024 ON embeddings
    USING hnsw ((vector::halfvec(1024)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 1024;

CREATE INDEX embeddings_vector_1536 ON embeddings
    USING hnsw ((vector::halfvec(1536)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 1536;

CREATE INDEX embeddings_vector_3072 ON embeddings
    USING hnsw ((vector::halfvec(3072)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 3072;
