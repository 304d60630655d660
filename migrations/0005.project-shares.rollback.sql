-- 0005 rollback: restore users_projects (owner rows for every project plus the shares; editor stays editor,
-- a role 0004 added to vdb_roles) and drop projects_shared_with.

CREATE TABLE users_projects (
    user_handle varchar(20) NOT NULL REFERENCES users (user_handle) ON DELETE CASCADE,
    project_id integer NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    role varchar(20) NOT NULL REFERENCES vdb_roles (vdb_role),
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (user_handle, project_id)
);

INSERT INTO users_projects (user_handle, project_id, role, created_at, updated_at)
SELECT owner, project_id, 'owner', created_at, updated_at FROM projects;

INSERT INTO users_projects (user_handle, project_id, role, created_at, updated_at)
SELECT user_handle, project_id, role, created_at, updated_at FROM projects_shared_with;

DROP TABLE projects_shared_with;
