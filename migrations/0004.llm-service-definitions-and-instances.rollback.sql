-- Roll back 0004: back to the 0003 shape (llm_services, users_llm_services, projects_llm_services), moving the data back. LOST: api_key_encrypted (an instance whose key exists only encrypted ends up with no api_key), definitions and their shares, context_limit, definition links.
--
-- What comes back:
--   llm_service_instances -> llm_services, same ids, handles and plaintext api_key (if re-encryption already
--     emptied api_key, the key is gone: the old schema has nowhere to keep the ciphertext)
--   users_llm_services: an 'owner' row for each service's owner, plus each share (editor -> writer)
--   projects_llm_services: one link per project bound to an instance (links 0004 dropped stay dropped),
--     timestamped with the later of the project's and the service's creation
--   embeddings.llm_service_instance_id -> llm_service_id
--   role 'editor' (project shares in users_projects included) -> 'writer'; 'editor' and _system removed
--   API standards openai/cohere/gemini: removed only if 0004 inserted them (created_at equal to _system's)
--     and no service uses them; standards that existed before 0004, or are in use, stay.

ALTER TABLE embeddings RENAME CONSTRAINT embeddings_text_id_owner_project_id_llm_service_instance_id_key
    TO embeddings_text_id_owner_project_id_llm_service_id_key;
ALTER TABLE embeddings RENAME CONSTRAINT embeddings_llm_service_instance_id_fkey TO embeddings_llm_service_id_fkey;
ALTER TABLE embeddings RENAME COLUMN llm_service_instance_id TO llm_service_id;

ALTER INDEX IF EXISTS llm_service_instances_handle RENAME TO llm_services_handle;
ALTER TABLE llm_service_instances
    RENAME CONSTRAINT llm_service_instances_api_standard_fkey TO llm_services_api_standard_fkey;
ALTER TABLE llm_service_instances RENAME CONSTRAINT llm_service_instances_owner_fkey TO llm_services_owner_fkey;
ALTER TABLE llm_service_instances
    RENAME CONSTRAINT llm_service_instances_owner_instance_handle_key TO llm_services_owner_llm_service_handle_key;
ALTER TABLE llm_service_instances RENAME CONSTRAINT llm_service_instances_pkey TO llm_services_pkey;
ALTER SEQUENCE llm_service_instances_instance_id_seq RENAME TO llm_services_llm_service_id_seq;
ALTER TABLE llm_service_instances RENAME COLUMN instance_handle TO llm_service_handle;
ALTER TABLE llm_service_instances RENAME COLUMN instance_id TO llm_service_id;
ALTER TABLE llm_service_instances RENAME TO llm_services;

CREATE TABLE projects_llm_services (
    project_id integer NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    llm_service_id integer NOT NULL REFERENCES llm_services (llm_service_id) ON DELETE CASCADE,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, llm_service_id)
);

INSERT INTO projects_llm_services (project_id, llm_service_id, created_at, updated_at)
SELECT p.project_id,
       s.llm_service_id,
       greatest(p.created_at, s.created_at),
       greatest(p.created_at, s.created_at)
FROM projects p
JOIN llm_services s ON s.llm_service_id = p.llm_service_instance_id;

-- also drops its index and foreign key
ALTER TABLE projects DROP COLUMN llm_service_instance_id;

CREATE TABLE users_llm_services (
    user_handle varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    llm_service_id integer NOT NULL REFERENCES llm_services (llm_service_id) ON DELETE CASCADE,
    role varchar(20) NOT NULL REFERENCES vdb_roles (vdb_role),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (user_handle, llm_service_id)
);

INSERT INTO users_llm_services (user_handle, llm_service_id, role, created_at, updated_at)
SELECT owner, llm_service_id, 'owner', created_at, updated_at
FROM llm_services;

INSERT INTO users_llm_services (user_handle, llm_service_id, role, created_at, updated_at)
SELECT user_handle,
       instance_id,
       CASE role WHEN 'editor' THEN 'writer' ELSE role END,
       created_at,
       updated_at
FROM llm_service_instances_shared_with
ON CONFLICT (user_handle, llm_service_id) DO NOTHING;

DROP TABLE llm_service_instances_shared_with;

-- also drops the index on definition_id and the foreign key to llm_service_definitions
ALTER TABLE llm_services
    DROP COLUMN api_key_encrypted,
    DROP COLUMN context_limit,
    DROP COLUMN definition_id;

DROP TABLE llm_service_definitions_shared_with;
DROP TABLE llm_service_definitions;

DELETE FROM api_standards a
USING users u
WHERE u.user_handle = '_system'
  AND a.api_standard_handle IN ('openai', 'cohere', 'gemini')
  AND a.created_at = u.created_at
  AND NOT EXISTS (SELECT 1 FROM llm_services s WHERE s.api_standard = a.api_standard_handle);

DELETE FROM users WHERE user_handle = '_system';

UPDATE users_projects SET role = 'writer' WHERE role = 'editor';
DELETE FROM vdb_roles WHERE vdb_role = 'editor';

-- PostgreSQL 18: NOT NULL constraints keep their names through renames; restore the 0003 names
-- (<table>_<column>_not_null). No-op before PostgreSQL 18.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.conrelid::regclass::text AS table_name,
               c.conname,
               cl.relname || '_' || a.attname || '_not_null' AS fresh_name
        FROM pg_constraint c
        JOIN pg_class cl ON cl.oid = c.conrelid
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'n'
          AND c.conrelid IN (to_regclass('llm_services'), to_regclass('embeddings'))
    LOOP
        IF r.conname <> r.fresh_name AND length(r.fresh_name) <= 63 THEN
            EXECUTE 'ALTER TABLE ' || r.table_name || ' RENAME CONSTRAINT '
                || quote_ident(r.conname) || ' TO ' || quote_ident(r.fresh_name);
        END IF;
    END LOOP;
END
$$;
