-- 0016: streamed uploads write straight into index segments of their own: a segment registered by a stream records until when it may still receive rows, so the indexer builds no index over it while the stream writes (docs/search.md, "Streamed uploads").
-- depends: 0015.embeddings-project-segment-btree
--
-- NULL: sealed by the indexer (every row was there when it was registered). Otherwise the segment was opened by
-- a streaming upload, which renews this lease with every batch and ends it when the stream ends; a lease in the
-- past means closed (a stream that ended, or a server that died while streaming).
ALTER TABLE embedding_segments ADD COLUMN writing_until timestamptz;
