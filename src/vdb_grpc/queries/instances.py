"""SQL for LLM service instances, their shares and their stored provider API keys.

No function here ever receives or returns a plaintext API key except the legacy column read by the
re-encryption (``StoredKey.legacy_plaintext``, kept out of ``repr``). Instances are returned with
``has_api_key`` instead of any key material.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from vdb_grpc.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound, VdbError


@dataclass(frozen=True)
class InstanceValues:
    """The values of an instance as written (identity plus every mutable column except the key)."""

    owner: str
    instance_handle: str
    endpoint: str
    description: str
    api_standard: str
    model: str
    dimensions: int
    context_limit: int


@dataclass(frozen=True)
class InstanceRow:
    """A stored instance, without any key material. ``instance_id`` is internal."""

    instance_id: int
    owner: str
    instance_handle: str
    endpoint: str
    description: str
    api_standard: str
    model: str
    dimensions: int
    context_limit: int
    #: "owner/definition_handle" of the definition it was made from; "" when none (or deleted).
    definition: str
    has_api_key: bool
    #: The reading user's role: "owner", "editor" or "reader"; None when read without a user or without access.
    role: str | None = None


@dataclass(frozen=True)
class StoredKey:
    """The stored key material of one instance (for re-encryption and checks; never sent to a client)."""

    instance_id: int
    owner: str
    instance_handle: str
    encrypted: bytes | None = field(repr=False)
    #: Plaintext left in the legacy ``api_key`` column by migration 0004 (None or "" when there is none).
    legacy_plaintext: str | None = field(repr=False)

    @property
    def name(self) -> str:
        """``owner/instance_handle``: also the associated data the key is bound to."""
        return f"{self.owner}/{self.instance_handle}"


HAS_KEY = "(i.api_key_encrypted IS NOT NULL OR coalesce(i.api_key, '') <> '')"

COLUMNS = f"""
i.instance_id, i.owner, i.instance_handle, i.endpoint, i.description, i.api_standard, i.model, i.dimensions,
i.context_limit,
CASE WHEN d.definition_id IS NULL THEN '' ELSE d.owner || '/' || d.definition_handle END AS definition,
{HAS_KEY} AS has_api_key
"""


def _row(r: asyncpg.Record) -> InstanceRow:
    return InstanceRow(
        instance_id=r["instance_id"],
        owner=r["owner"],
        instance_handle=r["instance_handle"],
        endpoint=r["endpoint"],
        description=r["description"] or "",
        api_standard=r["api_standard"],
        model=r["model"],
        dimensions=r["dimensions"],
        context_limit=r["context_limit"],
        definition=r["definition"],
        has_api_key=r["has_api_key"],
        role=r.get("role"),
    )


def _write_error(exc: asyncpg.PostgresError, v: InstanceValues) -> VdbError:
    """Domain error for a failed INSERT/UPDATE of an instance (unknown standard or owner, taken handle)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return AlreadyExists(
            f"instance {v.owner}/{v.instance_handle} already exists",
            field_violations=[FieldViolation("instance.instance_handle", "is already taken")],
        )
    if isinstance(exc, asyncpg.ForeignKeyViolationError) and exc.constraint_name == "llm_service_instances_owner_fkey":
        return NotFound.resource_missing("user", v.owner)
    # the only other foreign key these statements write is the API standard's
    return InvalidArgument.field("instance.api_standard", f"unknown API standard {v.api_standard!r}")


INSERT = f"""
WITH i AS (
    INSERT INTO llm_service_instances
        (owner, instance_handle, endpoint, description, api_standard, model, dimensions, context_limit,
         definition_id, api_key_encrypted)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    RETURNING *
)
SELECT {COLUMNS}, 'owner' AS role
FROM i LEFT JOIN llm_service_definitions d ON d.definition_id = i.definition_id
"""


async def insert_instance(
    conn: asyncpg.Connection, v: InstanceValues, *, definition_id: int | None, encrypted_key: bytes | None
) -> InstanceRow:
    """Create an instance with an already encrypted key (or none).

    Raises:
        AlreadyExists: the owner has an instance with that handle.
        InvalidArgument: the API standard does not exist.
        NotFound: the owner does not exist.
    """
    try:
        row = await conn.fetchrow(
            INSERT,
            v.owner,
            v.instance_handle,
            v.endpoint,
            v.description,
            v.api_standard,
            v.model,
            v.dimensions,
            v.context_limit,
            definition_id,
            encrypted_key,
        )
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _write_error(exc, v) from None
    return _row(row)


GET = f"""
SELECT {COLUMNS}, CASE WHEN i.owner = $3 THEN 'owner' ELSE s.role END AS role
FROM llm_service_instances i
LEFT JOIN llm_service_definitions d ON d.definition_id = i.definition_id
LEFT JOIN llm_service_instances_shared_with s ON s.instance_id = i.instance_id AND s.user_handle = $3
WHERE i.owner = $1 AND i.instance_handle = $2
"""


