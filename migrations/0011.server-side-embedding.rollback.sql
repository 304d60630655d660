-- 0011 rollback: drop the request shape, key_optional and max_inputs of API standards, the standards 0011
-- inserted (recognised by created_at equal to _system's) unless an instance or definition uses them, and the
-- embeddings' text digest. LOST: which shape each standard speaks, and the digests (texts get re-embedded once).
ALTER TABLE embeddings DROP COLUMN text_embedding_digest;

DELETE FROM api_standards s
USING users u
WHERE u.user_handle = '_system'
  AND s.api_standard_handle IN ('ollama', 'openai-compatible')
  AND s.created_at = u.created_at
  AND NOT EXISTS (SELECT 1 FROM llm_service_instances i WHERE i.api_standard = s.api_standard_handle)
  AND NOT EXISTS (SELECT 1 FROM llm_service_definitions d WHERE d.api_standard = s.api_standard_handle);

ALTER TABLE api_standards DROP COLUMN max_inputs, DROP COLUMN key_optional, DROP COLUMN request_shape;
