-- Roll back 0003: drop projects.public_read (which projects were public is lost).
ALTER TABLE projects DROP COLUMN public_read;
