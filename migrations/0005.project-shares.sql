-- 0005: project shares move to their own table (like instance and definition shares) with roles reader/editor;
-- the owner is projects.owner alone, so the legacy owner rows of users_projects are not needed.
-- depends: 0004.llm-service-definitions-and-instances

CREATE TABLE projects_shared_with (
    user_handle varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    project_id integer NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    role varchar(20) NOT NULL REFERENCES vdb_roles (vdb_role),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (user_handle, project_id),
    CONSTRAINT projects_shared_with_role_check CHECK (role IN ('reader', 'editor'))
);
CREATE INDEX projects_shared_with_project_id_idx ON projects_shared_with (project_id);

INSERT INTO projects_shared_with (user_handle, project_id, role, created_at, updated_at)
SELECT up.user_handle, up.project_id,
       CASE up.role WHEN 'reader' THEN 'reader' ELSE 'editor' END,
       up.created_at, up.updated_at
FROM users_projects up
JOIN projects p ON p.project_id = up.project_id
WHERE up.user_handle <> p.owner;

DROP TABLE users_projects;
