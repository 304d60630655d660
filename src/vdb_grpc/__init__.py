"""vdb-grpc: text embeddings for RAG in PostgreSQL + pgvector, served over gRPC."""

__version__ = "0.1.0"
