-- Split LLM services into definitions (reusable templates, 5 built-in ones owned by _system) and instances (a user's own service, with an encrypted API key), as the Go service's refactor does, moving the existing data over.
-- depends: 0003.project-public-read
--
-- Data moves:
--   llm_services            -> llm_service_instances (ids, handles and plaintext api_key kept; the key is
--                              encrypted into api_key_encrypted, and api_key emptied, by the re-encryption run)
--   users_llm_services      -> llm_service_instances_shared_with, for users other than the owner
--                              (writer -> editor, reader -> reader, owner of someone else's service -> editor)
--   projects_llm_services   -> projects.llm_service_instance_id: the FIRST service linked to the project
--                              (earliest link, ties by lowest id); further links are dropped, embeddings made
--                              with those services keep pointing at them
--   embeddings.llm_service_id -> embeddings.llm_service_instance_id (same values)
-- Renamed objects (table, columns, sequence, constraints) get the names PostgreSQL would have chosen had they
-- been created under the new names, so a migrated database looks exactly like a fresh one.

-- Share roles are reader/editor from now on; owner/writer remain valid for rows written before.
INSERT INTO vdb_roles (vdb_role) VALUES ('editor') ON CONFLICT (vdb_role) DO NOTHING;

-- _system owns the built-in definitions. A stored key is the SHA-256 hex digest of a key ([0-9a-f]{64}), so
-- 64 '-' is a value no key hashes to: _system can never authenticate. A plain INSERT on purpose: if a user
-- called _system exists already, the migration fails (rename that user, then retry) rather than hand the
-- built-in definitions to someone who can log in.
INSERT INTO users (user_handle, name, email, vdb_api_key)
VALUES ('_system', 'System', '_system@vdb.invalid', repeat('-', 64));

-- The API standards the built-in definitions use. Existing rows of the same handle are left as they are.
-- created_at is copied from _system's: the rollback uses it to recognise (and remove) the rows inserted here.
INSERT INTO api_standards (api_standard_handle, description, key_method, key_field, created_at, updated_at)
SELECT s.api_standard_handle, s.description, s.key_method, s.key_field, u.created_at, u.created_at
FROM (
    VALUES
        ('openai',
         'OpenAI Embeddings API v1 (https://platform.openai.com/docs/api-reference/embeddings); key sent as Authorization: Bearer <key>',
         'auth_bearer', 'Authorization'),
        ('cohere',
         'Cohere Embed API v2 (https://docs.cohere.com/reference/embed); key sent as Authorization: Bearer <key>',
         'auth_bearer', 'Authorization'),
        ('gemini',
         'Google Gemini API embedContent (https://ai.google.dev/gemini-api/docs/embeddings); key sent in the x-goog-api-key header',
         'custom_header', 'x-goog-api-key')
) AS s (api_standard_handle, description, key_method, key_field)
CROSS JOIN users u
WHERE u.user_handle = '_system'
ON CONFLICT (api_standard_handle) DO NOTHING;

CREATE TABLE llm_service_definitions (
    definition_id serial PRIMARY KEY,
    -- 40, not 20 like the other handles: the built-in handle cohere-multilingual-v3 has 22 characters.
    definition_handle varchar(40) NOT NULL,
    owner varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    endpoint text NOT NULL,
    description text,
    api_standard varchar(20) NOT NULL REFERENCES api_standards (api_standard_handle),
    model text NOT NULL,
    dimensions integer NOT NULL CHECK (dimensions > 0),
    -- maximum input length in tokens
    context_limit integer NOT NULL CHECK (context_limit > 0),
    -- readable by every authenticated user
    is_public boolean NOT NULL DEFAULT false,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    UNIQUE (owner, definition_handle)
);

CREATE TABLE llm_service_definitions_shared_with (
    user_handle varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    definition_id integer NOT NULL REFERENCES llm_service_definitions (definition_id) ON DELETE CASCADE,
    role varchar(20) NOT NULL DEFAULT 'reader' REFERENCES vdb_roles (vdb_role),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (user_handle, definition_id)
);

-- The primary key serves "shared with user X"; this serves "shares of definition Y" and the cascade.
CREATE INDEX llm_service_definitions_shared_with_definition_id_idx
    ON llm_service_definitions_shared_with (definition_id);

INSERT INTO llm_service_definitions
    (definition_handle, owner, endpoint, description, api_standard, model, dimensions, context_limit, is_public)
VALUES
    ('openai-large', '_system', 'https://api.openai.com/v1/embeddings',
     'OpenAI text-embedding-3-large: 3072 dimensions, up to 8192 input tokens',
     'openai', 'text-embedding-3-large', 3072, 8192, true),
    ('openai-small', '_system', 'https://api.openai.com/v1/embeddings',
     'OpenAI text-embedding-3-small: 1536 dimensions, up to 8191 input tokens',
     'openai', 'text-embedding-3-small', 1536, 8191, true),
    ('cohere-v4', '_system', 'https://api.cohere.com/v2/embed',
     'Cohere embed-v4.0: 1536 dimensions, up to 128000 input tokens',
     'cohere', 'embed-v4.0', 1536, 128000, true),
    ('cohere-multilingual-v3', '_system', 'https://api.cohere.com/v2/embed',
     'Cohere embed-multilingual-v3.0: 1024 dimensions, up to 512 input tokens',
     'cohere', 'embed-multilingual-v3.0', 1024, 512, true),
    ('gemini-embedding-001', '_system',
     'https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:embedContent',
     'Google gemini-embedding-001: 3072 dimensions, up to 2048 input tokens',
     'gemini', 'gemini-embedding-001', 3072, 2048, true);

-- llm_services -> llm_service_instances, with every dependent name following.
ALTER TABLE llm_services RENAME TO llm_service_instances;
ALTER TABLE llm_service_instances RENAME COLUMN llm_service_id TO instance_id;
ALTER TABLE llm_service_instances RENAME COLUMN llm_service_handle TO instance_handle;
ALTER SEQUENCE llm_services_llm_service_id_seq RENAME TO llm_service_instances_instance_id_seq;
ALTER TABLE llm_service_instances RENAME CONSTRAINT llm_services_pkey TO llm_service_instances_pkey;
ALTER TABLE llm_service_instances
    RENAME CONSTRAINT llm_services_owner_llm_service_handle_key TO llm_service_instances_owner_instance_handle_key;
ALTER TABLE llm_service_instances RENAME CONSTRAINT llm_services_owner_fkey TO llm_service_instances_owner_fkey;
ALTER TABLE llm_service_instances
    RENAME CONSTRAINT llm_services_api_standard_fkey TO llm_service_instances_api_standard_fkey;
-- Only databases adopted from the Go service have this index (0001 does not create it).
ALTER INDEX IF EXISTS llm_services_handle RENAME TO llm_service_instances_handle;

ALTER TABLE llm_service_instances
    -- the definition the instance was made from; instances keep their copied values when it is deleted
    ADD COLUMN definition_id integer REFERENCES llm_service_definitions (definition_id) ON DELETE SET NULL,
    -- maximum input length in tokens; the default lets existing rows migrate
    ADD COLUMN context_limit integer NOT NULL DEFAULT 8192 CHECK (context_limit > 0),
    -- the provider key, encrypted by the application (the plaintext api_key column stays until re-encryption)
    ADD COLUMN api_key_encrypted bytea;

-- Serves the ON DELETE SET NULL when a definition is deleted.
CREATE INDEX llm_service_instances_definition_id_idx ON llm_service_instances (definition_id);

-- Existing instances of a model a built-in definition describes get that model's real context limit rather
-- than the generic default (definition_id stays NULL: they were not made from the definition).
UPDATE llm_service_instances i
SET context_limit = d.context_limit
FROM llm_service_definitions d
WHERE d.owner = '_system' AND d.model = i.model;

CREATE TABLE llm_service_instances_shared_with (
    user_handle varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    instance_id integer NOT NULL REFERENCES llm_service_instances (instance_id) ON DELETE CASCADE,
    role varchar(20) NOT NULL REFERENCES vdb_roles (vdb_role),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (user_handle, instance_id)
);

CREATE INDEX llm_service_instances_shared_with_instance_id_idx
    ON llm_service_instances_shared_with (instance_id);

-- Ownership now lives in llm_service_instances.owner only, so the owner's own rows are not copied.
INSERT INTO llm_service_instances_shared_with (user_handle, instance_id, role, created_at, updated_at)
SELECT uls.user_handle,
       uls.llm_service_id,
       CASE uls.role WHEN 'reader' THEN 'reader' ELSE 'editor' END,
       uls.created_at,
       uls.updated_at
FROM users_llm_services uls
JOIN llm_service_instances i ON i.instance_id = uls.llm_service_id
WHERE uls.user_handle <> i.owner;

DROP TABLE users_llm_services;

-- A project is bound to one instance. Nullable: projects that had no linked service keep none.
ALTER TABLE projects
    ADD COLUMN llm_service_instance_id integer REFERENCES llm_service_instances (instance_id) ON DELETE RESTRICT;

UPDATE projects p
SET llm_service_instance_id = first_link.llm_service_id
FROM (
    SELECT DISTINCT ON (project_id) project_id, llm_service_id
    FROM projects_llm_services
    ORDER BY project_id, created_at, llm_service_id
) AS first_link
WHERE first_link.project_id = p.project_id;

-- Serves "which projects use instance X" (the RESTRICT check on instance deletion, DeleteInstance's answer).
CREATE INDEX projects_llm_service_instance_id_idx ON projects (llm_service_instance_id);

DROP TABLE projects_llm_services;

ALTER TABLE embeddings RENAME COLUMN llm_service_id TO llm_service_instance_id;
ALTER TABLE embeddings RENAME CONSTRAINT embeddings_llm_service_id_fkey TO embeddings_llm_service_instance_id_fkey;
ALTER TABLE embeddings RENAME CONSTRAINT embeddings_text_id_owner_project_id_llm_service_id_key
    TO embeddings_text_id_owner_project_id_llm_service_instance_id_key;

-- PostgreSQL 18 keeps NOT NULL constraints in pg_constraint, named <table>_<column>_not_null, and does not
-- rename them with their table or column. Give the renamed ones their fresh names (no-op before PostgreSQL 18).
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
          AND c.conrelid IN (to_regclass('llm_service_instances'), to_regclass('embeddings'))
    LOOP
        IF r.conname <> r.fresh_name AND length(r.fresh_name) <= 63 THEN
            EXECUTE 'ALTER TABLE ' || r.table_name || ' RENAME CONSTRAINT '
                || quote_ident(r.conname) || ' TO ' || quote_ident(r.fresh_name);
        END IF;
    END LOOP;
END
$$;
