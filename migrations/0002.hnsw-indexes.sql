-- Approximate-nearest-neighbour (HNSW, cosine) indexes on embeddings, one partial index per common vector size, as in the Go service's migration 002.
-- depends: 0001.initial-schema
--
-- An HNSW index needs vectors of one fixed dimension, while embeddings.vector is dimension-less, so each index
-- covers the rows of one size (WHERE vector_dim = N) through the expression vector::halfvec(N). A query uses one
-- only if it repeats both: ORDER BY vector::halfvec(N) <=> $1 ... WHERE vector_dim = N.
-- m = 24, ef_construction = 200: the Go service's values (recall about 0.998 in its measurements).
-- Plain CREATE INDEX inside the migration's transaction: the table is empty on a fresh install; an adopted
-- database already has these indexes (same names) and is marked, not migrated.

-- Cohere embed-*-light-v3.0
CREATE INDEX embeddings_vector_384 ON embeddings
    USING hnsw ((vector::halfvec(384)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 384;

-- BERT base, Gemini with output_dimensionality 768
CREATE INDEX embeddings_vector_768 ON embeddings
    USING hnsw ((vector::halfvec(768)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 768;

-- Cohere embed-multilingual-v3.0 / embed-english-v3.0, BERT large
CREATE INDEX embeddings_vector_1024 ON embeddings
    USING hnsw ((vector::halfvec(1024)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 1024;

-- OpenAI text-embedding-3-small / ada-002, Cohere embed-v4.0
CREATE INDEX embeddings_vector_1536 ON embeddings
    USING hnsw ((vector::halfvec(1536)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 1536;

-- OpenAI text-embedding-3-large, gemini-embedding-001
CREATE INDEX embeddings_vector_3072 ON embeddings
    USING hnsw ((vector::halfvec(3072)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 200)
    WHERE vector_dim = 3072;