async def get_instance(
    conn: asyncpg.Connection, owner: str, handle: str, caller: str | None, *, for_update: bool = False
) -> InstanceRow | None:
    """The instance ``owner/handle`` with ``caller``'s role on it (None: no role, or no caller given)."""
    row = await conn.fetchrow(GET + (" FOR UPDATE OF i" if for_update else ""), owner, handle, caller)
    return _row(row) if row else None


# Owned and shared-with-caller instances (a user owns or has a share, never both: sharing with the owner is
# refused), or every instance for the admin ($1 NULL).
LIST = f"""
SELECT {COLUMNS}, CASE WHEN i.owner = $1 THEN 'owner' ELSE s.role END AS role
FROM llm_service_instances i
LEFT JOIN llm_service_definitions d ON d.definition_id = i.definition_id
LEFT JOIN llm_service_instances_shared_with s ON s.instance_id = i.instance_id AND s.user_handle = $1
WHERE ($1::text IS NULL OR i.owner = $1 OR s.user_handle IS NOT NULL)
  AND ($2::text IS NULL OR (i.owner, i.instance_handle) > ($2, $3::text))
ORDER BY i.owner, i.instance_handle
LIMIT $4
"""


async def list_instances(
    conn: asyncpg.Connection, caller: str | None, after: tuple[str, str] | None, limit: int
) -> list[InstanceRow]:
    """Instances ``caller`` owns or has shared (all for None), ordered by (owner, handle), after ``after``."""
    after_owner, after_handle = after if after else (None, None)
    return [_row(r) for r in await conn.fetch(LIST, caller, after_owner, after_handle, limit)]


# $9: whether the key changes; $10: the new encrypted key (NULL removes it). A changed key also clears the
# legacy plaintext column.
UPDATE = f"""
WITH i AS (
    UPDATE llm_service_instances
    SET endpoint = $2, description = $3, api_standard = $4, model = $5, dimensions = $6, context_limit = $7,
        api_key_encrypted = CASE WHEN $8::boolean THEN $9::bytea ELSE api_key_encrypted END,
        api_key = CASE WHEN $8::boolean THEN NULL ELSE api_key END,
        updated_at = now()
    WHERE instance_id = $1
    RETURNING *
)
SELECT {COLUMNS}
FROM i LEFT JOIN llm_service_definitions d ON d.definition_id = i.definition_id
"""


