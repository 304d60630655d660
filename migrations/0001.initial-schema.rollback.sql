-- Roll back 0001: drop every table of the initial schema (children first). The vector extension stays: other objects in the database may use it and dropping it needs more rights than creating tables.
DROP TABLE embeddings;
DROP TABLE projects_llm_services;
DROP TABLE users_llm_services;
DROP TABLE llm_services;
DROP TABLE api_standards;
DROP TABLE key_methods;
DROP TABLE users_projects;
DROP TABLE projects;
DROP TABLE vdb_roles;
DROP TABLE users;
