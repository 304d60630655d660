"""SQL for similarity search. Connections come from the caller (any transaction).

Two plans, one statement shape (``search_sql``), chosen by ``vdb_grpc.domain.search``:

- ``exact``: every row of the project with the query's dimension, distance computed for each, top-k sorted.
  Served by the (project_id, text_id) btree. Used for small projects, for dimensions without an HNSW index
  (> 4000, or not built yet) and where the project is a tiny share of its dimension's index.
- ``hnsw``: the project's rows that the indexer has flipped to ``indexed`` come from the partial HNSW index
  ``embeddings_hnsw_<N>`` (iterative scan, filters applied inside the scan), the not-yet-indexed tail from an
  exact scan over ``embeddings_unindexed_idx``; both top-k lists are merged.

The index is only usable when the query repeats its expression and predicate literally:
``ORDER BY e.vector::halfvec(N) <=> $1`` with ``WHERE e.vector_dim = N AND e.indexed``. N is an integer the
domain layer derives from stored data (never caller text), so it is formatted into the SQL; every value is bound.

The similarity threshold is applied to the merged top-k, outside the index scan: inside it, an iterative
scan would walk the whole index whenever nothing qualifies. Because the rows passing a threshold are a prefix
of the distance order, "top-k then threshold" returns the same rows as "threshold then top-k".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import numpy as np

from vdb_grpc.db import mark_session_state

Plan = Literal["exact", "hnsw"]

#: HNSW indexes on halfvec support at most this many dimensions; larger vectors are always searched exactly.
HNSW_MAX_DIMENSIONS = 4000


def hnsw_index_name(dim: int) -> str:
    """Name of the partial HNSW index for vectors of ``dim`` dimensions."""
    return f"embeddings_hnsw_{int(dim)}"


@dataclass(frozen=True)
class MetadataFilter:
    """One metadata condition: the JSON value at ``path`` (a jsonb path) compared with ``value_json``."""

    path: tuple[str, ...]
    value_json: str


@dataclass(frozen=True)
class SearchHit:
    """One result row: distance is the cosine distance (similarity = 1 - distance)."""

    text_id: str
    distance: float
    text: str | None
    metadata: Any


@dataclass(frozen=True)
class StoredQuery:
    """The stored vector of a text_id used as a query."""

    vector: np.ndarray[Any, np.dtype[np.float32]]
    dim: int


STORED_VECTOR = """
SELECT vector, vector_dim FROM embeddings WHERE project_id = $1 AND text_id = $2
"""


async def stored_vector(conn: asyncpg.Connection, project_id: int, text_id: str) -> StoredQuery | None:
    """The vector stored for ``text_id`` in the project, or None."""
    row = await conn.fetchrow(STORED_VECTOR, project_id, text_id)
    if row is None:
        return None
    return StoredQuery(vector=row["vector"], dim=int(row["vector_dim"]))


PLAN_STATS = """
WITH ix AS (
    SELECT greatest(c.reltuples, 0)::bigint AS n
    FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid
    WHERE c.oid = to_regclass($2) AND i.indisvalid AND i.indisready
)
SELECT (SELECT n FROM ix) AS index_rows,
       (SELECT count(*) FROM (
            SELECT 1 FROM embeddings WHERE project_id = $1 LIMIT greatest($3, coalesce((SELECT n FROM ix), 0) / $4) + 1
        ) p) AS project_rows
"""


@dataclass(frozen=True)
class PlanStats:
    """What the plan choice needs: rows in the dimension's HNSW index (None: no usable index) and the
    project's row count, counted only up to the point where it no longer matters."""

    index_rows: int | None
    project_rows: int


async def plan_stats(
    conn: asyncpg.Connection, project_id: int, dim: int, exact_max_rows: int, min_share_divisor: int
) -> PlanStats:
    """Index size (from the catalog) and the project's size, counted up to the exact-plan limit + 1."""
    row = await conn.fetchrow(PLAN_STATS, project_id, hnsw_index_name(dim), exact_max_rows, min_share_divisor)
    index_rows = row["index_rows"]
    return PlanStats(index_rows=int(index_rows) if index_rows is not None else None, project_rows=row["project_rows"])


def _filters_sql(first_param: int, n_exclude: int, n_require: int) -> str:
    """Conditions on ``e.metadata``; parameters come in (path text[], value jsonb) pairs.

    ``#>`` gives SQL NULL for a missing key: ``IS DISTINCT FROM`` keeps such rows (exclude), ``=`` drops them
    (require). jsonb equality compares JSON values, so the string "1781" never equals the number 1781.
    """
    parts: list[str] = []
    p = first_param
    for _ in range(n_exclude):
        parts.append(f"AND (e.metadata #> ${p}::text[]) IS DISTINCT FROM ${p + 1}::jsonb")
        p += 2
    for _ in range(n_require):
        parts.append(f"AND (e.metadata #> ${p}::text[]) = ${p + 1}::jsonb")
        p += 2
    return "\n      ".join(parts)