async def update_instance(
    conn: asyncpg.Connection,
    instance_id: int,
    v: InstanceValues,
    *,
    change_key: bool,
    encrypted_key: bytes | None,
) -> InstanceRow | None:
    """Overwrite the mutable columns; with ``change_key`` also replace (or, with None, remove) the key.

    Returns None when the instance is gone (``role`` of the result is not filled in).

    Raises:
        InvalidArgument: the API standard does not exist.
    """
    try:
        row = await conn.fetchrow(
            UPDATE,
            instance_id,
            v.endpoint,
            v.description,
            v.api_standard,
            v.model,
            v.dimensions,
            v.context_limit,
            change_key,
            encrypted_key,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise _write_error(exc, v) from None
    return _row(row) if row else None


PROJECTS_USING = """
SELECT p.owner, p.project_handle FROM projects p
WHERE p.llm_service_instance_id = $1
ORDER BY p.owner, p.project_handle
LIMIT $2
"""


async def projects_using(conn: asyncpg.Connection, instance_id: int, limit: int = 20) -> list[str]:
    """Up to ``limit`` projects ("owner/handle") bound to the instance."""
    return [f"{r['owner']}/{r['project_handle']}" for r in await conn.fetch(PROJECTS_USING, instance_id, limit)]


PROJECTS_WITH_EMBEDDINGS_USING = """
SELECT p.owner, p.project_handle FROM projects p
WHERE p.llm_service_instance_id = $1
  AND EXISTS (SELECT 1 FROM embeddings e WHERE e.project_id = p.project_id)
ORDER BY p.owner, p.project_handle
LIMIT $2
"""


async def projects_with_embeddings_using(conn: asyncpg.Connection, instance_id: int, limit: int = 20) -> list[str]:
    """Up to ``limit`` projects ("owner/handle") bound to the instance that hold embeddings."""
    rows = await conn.fetch(PROJECTS_WITH_EMBEDDINGS_USING, instance_id, limit)
    return [f"{r['owner']}/{r['project_handle']}" for r in rows]


PROJECTS_OF_USER_USING = """
SELECT p.owner, p.project_handle FROM projects p
WHERE p.llm_service_instance_id = $1 AND p.owner = $2
ORDER BY p.project_handle
LIMIT $3
"""


async def projects_of_user_using(conn: asyncpg.Connection, instance_id: int, user: str, limit: int = 20) -> list[str]:
    """Up to ``limit`` of ``user``'s projects ("owner/handle") bound to the instance."""
    return [
        f"{r['owner']}/{r['project_handle']}"
        for r in await conn.fetch(PROJECTS_OF_USER_USING, instance_id, user, limit)
    ]


# Unbinds projects (and their embeddings' instance reference) as DeleteUser with force does for other users'
# projects: they keep their embeddings and show instance_missing until rebound. $2 NULL: every owner's projects.
LOCK_BOUND_PROJECTS = """
SELECT project_id FROM projects
WHERE llm_service_instance_id = $1 AND ($2::text IS NULL OR owner = $2)
ORDER BY project_id
FOR UPDATE
"""


async def lock_bound_projects(conn: asyncpg.Connection, instance_id: int, owner: str | None) -> None:
    """Lock the projects bound to the instance (only ``owner``'s, or all for None) before the instance itself.

    Uploads lock their project, then its instance; a change that unbinds projects from an instance takes the
    same order (projects, then the instance row), so the two wait for each other instead of deadlocking.
    """
    await conn.execute(LOCK_BOUND_PROJECTS, instance_id, owner)


DETACH_PROJECTS = """
WITH detached AS (
    UPDATE projects p SET llm_service_instance_id = NULL, updated_at = now()
    WHERE p.llm_service_instance_id = $1 AND ($2::text IS NULL OR p.owner = $2)
    RETURNING p.project_id, p.owner, p.project_handle
),
unbound AS (
    UPDATE embeddings e SET llm_service_instance_id = NULL
    FROM detached d
    WHERE e.project_id = d.project_id AND e.llm_service_instance_id = $1
)
SELECT owner, project_handle FROM detached ORDER BY owner, project_handle
"""


async def detach_projects(conn: asyncpg.Connection, instance_id: int, owner: str | None) -> list[str]:
    """Unbind the projects bound to the instance (only ``owner``'s, or all for None); return their names."""
    return [f"{r['owner']}/{r['project_handle']}" for r in await conn.fetch(DETACH_PROJECTS, instance_id, owner)]


DELETE = "DELETE FROM llm_service_instances WHERE instance_id = $1"


async def delete_instance(conn: asyncpg.Connection, instance_id: int, name: str) -> bool:
    """Delete the instance (shares cascade); False when gone.

    Raises:
        FailedPrecondition: a project is bound to it (raced with the caller's own check).
    """
    try:
        return str(await conn.execute(DELETE, instance_id)) == "DELETE 1"
    except asyncpg.ForeignKeyViolationError:
        raise FailedPrecondition(f"instance {name} is used by a project") from None


# --- stored keys (re-encryption and sanity checks) -------------------------------------------------------------

STORED_KEY_COLUMNS = "instance_id, owner, instance_handle, api_key_encrypted, api_key"
HAS_KEY_MATERIAL = "(api_key_encrypted IS NOT NULL OR api_key IS NOT NULL)"


def _stored_key(r: asyncpg.Record) -> StoredKey:
    encrypted = r["api_key_encrypted"]
    return StoredKey(
        instance_id=r["instance_id"],
        owner=r["owner"],
        instance_handle=r["instance_handle"],
        encrypted=bytes(encrypted) if encrypted is not None else None,
        legacy_plaintext=r["api_key"],
    )


STORED_KEYS_AFTER = f"""
SELECT {STORED_KEY_COLUMNS} FROM llm_service_instances
WHERE {HAS_KEY_MATERIAL} AND instance_id > $1
ORDER BY instance_id
LIMIT $2
"""


async def stored_keys_after(conn: asyncpg.Connection, after_id: int, limit: int) -> list[StoredKey]:
    """Instances holding key material (encrypted or legacy plaintext), by id, after ``after_id``."""
    return [_stored_key(r) for r in await conn.fetch(STORED_KEYS_AFTER, after_id, limit)]


LOCK_STORED_KEY = f"SELECT {STORED_KEY_COLUMNS} FROM llm_service_instances WHERE instance_id = $1 FOR UPDATE"


async def lock_stored_key(conn: asyncpg.Connection, instance_id: int) -> StoredKey | None:
    """Lock the instance row (until the transaction ends) and return its key material; None when gone."""
    row = await conn.fetchrow(LOCK_STORED_KEY, instance_id)
    return _stored_key(row) if row else None


SET_ENCRYPTED_KEY = """
UPDATE llm_service_instances SET api_key_encrypted = $2, api_key = NULL, updated_at = now()
WHERE instance_id = $1
"""


async def set_encrypted_key(conn: asyncpg.Connection, instance_id: int, encrypted: bytes | None) -> None:
    """Store ``encrypted`` as the instance's key (None: no key) and clear the legacy plaintext column."""
    await conn.execute(SET_ENCRYPTED_KEY, instance_id, encrypted)
