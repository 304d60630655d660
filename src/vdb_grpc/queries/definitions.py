"""SQL for LLM service definitions and their shares. One function per statement; connections from the caller."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from vdb_grpc.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound, VdbError


@dataclass(frozen=True)
class DefinitionValues:
    """The values of a definition as written (identity plus every mutable column)."""

    owner: str
    definition_handle: str
    endpoint: str
    description: str
    api_standard: str
    model: str
    dimensions: int
    context_limit: int
    is_public: bool


@dataclass(frozen=True)
class DefinitionRow:
    """A stored definition. ``definition_id`` is internal (never shown to clients)."""

    definition_id: int
    owner: str
    definition_handle: str
    endpoint: str
    description: str
    api_standard: str
    model: str
    dimensions: int
    context_limit: int
    is_public: bool
    #: The caller's share role ("reader") when the row was read for a user with a share; else None.
    shared_role: str | None = None


COLUMNS = (
    "d.definition_id, d.owner, d.definition_handle, d.endpoint, d.description, d.api_standard, d.model, "
    "d.dimensions, d.context_limit, d.is_public"
)


def _row(r: asyncpg.Record) -> DefinitionRow:
    return DefinitionRow(
        definition_id=r["definition_id"],
        owner=r["owner"],
        definition_handle=r["definition_handle"],
        endpoint=r["endpoint"],
        description=r["description"] or "",
        api_standard=r["api_standard"],
        model=r["model"],
        dimensions=r["dimensions"],
        context_limit=r["context_limit"],
        is_public=r["is_public"],
        shared_role=r.get("shared_role"),
    )


def _write_error(exc: asyncpg.PostgresError, v: DefinitionValues) -> VdbError:
    """Domain error for a failed INSERT/UPDATE of a definition (unknown standard or owner, taken handle)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return AlreadyExists(
            f"definition {v.owner}/{v.definition_handle} already exists",
            field_violations=[FieldViolation("definition.definition_handle", "is already taken")],
        )
    if (
        isinstance(exc, asyncpg.ForeignKeyViolationError)
        and exc.constraint_name == "llm_service_definitions_owner_fkey"
    ):
        return NotFound.resource_missing("user", v.owner)
    # the only other foreign key these statements write is the API standard's
    return InvalidArgument.field("definition.api_standard", f"unknown API standard {v.api_standard!r}")


INSERT = f"""
WITH d AS (
    INSERT INTO llm_service_definitions
        (owner, definition_handle, endpoint, description, api_standard, model, dimensions, context_limit, is_public)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    RETURNING *
)
SELECT {COLUMNS} FROM d
"""


async def insert_definition(conn: asyncpg.Connection, v: DefinitionValues) -> DefinitionRow:
    """Create a definition.

    Raises:
        AlreadyExists: the owner has a definition with that handle.
        InvalidArgument: the API standard does not exist.
        NotFound: the owner does not exist.
    """
    try:
        row = await conn.fetchrow(
            INSERT,
            v.owner,
            v.definition_handle,
            v.endpoint,
            v.description,
            v.api_standard,
            v.model,
            v.dimensions,
            v.context_limit,
            v.is_public,
        )
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise _write_error(exc, v) from None
    return _row(row)


GET = f"""
SELECT {COLUMNS}, s.role AS shared_role
FROM llm_service_definitions d
LEFT JOIN llm_service_definitions_shared_with s ON s.definition_id = d.definition_id AND s.user_handle = $3
WHERE d.owner = $1 AND d.definition_handle = $2
"""


async def get_definition(
    conn: asyncpg.Connection, owner: str, handle: str, caller: str | None, *, for_update: bool = False
) -> DefinitionRow | None:
    """The definition ``owner/handle`` with ``caller``'s share role (None for no share or no caller)."""
    row = await conn.fetchrow(GET + (" FOR UPDATE OF d" if for_update else ""), owner, handle, caller)
    return _row(row) if row else None


# A user sees their own definitions, _system's, public ones and those shared with them; the admin ($1 NULL) all.
LIST = f"""
SELECT {COLUMNS}
FROM llm_service_definitions d
WHERE ($1::text IS NULL
       OR d.owner = $1 OR d.owner = '_system' OR d.is_public
       OR EXISTS (SELECT 1 FROM llm_service_definitions_shared_with s
                  WHERE s.definition_id = d.definition_id AND s.user_handle = $1))
  AND ($2::text IS NULL OR (d.owner, d.definition_handle) > ($2, $3::text))
ORDER BY d.owner, d.definition_handle
LIMIT $4
"""


async def list_definitions(
    conn: asyncpg.Connection, caller: str | None, after: tuple[str, str] | None, limit: int
) -> list[DefinitionRow]:
    """Definitions ``caller`` may read (all for None), ordered by (owner, handle), after ``after``."""
    after_owner, after_handle = after if after else (None, None)
    return [_row(r) for r in await conn.fetch(LIST, caller, after_owner, after_handle, limit)]


UPDATE = f"""
WITH d AS (
    UPDATE llm_service_definitions
    SET endpoint = $2, description = $3, api_standard = $4, model = $5, dimensions = $6, context_limit = $7,
        is_public = $8, updated_at = now()
    WHERE definition_id = $1
    RETURNING *
)
SELECT {COLUMNS} FROM d
"""


async def update_definition(conn: asyncpg.Connection, definition_id: int, v: DefinitionValues) -> DefinitionRow | None:
    """Overwrite the mutable columns; None when the definition is gone.

    Raises:
        InvalidArgument: the API standard does not exist.
    """
    try:
        row = await conn.fetchrow(
            UPDATE,
            definition_id,
            v.endpoint,
            v.description,
            v.api_standard,
            v.model,
            v.dimensions,
            v.context_limit,
            v.is_public,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise _write_error(exc, v) from None
    return _row(row) if row else None


DELETE = "DELETE FROM llm_service_definitions WHERE definition_id = $1"


async def delete_definition(conn: asyncpg.Connection, definition_id: int) -> bool:
    """Delete; instances made from it keep their values (their definition_id becomes NULL). False when gone."""
    return str(await conn.execute(DELETE, definition_id)) == "DELETE 1"
