-- Initial schema: the Go service dhamps-vdb v0.0.1 (users, roles, projects, API standards, LLM services, embeddings), so its databases can be adopted.
--
-- Column names, types and the index names (projects_handle, embeddings_text_id) follow the Go service, so an
-- existing database of it can be adopted with `yoyo mark` 0001-0003. Differences from its DDL, none of which
-- changes what it stores: timestamps default to now(), and foreign key columns are plain integers (the Go
-- service declared them SERIAL, which only added unused sequences). Its index llm_services_handle is not
-- created here (lookups go through the (owner, llm_service_handle) unique index); 0004 renames it if present.

-- pgvector supplies the halfvec type. IF NOT EXISTS: databases that already have it (or where only a
-- superuser may create it and an admin did so beforehand) pass. The rollback never drops it.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE users (
    user_handle varchar(20) PRIMARY KEY,
    name text,
    email text UNIQUE NOT NULL,
    -- SHA-256 hex digest of the user's key, never the key itself.
    vdb_api_key char(64) UNIQUE NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);

CREATE TABLE vdb_roles (
    vdb_role varchar(20) PRIMARY KEY
);

INSERT INTO vdb_roles (vdb_role) VALUES ('owner'), ('writer'), ('reader');

CREATE TABLE projects (
    project_id serial PRIMARY KEY,
    project_handle varchar(20) NOT NULL,
    owner varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    description text,
    metadata_scheme text,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    UNIQUE (owner, project_handle)
);

CREATE INDEX projects_handle ON projects (project_handle);

CREATE TABLE users_projects (
    user_handle varchar(20) REFERENCES users (user_handle) ON DELETE CASCADE,
    project_id integer REFERENCES projects (project_id) ON DELETE CASCADE,
    role varchar(20) NOT NULL REFERENCES vdb_roles (vdb_role),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (user_handle, project_id)
);

CREATE TABLE key_methods (
    key_method varchar(20) PRIMARY KEY
);

INSERT INTO key_methods (key_method) VALUES ('auth_bearer'), ('body_form'), ('query_param'), ('custom_header');

CREATE TABLE api_standards (
    api_standard_handle varchar(20) PRIMARY KEY,
    description text,
    key_method varchar(20) NOT NULL REFERENCES key_methods (key_method),
    key_field varchar(20),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);

CREATE TABLE llm_services (
    llm_service_id serial PRIMARY KEY,
    llm_service_handle varchar(20) NOT NULL,
    owner varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    endpoint text NOT NULL,
    description text,
    -- Plaintext provider key, as the Go service stored it; 0004 adds an encrypted column beside it.
    api_key text,
    api_standard varchar(20) NOT NULL REFERENCES api_standards (api_standard_handle),
    model text NOT NULL,
    dimensions integer NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    UNIQUE (owner, llm_service_handle)
);

CREATE TABLE users_llm_services (
    user_handle varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    llm_service_id integer NOT NULL REFERENCES llm_services (llm_service_id) ON DELETE CASCADE,
    role varchar(20) NOT NULL REFERENCES vdb_roles (vdb_role),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (user_handle, llm_service_id)
);

CREATE TABLE projects_llm_services (
    project_id integer NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    llm_service_id integer NOT NULL REFERENCES llm_services (llm_service_id) ON DELETE CASCADE,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, llm_service_id)
);

CREATE TABLE embeddings (
    embeddings_id serial PRIMARY KEY,
    text_id text,
    owner varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    project_id integer NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    llm_service_id integer NOT NULL REFERENCES llm_services (llm_service_id),
    text text,
    -- Dimension-less so one table holds every model's vectors; 0002 indexes each common size separately.
    vector halfvec NOT NULL,
    vector_dim integer NOT NULL,
    metadata jsonb,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    UNIQUE (text_id, owner, project_id, llm_service_id)
);

CREATE INDEX embeddings_text_id ON embeddings (text_id);
