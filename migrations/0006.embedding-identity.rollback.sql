-- 0006 rollback: restore the old unique key and the NOT NULL / NO ACTION instance reference. Refuses while
-- embeddings exist whose instance was deleted (NULL reference): the old schema cannot hold them, and dropping
-- stored data silently is not a rollback's call.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM embeddings WHERE llm_service_instance_id IS NULL) THEN
        RAISE EXCEPTION '0006 rollback: embeddings without an instance exist; delete or rebind them first';
    END IF;
END $$;

ALTER TABLE embeddings DROP CONSTRAINT embeddings_project_id_text_id_key;
ALTER TABLE embeddings ADD CONSTRAINT embeddings_text_id_owner_project_id_llm_service_instance_id_key
    UNIQUE (text_id, owner, project_id, llm_service_instance_id);

ALTER TABLE embeddings DROP CONSTRAINT embeddings_llm_service_instance_id_fkey;
ALTER TABLE embeddings ADD CONSTRAINT embeddings_llm_service_instance_id_fkey
    FOREIGN KEY (llm_service_instance_id) REFERENCES llm_service_instances (instance_id);
ALTER TABLE embeddings ALTER COLUMN llm_service_instance_id SET NOT NULL;
