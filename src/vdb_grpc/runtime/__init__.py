"""What keeps a running server observable and healthy: deadline plumbing to the database, the pool's bounded
waits, the database health probe, supervision of the embedded PostgreSQL, graceful drain, logging, metrics,
rate limits and read routing."""
