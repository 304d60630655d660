"""SQL for embeddings. One function per statement; connections come from the caller (any transaction).

Vectors travel in pgvector's binary ``halfvec`` format (``vdb_grpc.db``'s codec); uploads pass a whole batch
as arrays in one ``INSERT … SELECT FROM unnest(…) ON CONFLICT`` statement — one round trip, no temporary
table, and (measured) faster than COPY into a temporary table followed by the same upsert.

Lock order: the upsert inserts (and locks) a batch's rows in text_id order (byte order, ``COLLATE "C"``: cheap
and the same for every batch), whatever order the client sent. Two batches sharing text_ids then take their row
and unique-index locks in the same order, so one waits for the other instead of deadlocking with it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.queries.indexer import seal_chunk


@dataclass(frozen=True)
class UpsertCounts:
    """What one upsert statement did.

    Attributes:
        inserted: New rows.
        replaced: Rows that existed and were overwritten.
        new_without_metadata: text_ids of new rows stored without metadata (left out, nothing to keep).
    """

    inserted: int
    replaced: int
    new_without_metadata: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class EmbeddingRow:
    """A stored embedding. ``vector`` is None when it was not asked for; ``metadata`` is parsed JSON."""

    text_id: str
    vector_dim: int
    vector: np.ndarray[Any, np.dtype[np.float32]] | None
    text: str | None
    metadata: Any
    instance: str
    metadata_json_size: int = 0


UPSERT_EMBEDDINGS = """
WITH stored AS (
    INSERT INTO embeddings AS e
        (text_id, owner, project_id, llm_service_instance_id, text, vector, vector_dim, metadata, indexed,
         index_segment)
    SELECT u.text_id, $1, $2, $3, u.text, u.vector, $4, nullif(u.metadata, 'null'), $9::int IS NOT NULL,
           coalesce($9::int, 0)
    FROM unnest(
        $5::text[], $6::text[], $7::halfvec[],
        ARRAY(SELECT m FROM jsonb_array_elements($8::jsonb) WITH ORDINALITY AS j (m, i) ORDER BY i)
    ) AS u (text_id, text, vector, metadata)
    ORDER BY u.text_id COLLATE "C"
    ON CONFLICT (project_id, text_id) DO UPDATE SET
        vector = EXCLUDED.vector,
        vector_dim = EXCLUDED.vector_dim,
        llm_service_instance_id = EXCLUDED.llm_service_instance_id,
        text = COALESCE(EXCLUDED.text, e.text),
        metadata = COALESCE(EXCLUDED.metadata, e.metadata),
        indexed = EXCLUDED.indexed,
        index_segment = EXCLUDED.index_segment,
        updated_at = now()
    RETURNING xmax = 0 AS inserted, e.text_id, e.metadata IS NULL AS no_metadata
)
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS replaced,
       coalesce(array_agg(text_id) FILTER (WHERE inserted AND no_metadata), '{}') AS new_without_metadata
FROM stored
"""


async def upsert_embeddings(
    conn: asyncpg.Connection,
    *,
    owner: str,
    project_id: int,
    instance_id: int,
    dimensions: int,
    text_ids: list[str],
    texts: list[str | None],
    vectors: list[bytes],
    metadata_json: str,
    segment: int | None = None,
) -> UpsertCounts:
    """Insert or replace a batch (text_ids unique within it) as unindexed rows, or (``segment``) as rows indexed
    in that segment, which a streaming upload opened (``open_segment``) and no index covers yet.

    ``vectors`` are halfvec wire bytes of ``dimensions`` values each; ``metadata_json`` is a JSON array with one
    element per item (one parameter parses much faster than a ``jsonb[]`` of small documents). A None text or a
    null metadata element keeps the stored value of a replaced row (NULL for a new one: such rows are listed in
    ``new_without_metadata``, so a caller whose project requires metadata can refuse and roll back).
    """
    r = await conn.fetchrow(
        UPSERT_EMBEDDINGS,
        owner,
        project_id,
        instance_id,
        dimensions,
        text_ids,
        texts,
        vectors,
        metadata_json,
        segment,
    )
    return UpsertCounts(
        inserted=r["inserted"], replaced=r["replaced"], new_without_metadata=tuple(r["new_without_metadata"])
    )


# Segments of streaming uploads (docs/search.md, "Streamed uploads"): a stream that has sent many rows writes the
# rest straight into a segment of its own, so the indexer need not rewrite them to seal them. The segment's
# lease (``writing_until``) keeps the indexer from building an index over it while the stream writes; every
# batch renews it, the stream's end closes it. clock_timestamp(), not now(): a transaction's start time would
# let a lease be renewed after it ran out. Index bookkeeping lives in ``vdb_grpc.queries.indexer``.

OPEN_SEGMENT = """
INSERT INTO embedding_segments (vector_dim, writing_until)
VALUES ($1, clock_timestamp() + make_interval(secs => $2))
RETURNING segment
"""


async def open_segment(conn: asyncpg.Connection, dim: int, lease_seconds: float) -> int:
    """Register a new segment of ``dim`` for a stream, leased for ``lease_seconds``; its label."""
    return int(await conn.fetchval(OPEN_SEGMENT, dim, float(lease_seconds)))


RENEW_SEGMENT = """
UPDATE embedding_segments
SET sealed_rows = sealed_rows + $2, writing_until = clock_timestamp() + make_interval(secs => $3)
WHERE segment = $1 AND writing_until IS NOT NULL
RETURNING segment
"""


async def renew_segment(conn: asyncpg.Connection, segment: int, rows: int, lease_seconds: float) -> bool:
    """Count ``rows`` more rows into the stream's ``segment`` and renew its lease (in the batch's transaction,
    after its rows: the row lock it takes makes the stream's next batch wait here until this one commits).
    False when the segment is gone (its lease ran out and the indexer handed its rows back)."""
    return await conn.fetchval(RENEW_SEGMENT, segment, rows, float(lease_seconds)) is not None


UNINDEX_ROWS = """
UPDATE embeddings SET indexed = false, index_segment = 0
WHERE project_id = $1 AND text_id = ANY($2::text[])
"""


async def unindex_rows(conn: asyncpg.Connection, project_id: int, text_ids: list[str]) -> None:
    """Make rows just written into a segment that is gone ordinary unindexed rows again (same transaction)."""
    await conn.execute(UNINDEX_ROWS, project_id, text_ids)


LOCK_SEGMENT = "SELECT sealed_rows FROM embedding_segments WHERE segment = $1 FOR UPDATE"

CLOSE_SEGMENT = (
    "UPDATE embedding_segments SET writing_until = least(writing_until, clock_timestamp()) WHERE segment = $1"
)


async def close_segment(conn: asyncpg.Connection, segment: int, project_id: int, dim: int, room: int) -> int | None:
    """End a stream's lease on ``segment``, first moving up to ``room`` of the project's unindexed rows of
    ``dim`` into it (the stream's first batches, written before it had a segment: sealing them would take a
    segment, a build and a merge of their own). Rows locked by an upload in flight are skipped. Returns the
    rows adopted, None when the segment is gone."""
    async with conn.transaction():
        if await conn.fetchval(LOCK_SEGMENT, segment) is None:
            return None
        n = await seal_chunk(conn, dim, segment, max(int(room), 0), project_id)
        await conn.execute(CLOSE_SEGMENT, segment)
    return n


STORED_TEXT_IDS = "SELECT text_id FROM embeddings WHERE project_id = $1 AND text_id = ANY($2::text[])"


async def stored_text_ids(conn: asyncpg.Connection, project_id: int, text_ids: list[str]) -> list[str]:
    """Which of ``text_ids`` the project holds (one index probe each)."""
    return [r["text_id"] for r in await conn.fetch(STORED_TEXT_IDS, project_id, text_ids)]


_SELECT_EMBEDDING = """
SELECT e.text_id, e.vector_dim, {vector} AS vector, e.text, e.metadata,
       coalesce(i.owner || '/' || i.instance_handle, '') AS instance