# Parameters: $1 query halfvec, $2 project_id, $3 text_id to leave out (NULL: none), $4 k = offset + limit,
# $5 threshold (real), $6 offset, $7 limit, then the filters' (path, value) pairs.
_HNSW_CANDIDATES = """
    (SELECT e.embeddings_id, e.text_id, e.vector::halfvec({dim}) <=> $1 AS distance
     FROM embeddings e
     WHERE e.vector_dim = {dim} AND e.indexed AND e.project_id = $2 AND e.text_id IS DISTINCT FROM $3
      {filters}
     ORDER BY e.vector::halfvec({dim}) <=> $1
     LIMIT $4)
    UNION ALL
    (SELECT e.embeddings_id, e.text_id, e.vector::halfvec({dim}) <=> $1 AS distance
     FROM embeddings e
     WHERE e.project_id = $2 AND NOT e.indexed AND e.vector_dim = {dim} AND e.text_id IS DISTINCT FROM $3
      {filters}
     ORDER BY 3, 2
     LIMIT $4)"""

_EXACT_CANDIDATES = """
    (SELECT e.embeddings_id, e.text_id, e.vector::halfvec({dim}) <=> $1 AS distance
     FROM embeddings e
     WHERE e.project_id = $2 AND e.vector_dim = {dim} AND e.text_id IS DISTINCT FROM $3
      {filters}
     ORDER BY 3, 2
     LIMIT $4)"""

# The threshold is compared in float4, the precision it arrives in (a proto float): a result exactly at the
# threshold is kept even though 1 - distance carries float8 rounding.
_OUTER = """
WITH candidates AS ({candidates}
)
SELECT c.text_id, c.distance{extra}
FROM candidates c{join}
WHERE (1 - c.distance)::real >= $5::real
ORDER BY c.distance, c.text_id
OFFSET $6 LIMIT $7
"""


def search_sql(
    plan: Plan, dim: int, n_exclude: int, n_require: int, *, include_text: bool, include_metadata: bool
) -> str:
    """The search statement for one plan and dimension (also what tests EXPLAIN)."""
    dim = int(dim)
    filters = _filters_sql(8, n_exclude, n_require)
    template = _HNSW_CANDIDATES if plan == "hnsw" else _EXACT_CANDIDATES
    extra = ""
    if include_text:
        extra += ", e.text"
    if include_metadata:
        extra += ", e.metadata"
    join = " JOIN embeddings e ON e.embeddings_id = c.embeddings_id" if extra else ""
    return _OUTER.format(candidates=template.format(dim=dim, filters=filters), extra=extra, join=join)


def search_args(
    query: Any,
    project_id: int,
    leave_out: str | None,
    *,
    threshold: float,
    offset: int,
    limit: int,
    exclude: tuple[MetadataFilter, ...],
    require: tuple[MetadataFilter, ...],
) -> list[Any]:
    """Bound values for ``search_sql``, in parameter order."""
    args: list[Any] = [query, project_id, leave_out, offset + limit, threshold, offset, limit]
    for f in (*exclude, *require):
        args.extend((list(f.path), f.value_json))
    return args


async def search(
    conn: asyncpg.Connection,
    plan: Plan,
    dim: int,
    query: Any,
    project_id: int,
    leave_out: str | None,
    *,
    threshold: float,
    offset: int,
    limit: int,
    exclude: tuple[MetadataFilter, ...] = (),
    require: tuple[MetadataFilter, ...] = (),
    include_text: bool = False,
    include_metadata: bool = False,
) -> list[SearchHit]:
    """Run one search; rows ordered by distance, then text_id."""
    sql = search_sql(
        plan, dim, len(exclude), len(require), include_text=include_text, include_metadata=include_metadata
    )
    args = search_args(
        query, project_id, leave_out, threshold=threshold, offset=offset, limit=limit, exclude=exclude, require=require
    )
    rows = await conn.fetch(sql, *args)
    if include_metadata and len(rows) > OFF_LOOP_ROWS:  # parsing much JSON: off the event loop
        return await asyncio.to_thread(_hits, rows, include_text, include_metadata)
    return _hits(rows, include_text, include_metadata)


#: Results with metadata beyond this many are parsed in a worker thread.
OFF_LOOP_ROWS = 16


def _hits(rows: list[asyncpg.Record], include_text: bool, include_metadata: bool) -> list[SearchHit]:
    return [
        SearchHit(
            text_id=r["text_id"],
            distance=float(r["distance"]),
            text=r["text"] if include_text else None,
            metadata=json.loads(r["metadata"]) if include_metadata and r["metadata"] is not None else None,
        )
        for r in rows
    ]


async def set_hnsw_scan(conn: asyncpg.Connection, ef_search: int, max_scan_tuples: int) -> None:
    """Session scan settings: iterative (relaxed order; the statement re-sorts), ef_search, scan budget.

    One round trip (simple protocol, integers only). Session-level on purpose: the connection is marked so
    that the pool runs RESET ALL when it is released; nothing leaks to the next user, no transaction needed.
    """
    mark_session_state(conn)
    await conn.execute(
        "SET hnsw.iterative_scan = relaxed_order;"
        f" SET hnsw.ef_search = {int(ef_search)}; SET hnsw.max_scan_tuples = {int(max_scan_tuples)}"
    )
