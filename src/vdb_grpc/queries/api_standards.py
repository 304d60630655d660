"""SQL for API standards."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from vdb_grpc.errors import AlreadyExists, FieldViolation


@dataclass(frozen=True)
class ApiStandardRow:
    """A stored API standard."""

    api_standard_handle: str
    description: str
    key_method: str
    key_field: str
    #: "openai", "cohere", "gemini", "ollama"; "" = the service cannot call this standard's providers.
    request_shape: str = ""
    #: An instance without a key is called without one.
    key_optional: bool = False
    #: Most texts per provider request; 0 = the shape's own limit.
    max_inputs: int = 0


def _row(r: asyncpg.Record) -> ApiStandardRow:
    return ApiStandardRow(
        api_standard_handle=r["api_standard_handle"],
        description=r["description"] or "",
        key_method=r["key_method"],
        key_field=r["key_field"] or "",
        request_shape=r["request_shape"] or "",
        key_optional=r["key_optional"],
        max_inputs=r["max_inputs"],
    )


COLUMNS = "api_standard_handle, description, key_method, key_field, request_shape, key_optional, max_inputs"

INSERT = f"""
INSERT INTO api_standards
    (api_standard_handle, description, key_method, key_field, request_shape, key_optional, max_inputs)
VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7)
RETURNING {COLUMNS}
"""


async def insert_api_standard(conn: asyncpg.Connection, s: ApiStandardRow) -> ApiStandardRow:
    """Create a standard; AlreadyExists when the handle is taken."""
    try:
        return _row(
            await conn.fetchrow(
                INSERT,
                s.api_standard_handle,
                s.description,
                s.key_method,
                s.key_field,
                s.request_shape,
                s.key_optional,
                s.max_inputs,
            )
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(
            f"API standard {s.api_standard_handle!r} already exists",
            field_violations=[FieldViolation("api_standard.api_standard_handle", "is already taken")],
        ) from None


GET = f"SELECT {COLUMNS} FROM api_standards WHERE api_standard_handle = $1"


async def get_api_standard(conn: asyncpg.Connection, handle: str, *, for_update: bool = False) -> ApiStandardRow | None:
    """The standard or None."""
    row = await conn.fetchrow(GET + (" FOR UPDATE" if for_update else ""), handle)
    return _row(row) if row else None


LIST = f"""
SELECT {COLUMNS} FROM api_standards
WHERE $1::text IS NULL OR api_standard_handle > $1
ORDER BY api_standard_handle
LIMIT $2
"""


async def list_api_standards(conn: asyncpg.Connection, after: str | None, limit: int) -> list[ApiStandardRow]:
    """Standards ordered by handle, after ``after``."""
    return [_row(r) for r in await conn.fetch(LIST, after, limit)]


UPDATE = f"""
UPDATE api_standards SET description = $2, key_method = $3, key_field = $4, request_shape = nullif($5, ''),
    key_optional = $6, max_inputs = $7, updated_at = now()
WHERE api_standard_handle = $1
RETURNING {COLUMNS}
"""


async def update_api_standard(conn: asyncpg.Connection, s: ApiStandardRow) -> ApiStandardRow | None:
    """Overwrite the mutable fields; None when absent."""
    row = await conn.fetchrow(
        UPDATE,
        s.api_standard_handle,
        s.description,
        s.key_method,
        s.key_field,
        s.request_shape,
        s.key_optional,
        s.max_inputs,
    )
    return _row(row) if row else None


USERS_OF = """
SELECT 'definition' AS kind, owner || '/' || definition_handle AS name
FROM llm_service_definitions WHERE api_standard = $1
UNION ALL
SELECT 'instance', owner || '/' || instance_handle FROM llm_service_instances WHERE api_standard = $1
ORDER BY 1, 2
LIMIT 20
"""


async def api_standard_users(conn: asyncpg.Connection, handle: str) -> list[tuple[str, str]]:
    """Up to 20 (kind, owner/handle) definitions and instances using the standard."""
    return [(r["kind"], r["name"]) for r in await conn.fetch(USERS_OF, handle)]


DELETE = "DELETE FROM api_standards WHERE api_standard_handle = $1"


async def delete_api_standard(conn: asyncpg.Connection, handle: str) -> bool:
    """Delete; False when absent. Raises ForeignKeyViolationError when still referenced."""
    return str(await conn.execute(DELETE, handle)) == "DELETE 1"
