"""What keeps the service running: deadline plumbing to the database, the pool's bounded waits, the database
health probe, supervision of the embedded PostgreSQL, and graceful drain."""
