-- Roll back 0002: drop the per-dimension HNSW indexes (queries fall back to exact search).
DROP INDEX embeddings_vector_384;
DROP INDEX embeddings_vector_768;
DROP INDEX embeddings_vector_1024;
DROP INDEX embeddings_vector_1536;
DROP INDEX embeddings_vector_3072;
