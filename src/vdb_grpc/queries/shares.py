"""SQL for shares of projects, instances and definitions: one table per resource kind, the same shape each.

Each ``*_shared_with`` table holds ``(user_handle, <resource id>, role, created_at, updated_at)`` with the
primary key ``(user_handle, <resource id>)``; ``ShareTable`` names the table and id column, so the three kinds
share these statements. Table and column names are fixed constants, never client input.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from vdb_grpc.errors import NotFound


@dataclass(frozen=True)
class ShareRow:
    """One user's access to a shared resource."""

    user_handle: str
    role: str


@dataclass(frozen=True)
class ShareTable:
    """A ``*_shared_with`` table and the column holding the shared resource's id."""

    table: str
    id_column: str

    @property
    def upsert_sql(self) -> str:
        return f"""
INSERT INTO {self.table} (user_handle, {self.id_column}, role)
VALUES ($2, $1, $3)
ON CONFLICT (user_handle, {self.id_column}) DO UPDATE SET role = EXCLUDED.role, updated_at = now()
RETURNING user_handle, role
"""

    @property
    def delete_sql(self) -> str:
        return f"DELETE FROM {self.table} WHERE {self.id_column} = $1 AND user_handle = $2"

    @property
    def list_sql(self) -> str:
        return f"""
SELECT user_handle, role FROM {self.table}
WHERE {self.id_column} = $1 AND ($2::text IS NULL OR user_handle > $2)
ORDER BY user_handle
LIMIT $3
"""


DEFINITION_SHARES = ShareTable("llm_service_definitions_shared_with", "definition_id")
INSTANCE_SHARES = ShareTable("llm_service_instances_shared_with", "instance_id")
PROJECT_SHARES = ShareTable("projects_shared_with", "project_id")


async def upsert_share(
    conn: asyncpg.Connection, shares: ShareTable, resource_id: int, user_handle: str, role: str
) -> ShareRow:
    """Share the resource with ``user_handle`` as ``role``, or change the role of an existing share.

    Raises:
        NotFound: the user does not exist.
    """
    try:
        row = await conn.fetchrow(shares.upsert_sql, resource_id, user_handle, role)
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name == f"{shares.table}_user_handle_fkey":
            raise NotFound.resource_missing("user", user_handle) from None
        raise
    return ShareRow(user_handle=row["user_handle"], role=row["role"])


async def delete_share(conn: asyncpg.Connection, shares: ShareTable, resource_id: int, user_handle: str) -> bool:
    """Withdraw ``user_handle``'s share; False when there was none."""
    return str(await conn.execute(shares.delete_sql, resource_id, user_handle)) == "DELETE 1"


async def list_shares(
    conn: asyncpg.Connection, shares: ShareTable, resource_id: int, after: str | None, limit: int
) -> list[ShareRow]:
    """The resource's shares ordered by user handle, after ``after``."""
    rows = await conn.fetch(shares.list_sql, resource_id, after, limit)
    return [ShareRow(r["user_handle"], r["role"]) for r in rows]