FROM embeddings e
LEFT JOIN llm_service_instances i ON i.instance_id = e.llm_service_instance_id
"""

GET_EMBEDDING = _SELECT_EMBEDDING.format(vector="e.vector") + "WHERE e.project_id = $1 AND e.text_id = $2"


def _row(r: asyncpg.Record) -> EmbeddingRow:
    raw = r["metadata"]
    return EmbeddingRow(
        text_id=r["text_id"],
        vector_dim=r["vector_dim"],
        vector=r["vector"],
        text=r["text"],
        metadata=json.loads(raw) if raw is not None else None,
        instance=r["instance"],
        metadata_json_size=len(raw) if raw is not None else 0,
    )


async def get_embedding(conn: asyncpg.Connection, project_id: int, text_id: str) -> EmbeddingRow | None:
    """One embedding with its vector, or None."""
    r = await conn.fetchrow(GET_EMBEDDING, project_id, text_id)
    if r is None:
        return None
    if r["metadata"] is not None and len(r["metadata"]) > OFF_LOOP_JSON_CHARS:
        return await asyncio.to_thread(_row, r)
    return _row(r)


#: Metadata larger than this (JSON text, characters) is parsed in a worker thread.
OFF_LOOP_JSON_CHARS = 64 * 1024


LIST_EMBEDDINGS_WITH_VECTORS = (
    _SELECT_EMBEDDING.format(vector="e.vector")
    + "WHERE e.project_id = $1 AND ($2::text IS NULL OR e.text_id > $2) ORDER BY e.text_id LIMIT $3"
)
LIST_EMBEDDINGS = (
    _SELECT_EMBEDDING.format(vector="NULL::halfvec")
    + "WHERE e.project_id = $1 AND ($2::text IS NULL OR e.text_id > $2) ORDER BY e.text_id LIMIT $3"
)


async def list_embeddings(
    conn: asyncpg.Connection, project_id: int, after: str | None, limit: int, *, with_vectors: bool
) -> list[EmbeddingRow]:
    """Embeddings of a project ordered by text_id, after ``after`` (keyset pagination on the unique index)."""
    sql = LIST_EMBEDDINGS_WITH_VECTORS if with_vectors else LIST_EMBEDDINGS
    rows = await conn.fetch(sql, project_id, after, limit)
    if sum(len(r["metadata"] or "") for r in rows) > OFF_LOOP_JSON_CHARS:
        return await asyncio.to_thread(lambda: [_row(r) for r in rows])
    return [_row(r) for r in rows]


DELETE_EMBEDDING = "DELETE FROM embeddings WHERE project_id = $1 AND text_id = $2"


async def delete_embedding(conn: asyncpg.Connection, project_id: int, text_id: str) -> bool:
    """Delete one embedding; False when it was absent."""
    return str(await conn.execute(DELETE_EMBEDDING, project_id, text_id)) == "DELETE 1"


DELETE_ALL_EMBEDDINGS = "DELETE FROM embeddings WHERE project_id = $1"


async def delete_all_embeddings(conn: asyncpg.Connection, project_id: int) -> int:
    """Delete every embedding of a project; return how many there were."""
    status = str(await conn.execute(DELETE_ALL_EMBEDDINGS, project_id))
    return int(status.rsplit(" ", 1)[1])
