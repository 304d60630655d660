-- 0006: an embedding is identified by (project, text_id) alone, and its instance reference no longer blocks
-- deleting an instance (the project's binding decides which instance a project uses; the per-row reference only
-- records which instance made the vector and becomes NULL when that instance is deleted).
-- depends: 0005.project-shares

-- Refuse (rather than silently drop rows) when an adopted database holds the same text_id twice in a project
-- (possible under the old key, which included the service).
DO $$
DECLARE
    dup integer;
BEGIN
    SELECT count(*) INTO dup FROM (
        SELECT 1 FROM embeddings GROUP BY project_id, text_id HAVING count(*) > 1
    ) d;
    IF dup > 0 THEN
        RAISE EXCEPTION '0006: % (project_id, text_id) pairs occur more than once in embeddings; keep one row each, then apply again', dup;
    END IF;
END $$;

ALTER TABLE embeddings ALTER COLUMN llm_service_instance_id DROP NOT NULL;
ALTER TABLE embeddings DROP CONSTRAINT embeddings_llm_service_instance_id_fkey;
ALTER TABLE embeddings ADD CONSTRAINT embeddings_llm_service_instance_id_fkey
    FOREIGN KEY (llm_service_instance_id) REFERENCES llm_service_instances (instance_id) ON DELETE SET NULL;

ALTER TABLE embeddings DROP CONSTRAINT embeddings_text_id_owner_project_id_llm_service_instance_id_key;
ALTER TABLE embeddings ADD CONSTRAINT embeddings_project_id_text_id_key UNIQUE (project_id, text_id);
