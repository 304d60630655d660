"""SQL for projects, their shares, the instance they are bound to, and what they need to know of their embeddings.

One function per statement; the connection comes from the caller so every function composes inside any
transaction. ``projects.metadata_scheme`` is the Go service's column name for what the API calls
``metadata_schema``; NULL (or an empty string left by the Go service) means "no schema".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from vdb_grpc.errors import AlreadyExists, FieldViolation, NotFound

#: Row lock taken on the project by ``get_project``: none, ``FOR SHARE`` (e.g. uploads: the project must not
#: change under them) or ``FOR UPDATE`` (changes to the project itself).
RowLock = Literal["none", "share", "update"]


@dataclass(frozen=True)
class ProjectRow:
    """A stored project, its bound instance (when it still has one) and the viewer's share role.

    Attributes:
        project_id: Surrogate key.
        owner: Handle of the owning user.
        project_handle: Handle, unique per owner.
        description: Free text ("" when unset).
        metadata_schema: JSON Schema text, or None when the project has none.
        public_read: Anyone may read the project and its embeddings.
        instance_id: Bound LLM service instance, None when it was removed (owner deleted with force).
        instance_owner: Owner of the bound instance (None with instance_id).
        instance_handle: Handle of the bound instance (None with instance_id).
        dimensions: Vector size of the bound instance (None with instance_id).
        share_role: The viewer's share role ("reader"/"editor"), None when not shared with them.
        instance_usable: The owner still owns the bound instance or has it shared (read by ``get_project``
            only; UnshareInstance unbinds projects, this guards against anything that bypassed it).
    """

    project_id: int
    owner: str
    project_handle: str
    description: str
    metadata_schema: str | None
    public_read: bool
    instance_id: int | None
    instance_owner: str | None
    instance_handle: str | None
    dimensions: int | None
    share_role: str | None
    instance_usable: bool = True


@dataclass(frozen=True)
class ListedProjectRow:
    """A project in a list, with the role the listing user has on it."""

    project: ProjectRow
    role: str


@dataclass(frozen=True)
class InstanceRef:
    """An LLM service instance as a project binding needs it, with a user's right to use it.

    Attributes:
        instance_id: Surrogate key.
        owner: Owner of the instance.
        instance_handle: Handle of the instance.
        dimensions: Vector size its embeddings have.
        user_role: The asking user's relation to it: "owner", "editor", "reader", or None (may not use it).
    """

    instance_id: int
    owner: str
    instance_handle: str
    dimensions: int
    user_role: str | None


def _project(r: asyncpg.Record) -> ProjectRow:
    return ProjectRow(
        project_id=r["project_id"],
        owner=r["owner"],
        project_handle=r["project_handle"],
        description=r["description"] or "",
        metadata_schema=r["metadata_scheme"] or None,
        public_read=bool(r["public_read"]),
        instance_id=r["instance_id"],
        instance_owner=r["instance_owner"],
        instance_handle=r["instance_handle"],
        dimensions=r["dimensions"],
        share_role=r["share_role"],
        instance_usable=r.get("instance_usable") is not False,
    )


def _json(value: Any) -> Any:
    """A jsonb value as Python data (asyncpg hands jsonb over as text unless a codec is installed)."""
    return json.loads(value) if isinstance(value, str) else value


PROJECT_SELECT = """
SELECT p.project_id, p.owner, p.project_handle, p.description, p.metadata_scheme, p.public_read,
       p.llm_service_instance_id AS instance_id, i.owner AS instance_owner, i.instance_handle, i.dimensions,
       s.role AS share_role,
       (i.owner = p.owner OR EXISTS (
           SELECT 1 FROM llm_service_instances_shared_with u
           WHERE u.instance_id = i.instance_id AND u.user_handle = p.owner
       )) AS instance_usable
FROM projects p
LEFT JOIN llm_service_instances i ON i.instance_id = p.llm_service_instance_id
LEFT JOIN projects_shared_with s ON s.project_id = p.project_id AND s.user_handle = $3
"""

GET_PROJECT = PROJECT_SELECT + "WHERE p.owner = $1 AND p.project_handle = $2"

_LOCK_CLAUSES: dict[str, str] = {"none": "", "share": " FOR SHARE OF p", "update": " FOR UPDATE OF p"}


async def get_project(
    conn: asyncpg.Connection, owner: str, handle: str, viewer: str | None, *, lock: RowLock = "none"
) -> ProjectRow | None:
    """The project ``owner/handle`` with ``viewer``'s share role (viewer None: no share role), or None.

    Args:
        conn: Connection (inside a transaction when ``lock`` is not "none").
        owner: Owner handle.
        handle: Project handle.
        viewer: The user whose share role to report.
        lock: Row lock to take on the project row.
    """
    row = await conn.fetchrow(GET_PROJECT + _LOCK_CLAUSES[lock], owner, handle, viewer)
    return _project(row) if row else None


LIST_PROJECTS = """
SELECT p.project_id, p.owner, p.project_handle, p.description, p.metadata_scheme, p.public_read,
       p.llm_service_instance_id AS instance_id, i.owner AS instance_owner, i.instance_handle, i.dimensions,
       s.role AS share_role,
       CASE WHEN $3 THEN 'admin'
            WHEN p.owner = $1 THEN 'owner'
            WHEN s.role IS NOT NULL THEN s.role
            ELSE 'public' END AS role
