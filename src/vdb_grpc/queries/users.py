"""SQL for users. One function per statement; connections come from the caller (any transaction)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from vdb_grpc.errors import AlreadyExists, FieldViolation


@dataclass(frozen=True)
class UserRow:
    """A stored user (never the key hash)."""

    user_handle: str
    name: str
    email: str


@dataclass(frozen=True)
class MembershipRow:
    """A resource a user owns or has shared with them."""

    owner: str
    handle: str
    role: str


def _user(r: asyncpg.Record) -> UserRow:
    return UserRow(user_handle=r["user_handle"], name=r["name"] or "", email=r["email"])


def _unique_violation(exc: asyncpg.UniqueViolationError, handle: str, email: str) -> AlreadyExists:
    if exc.constraint_name == "users_email_key":
        return AlreadyExists(
            f"a user with email {email!r} already exists",
            field_violations=[FieldViolation("user.email", "is already used by another user")],
        )
    return AlreadyExists(
        f"user {handle!r} already exists",
        field_violations=[FieldViolation("user.user_handle", "is already taken")],
    )


INSERT_USER = """
INSERT INTO users (user_handle, name, email, vdb_api_key)
VALUES ($1, $2, $3, $4)
RETURNING user_handle, name, email
"""


async def insert_user(conn: asyncpg.Connection, handle: str, name: str, email: str, key_hash: str) -> UserRow:
    """Create a user. Raises AlreadyExists for a taken handle or email."""
    try:
        return _user(await conn.fetchrow(INSERT_USER, handle, name, email, key_hash))
    except asyncpg.UniqueViolationError as exc:
        raise _unique_violation(exc, handle, email) from None


GET_USER = "SELECT user_handle, name, email FROM users WHERE user_handle = $1"


async def get_user(conn: asyncpg.Connection, handle: str, *, for_update: bool = False) -> UserRow | None:
    """The user ``handle`` or None."""
    row = await conn.fetchrow(GET_USER + (" FOR UPDATE" if for_update else ""), handle)
    return _user(row) if row else None


USER_BY_KEY_HASH = "SELECT user_handle FROM users WHERE vdb_api_key = $1 AND user_handle NOT LIKE '\\_%'"


async def user_handle_by_key_hash(conn: asyncpg.Connection, key_hash: str) -> str | None:
    """The handle owning this key hash; built-in users (``_system``) never match."""
    value = await conn.fetchval(USER_BY_KEY_HASH, key_hash)
    return str(value) if value is not None else None


LIST_USERS = """
SELECT user_handle, name, email FROM users
WHERE user_handle NOT LIKE '\\_%' AND ($1::text IS NULL OR user_handle > $1)
ORDER BY user_handle
LIMIT $2
"""


async def list_users(conn: asyncpg.Connection, after: str | None, limit: int) -> list[UserRow]:
    """Users (without built-in ones) ordered by handle, after ``after``."""
    return [_user(r) for r in await conn.fetch(LIST_USERS, after, limit)]


UPDATE_USER = """
UPDATE users SET name = $2, email = $3, updated_at = now()
WHERE user_handle = $1
RETURNING user_handle, name, email
"""


async def update_user(conn: asyncpg.Connection, handle: str, name: str, email: str) -> UserRow | None:
    """Set name and email; None when the user is gone."""
    try:
        row = await conn.fetchrow(UPDATE_USER, handle, name, email)
    except asyncpg.UniqueViolationError as exc:
        raise _unique_violation(exc, handle, email) from None
    return _user(row) if row else None


SET_KEY_HASH = "UPDATE users SET vdb_api_key = $2, updated_at = now() WHERE user_handle = $1"


async def set_key_hash(conn: asyncpg.Connection, handle: str, key_hash: str) -> bool:
    """Replace the user's key hash; False when the user is gone."""
    return str(await conn.execute(SET_KEY_HASH, handle, key_hash)) == "UPDATE 1"


DEPENDENT_PROJECTS = """
SELECT p.owner, p.project_handle
FROM projects p
JOIN llm_service_instances i ON i.instance_id = p.llm_service_instance_id
WHERE i.owner = $1 AND p.owner <> $1
ORDER BY p.owner, p.project_handle
"""


async def dependent_projects(conn: asyncpg.Connection, handle: str) -> list[tuple[str, str]]:
    """Other users' projects bound to an instance owned by ``handle``."""
    return [(r["owner"], r["project_handle"]) for r in await conn.fetch(DEPENDENT_PROJECTS, handle)]


DETACH_DEPENDENT_PROJECTS = """
WITH doomed AS (SELECT instance_id FROM llm_service_instances WHERE owner = $1),
detached AS (
    UPDATE projects p SET llm_service_instance_id = NULL, updated_at = now()
    FROM doomed d
    WHERE p.llm_service_instance_id = d.instance_id AND p.owner <> $1
    RETURNING p.project_id
)
UPDATE embeddings e SET llm_service_instance_id = NULL
FROM doomed d
WHERE e.llm_service_instance_id = d.instance_id AND e.owner <> $1
"""


async def detach_dependent_projects(conn: asyncpg.Connection, handle: str) -> None:
    """Unbind other users' projects (and their embeddings' instance refs) from ``handle``'s instances."""
    await conn.execute(DETACH_DEPENDENT_PROJECTS, handle)


DELETE_OWN_PROJECTS = "DELETE FROM projects WHERE owner = $1"
DELETE_USER = "DELETE FROM users WHERE user_handle = $1"


async def delete_user(conn: asyncpg.Connection, handle: str) -> bool:
    """Delete the user and, by cascade, everything they own. False when absent.

    Projects go first: their binding to the user's instances is ON DELETE RESTRICT, which PostgreSQL checks
    before the cascade from users would remove the projects.
    """
    await conn.execute(DELETE_OWN_PROJECTS, handle)
    return str(await conn.execute(DELETE_USER, handle)) == "DELETE 1"


MEMBERSHIPS = """
SELECT 'project' AS kind, p.owner, p.project_handle AS handle, 'owner' AS role
FROM projects p WHERE p.owner = $1
UNION ALL
SELECT 'project', p.owner, p.project_handle, s.role
FROM projects_shared_with s JOIN projects p ON p.project_id = s.project_id WHERE s.user_handle = $1
UNION ALL
SELECT 'instance', i.owner, i.instance_handle, 'owner'
FROM llm_service_instances i WHERE i.owner = $1
UNION ALL
SELECT 'instance', i.owner, i.instance_handle, s.role
FROM llm_service_instances_shared_with s JOIN llm_service_instances i ON i.instance_id = s.instance_id
WHERE s.user_handle = $1
UNION ALL
SELECT 'definition', d.owner, d.definition_handle, 'owner'
FROM llm_service_definitions d WHERE d.owner = $1
UNION ALL
SELECT 'definition', d.owner, d.definition_handle, s.role
FROM llm_service_definitions_shared_with s JOIN llm_service_definitions d ON d.definition_id = s.definition_id
WHERE s.user_handle = $1
ORDER BY 1, 2, 3
"""


async def memberships(conn: asyncpg.Connection, handle: str) -> dict[str, list[MembershipRow]]:
    """Projects, instances and definitions ``handle`` owns or has shared with them, by kind."""
    out: dict[str, list[MembershipRow]] = {"project": [], "instance": [], "definition": []}
    for r in await conn.fetch(MEMBERSHIPS, handle):
        out[r["kind"]].append(MembershipRow(owner=r["owner"], handle=r["handle"], role=r["role"]))
    return out
