"""SQL for AdminService: consistency checks (read only) and the reset of all users' data."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class DimensionMismatch:
    """A project whose embeddings do not fit its instance's dimensions."""

    project: str
    instance: str
    instance_dimensions: int
    embeddings: int
    found_dimensions: list[int]
    #: Number of such projects in the whole database (the query returns at most its limit).
    total: int


@dataclass(frozen=True)
class Named:
    """A resource named "owner/handle", with the number of such resources in the whole database."""

    name: str
    total: int
    count: int = 0


EMBEDDING_DIMENSION_MISMATCHES = """
SELECT p.owner || '/' || p.project_handle AS project,
       i.owner || '/' || i.instance_handle AS instance,
       i.dimensions,
       count(*) AS embeddings,
       array_agg(DISTINCT e.vector_dim ORDER BY e.vector_dim) AS found_dimensions,
       count(*) OVER () AS total
FROM embeddings e
JOIN projects p ON p.project_id = e.project_id
JOIN llm_service_instances i ON i.instance_id = p.llm_service_instance_id
WHERE e.vector_dim <> i.dimensions
GROUP BY p.owner, p.project_handle, i.owner, i.instance_handle, i.dimensions
ORDER BY p.owner, p.project_handle
LIMIT $1
"""


async def embedding_dimension_mismatches(conn: asyncpg.Connection, limit: int) -> list[DimensionMismatch]:
    """Projects holding embeddings whose ``vector_dim`` differs from the instance's ``dimensions``."""
    return [
        DimensionMismatch(
            project=r["project"],
            instance=r["instance"],
            instance_dimensions=r["dimensions"],
            embeddings=r["embeddings"],
            found_dimensions=list(r["found_dimensions"]),
            total=r["total"],
        )
        for r in await conn.fetch(EMBEDDING_DIMENSION_MISMATCHES, limit)
    ]


INCONSISTENT_VECTOR_DIMS = """
SELECT p.owner || '/' || p.project_handle AS name, count(*) AS n, count(*) OVER () AS total
FROM embeddings e JOIN projects p ON p.project_id = e.project_id
WHERE vector_dims(e.vector) <> e.vector_dim
GROUP BY p.owner, p.project_handle
ORDER BY p.owner, p.project_handle
LIMIT $1
"""


async def inconsistent_vector_dims(conn: asyncpg.Connection, limit: int) -> list[Named]:
    """Projects holding embeddings whose stored ``vector_dim`` is not the length of their vector."""
    return [Named(r["name"], r["total"], r["n"]) for r in await conn.fetch(INCONSISTENT_VECTOR_DIMS, limit)]


PROJECTS_WITHOUT_INSTANCE = """
SELECT owner || '/' || project_handle AS name, count(*) OVER () AS total
FROM projects WHERE llm_service_instance_id IS NULL
ORDER BY owner, project_handle
LIMIT $1
"""


async def projects_without_instance(conn: asyncpg.Connection, limit: int) -> list[Named]:
    """Projects not bound to any instance."""
    return [Named(r["name"], r["total"]) for r in await conn.fetch(PROJECTS_WITHOUT_INSTANCE, limit)]


PLAINTEXT_KEYS = """
SELECT owner || '/' || instance_handle AS name, count(*) OVER () AS total
FROM llm_service_instances WHERE coalesce(api_key, '') <> ''
ORDER BY owner, instance_handle
LIMIT $1
"""


async def instances_with_plaintext_keys(conn: asyncpg.Connection, limit: int) -> list[Named]:
    """Instances whose legacy ``api_key`` column still holds a plaintext key (never the key itself)."""
    return [Named(r["name"], r["total"]) for r in await conn.fetch(PLAINTEXT_KEYS, limit)]


# --- reset -----------------------------------------------------------------------------------------------------

# Writers wait until the reset has committed (readers go on), so nothing is inserted half-way through it.
LOCK_FOR_RESET = """
LOCK TABLE users, projects, embeddings, llm_service_instances, llm_service_definitions IN EXCLUSIVE MODE
"""


async def lock_for_reset(conn: asyncpg.Connection) -> None:
    """Block concurrent writes to the user-data tables until the transaction ends."""
    await conn.execute(LOCK_FOR_RESET)


# A reset of a large database may take longer than the service's statement timeout.
NO_STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = 0"


async def disable_statement_timeout(conn: asyncpg.Connection) -> None:
    """Lift the statement timeout for the rest of the transaction."""
    await conn.execute(NO_STATEMENT_TIMEOUT)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


DELETE_EMBEDDINGS = "DELETE FROM embeddings"


async def delete_all_embeddings(conn: asyncpg.Connection) -> int:
    """Delete every embedding; return how many."""
    return _count(await conn.execute(DELETE_EMBEDDINGS))


DELETE_PROJECTS = "DELETE FROM projects"


async def delete_all_projects(conn: asyncpg.Connection) -> int:
    """Delete every project (their shares cascade); return how many."""
    return _count(await conn.execute(DELETE_PROJECTS))


DELETE_INSTANCES = "DELETE FROM llm_service_instances"


async def delete_all_instances(conn: asyncpg.Connection) -> int:
    """Delete every instance (their shares cascade); return how many. Projects must be gone first."""
    return _count(await conn.execute(DELETE_INSTANCES))


DELETE_USER_DEFINITIONS = "DELETE FROM llm_service_definitions WHERE owner <> '_system'"


async def delete_user_definitions(conn: asyncpg.Connection) -> int:
    """Delete every definition not owned by ``_system``; return how many."""
    return _count(await conn.execute(DELETE_USER_DEFINITIONS))


DELETE_USERS = "DELETE FROM users WHERE user_handle <> '_system'"


async def delete_all_users(conn: asyncpg.Connection) -> int:
    """Delete every user but ``_system`` (their shares of ``_system``'s definitions cascade); return how many."""
    return _count(await conn.execute(DELETE_USERS))