FROM projects p
LEFT JOIN llm_service_instances i ON i.instance_id = p.llm_service_instance_id
LEFT JOIN projects_shared_with s ON s.project_id = p.project_id AND s.user_handle = $1
WHERE ($3 OR p.owner = $1 OR s.user_handle IS NOT NULL OR ($2 AND coalesce(p.public_read, false)))
  AND ($4::text IS NULL OR (p.owner, p.project_handle) > ($4::text, $5::text))
ORDER BY p.owner, p.project_handle
LIMIT $6
"""


async def list_projects(
    conn: asyncpg.Connection,
    viewer: str | None,
    *,
    include_public: bool,
    everything: bool,
    after: tuple[str, str] | None,
    limit: int,
) -> list[ListedProjectRow]:
    """Projects ``viewer`` owns or has shared with them (+ public ones), each once, by (owner, handle).

    Args:
        conn: Connection.
        viewer: The listing user; None for anonymous callers (then only public projects can match).
        include_public: Also list other users' public projects (role "public").
        everything: List every project (role "admin"), for the admin.
        after: (owner, project_handle) of the last item of the previous page.
        limit: Most rows to return.
    """
    a_owner, a_handle = after if after else (None, None)
    rows = await conn.fetch(LIST_PROJECTS, viewer, include_public, everything, a_owner, a_handle, limit)
    return [ListedProjectRow(project=_project(r), role=r["role"]) for r in rows]


LOCK_INSTANCE_DIMENSIONS = "SELECT dimensions FROM llm_service_instances WHERE instance_id = $1 FOR SHARE"


async def lock_instance_dimensions(conn: asyncpg.Connection, instance_id: int) -> int | None:
    """Lock the instance row FOR SHARE and return its current dimensions (None when it is gone).

    A project row lock cannot cover its instance (FOR SHARE is not allowed on the nullable side of the outer
    join), so writers that depend on the instance's dimensions take this lock too: UpdateInstance's dimension
    change (FOR UPDATE) then waits for them and sees their embeddings, or they see the new dimensions.
    """
    value = await conn.fetchval(LOCK_INSTANCE_DIMENSIONS, instance_id)
    return int(value) if value is not None else None


GET_INSTANCE_FOR_USER = """
SELECT i.instance_id, i.owner, i.instance_handle, i.dimensions,
       CASE WHEN i.owner = $3 THEN 'owner' ELSE s.role END AS user_role
FROM llm_service_instances i
LEFT JOIN llm_service_instances_shared_with s ON s.instance_id = i.instance_id AND s.user_handle = $3
WHERE i.owner = $1 AND i.instance_handle = $2
FOR SHARE OF i
"""


async def get_instance_for_user(conn: asyncpg.Connection, owner: str, handle: str, user: str) -> InstanceRef | None:
    """The instance ``owner/handle`` and ``user``'s role on it (None when they may not use it); None if absent.

    Locks the instance row FOR SHARE so it can be neither deleted nor changed before the binding commits.
    """
    r = await conn.fetchrow(GET_INSTANCE_FOR_USER, owner, handle, user)
    if r is None:
        return None
    return InstanceRef(
        instance_id=r["instance_id"],
        owner=r["owner"],
        instance_handle=r["instance_handle"],
        dimensions=r["dimensions"],
        user_role=r["user_role"],
    )


USER_EXISTS = "SELECT EXISTS (SELECT 1 FROM users WHERE user_handle = $1)"


async def user_exists(conn: asyncpg.Connection, handle: str) -> bool:
    """True when the user ``handle`` exists."""
    return bool(await conn.fetchval(USER_EXISTS, handle))


INSERT_PROJECT = """
INSERT INTO projects (project_handle, owner, description, metadata_scheme, public_read, llm_service_instance_id)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING project_id
"""


def _project_exists(owner: str, handle: str, field: str) -> AlreadyExists:
    return AlreadyExists(
        f"project '{owner}/{handle}' already exists",
        field_violations=[FieldViolation(field, "is already taken by another project of this owner")],
    )


async def insert_project(
    conn: asyncpg.Connection,
    owner: str,
    handle: str,
    description: str,
    metadata_schema: str | None,
    public_read: bool,
    instance_id: int,
) -> int:
    """Create a project; return its id.

    Raises:
        AlreadyExists: the owner has a project with that handle.
        NotFound: the owner does not exist.
    """
    try:
        return int(
            await conn.fetchval(INSERT_PROJECT, handle, owner, description, metadata_schema, public_read, instance_id)
        )
    except asyncpg.UniqueViolationError:
        raise _project_exists(owner, handle, "project.project_handle") from None
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name == "projects_owner_fkey":
            raise NotFound.resource_missing("user", owner) from None
        raise  # the instance row is locked FOR SHARE by the caller, so this is a bug


UPDATE_PROJECT = """
UPDATE projects
SET description = $2, metadata_scheme = $3, public_read = $4, llm_service_instance_id = $5, updated_at = now()
WHERE project_id = $1
"""


async def update_project(
    conn: asyncpg.Connection,
    project_id: int,
    description: str,
    metadata_schema: str | None,
    public_read: bool,
    instance_id: int | None,
) -> bool:
    """Overwrite a project's mutable columns; False when it is gone."""
    status = await conn.execute(UPDATE_PROJECT, project_id, description, metadata_schema, public_read, instance_id)
    return str(status) == "UPDATE 1"


