-- 0011: server-side embedding. An API standard says which request shape its provider speaks (openai, cohere, gemini, ollama), whether a key is optional and how many inputs one request may carry; embeddings written by UpsertTexts record a digest of what produced them, so an unchanged text is not sent to the provider again.
-- depends: 0009.embeddings-indexed-flag

-- NULL: a standard made before this migration (or by an admin who named no shape) cannot be called by the
-- service; its instances still take uploaded vectors.
ALTER TABLE api_standards
    ADD COLUMN request_shape varchar(20) CHECK (request_shape IN ('openai', 'cohere', 'gemini', 'ollama')),
    -- true: an instance without a key is called without one (local servers); false: such a call is refused
    ADD COLUMN key_optional boolean NOT NULL DEFAULT false,
    -- most inputs in one provider request; 0 = the shape's own limit (openai 2048, cohere 96, gemini 100, ollama 512)
    ADD COLUMN max_inputs integer NOT NULL DEFAULT 0 CHECK (max_inputs >= 0);

UPDATE api_standards SET request_shape = api_standard_handle
WHERE api_standard_handle IN ('openai', 'cohere', 'gemini', 'ollama');
UPDATE api_standards SET key_optional = true WHERE api_standard_handle = 'ollama';

-- New standards for local servers. created_at is copied from _system's, as in 0004: the rollback removes only
-- the rows inserted here (a Go database may have had an 'ollama' row of its own; it keeps it).
INSERT INTO api_standards
    (api_standard_handle, description, key_method, key_field, created_at, updated_at, request_shape, key_optional)
SELECT s.handle, s.description, 'auth_bearer', 'Authorization', u.created_at, u.created_at, s.shape, true
FROM (
    VALUES
        ('ollama',
         'Ollama native embed API (POST /api/embed, https://github.com/ollama/ollama/blob/main/docs/api.md); no key needed, one is sent as Authorization: Bearer <key> when set',
         'ollama'),
        ('openai-compatible',
         'OpenAI-compatible embeddings servers (vLLM, llama.cpp, LM Studio, Ollama /v1/embeddings); key optional, sent as Authorization: Bearer <key> when set',
         'openai')
) AS s (handle, description, shape)
CROSS JOIN users u
WHERE u.user_handle = '_system'
ON CONFLICT (api_standard_handle) DO NOTHING;

-- SHA-256 over (the producing instance's identity and configuration, the text, the stored float16 vector),
-- written by UpsertTexts after its batch commits. A later UpsertTexts reuses the stored vector only when the
-- digest recomputed from the row and the current instance matches; any other writer (UpsertEmbeddings, a
-- changed instance, an edited text) makes the digest stale without having to know about it.
ALTER TABLE embeddings ADD COLUMN text_embedding_digest bytea;
