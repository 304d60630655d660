-- Projects gain a public_read flag (Go service migration 003): a project with it set can be read without credentials.
-- depends: 0002.hnsw-indexes
--
-- Nullable with default false, exactly as the Go service declared it (adopted databases must match).
ALTER TABLE projects ADD COLUMN public_read boolean DEFAULT false;