DELETE_PROJECT_EMBEDDINGS = "DELETE FROM embeddings WHERE project_id = $1"


async def delete_project_embeddings(conn: asyncpg.Connection, project_id: int) -> int:
    """Delete every embedding of a project; return how many there were."""
    status = str(await conn.execute(DELETE_PROJECT_EMBEDDINGS, project_id))
    return int(status.rsplit(" ", 1)[-1])


DELETE_PROJECT = "DELETE FROM projects WHERE project_id = $1"


async def delete_project(conn: asyncpg.Connection, project_id: int) -> bool:
    """Delete a project (its shares and any remaining embeddings go by cascade); False when it is gone."""
    return str(await conn.execute(DELETE_PROJECT, project_id)) == "DELETE 1"


COUNT_EMBEDDINGS = "SELECT count(*) FROM embeddings WHERE project_id = $1"


async def count_embeddings(conn: asyncpg.Connection, project_id: int) -> int:
    """Number of embeddings stored in a project."""
    return int(await conn.fetchval(COUNT_EMBEDDINGS, project_id))


HAS_EMBEDDINGS = "SELECT EXISTS (SELECT 1 FROM embeddings WHERE project_id = $1)"


async def has_embeddings(conn: asyncpg.Connection, project_id: int) -> bool:
    """True when the project stores at least one embedding."""
    return bool(await conn.fetchval(HAS_EMBEDDINGS, project_id))


HAS_EMBEDDINGS_OF_OTHER_DIMENSION = (
    "SELECT EXISTS (SELECT 1 FROM embeddings WHERE project_id = $1 AND vector_dim <> $2)"
)


async def has_embeddings_of_other_dimension(conn: asyncpg.Connection, project_id: int, dimensions: int) -> bool:
    """True when the project stores an embedding whose length is not ``dimensions``."""
    return bool(await conn.fetchval(HAS_EMBEDDINGS_OF_OTHER_DIMENSION, project_id, dimensions))


EMBEDDING_METADATA = """
SELECT text_id, metadata FROM embeddings WHERE project_id = $1 ORDER BY text_id
"""


async def iter_embedding_metadata(
    conn: asyncpg.Connection, project_id: int, chunk_size: int = 1000
) -> AsyncIterator[list[tuple[str, Any]]]:
    """Stream ``(text_id, metadata)`` of a project's embeddings in chunks, ordered by text_id.

    Uses a server-side cursor, so a project of millions of embeddings is never held in memory at once.
    Must run inside a transaction. Metadata comes decoded (None when the embedding has none).
    """
    cursor = await conn.cursor(EMBEDDING_METADATA, project_id)
    while True:
        rows = await cursor.fetch(chunk_size)
        if not rows:
            return
        yield [(r["text_id"], _json(r["metadata"])) for r in rows]


SET_PROJECT_OWNER = "UPDATE projects SET owner = $2, updated_at = now() WHERE project_id = $1"


async def set_project_owner(conn: asyncpg.Connection, project_id: int, new_owner: str, handle: str) -> None:
    """Give the project to ``new_owner``.

    Raises:
        AlreadyExists: ``new_owner`` already has a project called ``handle``.
        NotFound: ``new_owner`` does not exist.
    """
    try:
        await conn.execute(SET_PROJECT_OWNER, project_id, new_owner)
    except asyncpg.UniqueViolationError:
        raise _project_exists(new_owner, handle, "new_owner") from None
    except asyncpg.ForeignKeyViolationError:
        raise NotFound.resource_missing("user", new_owner) from None


SET_EMBEDDINGS_OWNER = "UPDATE embeddings SET owner = $2 WHERE project_id = $1 AND owner <> $2"


async def set_embeddings_owner(conn: asyncpg.Connection, project_id: int, new_owner: str) -> None:
    """Record ``new_owner`` as the owner of every embedding of the project (embeddings carry an owner column)."""
    await conn.execute(SET_EMBEDDINGS_OWNER, project_id, new_owner)
