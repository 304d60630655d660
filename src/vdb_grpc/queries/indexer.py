"""SQL of the background indexer (``vdb_grpc.indexer``). Connections come from the caller.

Index DDL cannot take bound parameters; the only values formatted into it are integers (dimension, segment
labels, build parameters) and index names the catalog returned and ``parse_index_name`` accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from vdb_grpc.db import IVFFLAT_PROBES, mark_session_state
from vdb_grpc.queries.search import interim_index_name, parse_index_name, segment_index_name

#: Key of the builder's advisory lock: one index build per database at a time. Two CREATE INDEX CONCURRENTLY
#: on one table cannot run together anyway (each takes SHARE UPDATE EXCLUSIVE, which conflicts with itself).
BUILD_LOCK_KEY = (0x76646278, 0)  # "vdbx"
#: Class of the per-dimension advisory locks held while flipping or sealing rows of one dimension.
FLIP_LOCK_CLASS = 0x76646279

#: HNSW build parameters (docs/search.md has the measurements behind them).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


def create_segment_index_sql(
    dim: int, lo: int, hi: int, *, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
) -> str:
    """``CREATE INDEX CONCURRENTLY`` of the partial HNSW index over segments lo..hi of ``dim`` (outside a
    transaction). The predicate is the one ``queries.search`` repeats in its HNSW arms."""
    dim, lo, hi = int(dim), int(lo), int(hi)
    return (
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {segment_index_name(dim, lo, hi)} ON embeddings"
        f" USING hnsw ((vector::halfvec({dim})) halfvec_cosine_ops)"
        f" WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
        f" WHERE vector_dim = {dim} AND indexed AND index_segment BETWEEN {lo} AND {hi}"
    )


#: Most lists of an interim index: with ``IVFFLAT_PROBES`` probed, a scan reads a tenth of its segment.
INTERIM_MAX_LISTS = 10 * IVFFLAT_PROBES
#: Rows per list of an interim index over a small segment (fewer lists, each probed list reads about this many).
INTERIM_ROWS_PER_LIST = 200


#: ``VDB_INDEX_INTERIM_MIN_ROWS`` counts rows of this many dimensions; see ``interim_rows_for``.
INTERIM_BASE_DIMENSIONS = 384


#: A segment a stream still writes into gets its interim index at this fraction of the rows a closed one needs
#: (its lists are not sized by its rows: ``interim_lists(growing=True)``), but at no fewer than
#: ``GROWING_INTERIM_FLOOR_ROWS`` (ten rows per list to train on) unless the setting itself is lower.
GROWING_INTERIM_DIVISOR = 4
GROWING_INTERIM_FLOOR_ROWS = 1000


def interim_rows_for(dim: int, min_rows: int, *, growing: bool = False) -> int:
    """Rows from which a segment of ``dim`` dimensions gets an interim index (0: never), ``min_rows`` being the
    threshold at ``INTERIM_BASE_DIMENSIONS``: wider vectors reach it at proportionally fewer rows, since reading
    a segment exactly costs rows x dimensions (20,000 rows at 384 dimensions, 5,000 at 1,536); a ``growing``
    segment (a stream still writes into it) at a quarter of those (5,000 at 384 dimensions, 1,250 at 1,536)."""
    if min_rows <= 0:
        return 0
    rows = min_rows if dim <= INTERIM_BASE_DIMENSIONS else max(1, min_rows * INTERIM_BASE_DIMENSIONS // dim)
    if growing:
        rows = max(rows // GROWING_INTERIM_DIVISOR, min(rows, GROWING_INTERIM_FLOOR_ROWS))
    return rows


def interim_lists(rows: int, *, growing: bool = False) -> int:
    """IVFFlat lists of the interim index over ``rows`` rows; ``growing``: over a segment a stream still writes
    into, which will hold many more rows than it was trained on (as many lists as any interim index)."""
    if growing:
        return INTERIM_MAX_LISTS
    return max(1, min(INTERIM_MAX_LISTS, int(rows) // INTERIM_ROWS_PER_LIST))


def create_interim_index_sql(dim: int, lo: int, hi: int, rows: int, *, growing: bool = False) -> str:
    """``CREATE INDEX CONCURRENTLY`` of the interim IVFFlat index over segments lo..hi of ``dim``: the same
    expression and predicate as the HNSW index (so the same search arm uses either), k-means over a sample."""
    dim, lo, hi = int(dim), int(lo), int(hi)
    lists = interim_lists(rows, growing=growing)
    return (
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {interim_index_name(dim, lo, hi)} ON embeddings"
        f" USING ivfflat ((vector::halfvec({dim})) halfvec_cosine_ops) WITH (lists = {lists})"
        f" WHERE vector_dim = {dim} AND indexed AND index_segment BETWEEN {lo} AND {hi}"
    )


def drop_index_sql(name: str) -> str:
    """``DROP INDEX CONCURRENTLY`` of an HNSW or interim index of embeddings (outside a transaction)."""
    if parse_index_name(name) is None:
        raise ValueError(f"not an HNSW or interim index name: {name!r}")
    return f"DROP INDEX CONCURRENTLY IF EXISTS {name}"


DIMS_WITH_BACKLOG = "SELECT DISTINCT vector_dim FROM embeddings WHERE NOT indexed ORDER BY 1"


async def dims_with_backlog(conn: asyncpg.Connection) -> list[int]:
    """Dimensions that have rows not yet indexed (reads only the unindexed rows)."""
    return [int(r[0]) for r in await conn.fetch(DIMS_WITH_BACKLOG)]


DIMS_IN_SEGMENT_ZERO = "SELECT DISTINCT vector_dim FROM embeddings WHERE indexed AND index_segment = 0 ORDER BY 1"


async def dims_in_segment_zero(conn: asyncpg.Connection) -> list[int]:
    """Dimensions with rows indexed before segments existed (a full scan: run once at start)."""
    return [int(r[0]) for r in await conn.fetch(DIMS_IN_SEGMENT_ZERO)]


BACKLOG_COUNT = """
SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE NOT indexed AND vector_dim = $1 LIMIT $2) b
"""


async def backlog_count(conn: asyncpg.Connection, dim: int, cap: int) -> int:
    """Unindexed rows of ``dim``, counted up to ``cap``."""
    return int(await conn.fetchval(BACKLOG_COUNT, dim, cap))


BACKLOG_BY_PROJECT = """
SELECT project_id, count(*) FROM (SELECT project_id FROM embeddings WHERE NOT indexed AND vector_dim = $1 LIMIT $2) b
GROUP BY 1
"""


async def backlog_by_project(conn: asyncpg.Connection, dim: int, cap: int) -> dict[int, int]:
    """Unindexed rows of ``dim`` per project (of the first ``cap`` found)."""
    return {int(r[0]): int(r[1]) for r in await conn.fetch(BACKLOG_BY_PROJECT, dim, cap)}


@dataclass(frozen=True)
class Segment:
    """One registered segment (a row of ``embedding_segments``).

    ``streamed``: opened by a streaming upload (``vdb_grpc.domain.stream_segments``), not sealed by the indexer;
    ``open``: ... and its lease still runs (the stream may write more rows into it: build nothing over it yet);
    ``age``: seconds since it was registered.
    """

    segment: int
    dim: int
    rows: int
    streamed: bool = False
    open: bool = False
    age: float = 0.0


SEGMENT_PROJECTS = """
SELECT index_segment, project_id, count(*) FROM embeddings WHERE vector_dim = $1 AND indexed GROUP BY 1, 2
"""


async def segment_projects(conn: asyncpg.Connection, dim: int) -> dict[int, dict[int, int]]:
    """Per segment label of ``dim``: rows per project (an index-only scan of the segment btree: ~0.1 s per
    million rows on 2 cores; the merge policy asks for it only when a merge may be due, and caches it)."""
    out: dict[int, dict[int, int]] = {}
    for label, project, rows in await conn.fetch(SEGMENT_PROJECTS, dim):
        out.setdefault(int(label), {})[int(project)] = int(rows)
    return out


NEW_SEGMENT = "INSERT INTO embedding_segments (vector_dim) VALUES ($1) RETURNING segment"


async def new_segment(conn: asyncpg.Connection, dim: int) -> int:
    """Register a new segment label for ``dim`` (labels only grow)."""
    return int(await conn.fetchval(NEW_SEGMENT, dim))


SEGMENTS = """
SELECT segment, vector_dim, sealed_rows, writing_until IS NOT NULL AS streamed,
       coalesce(writing_until > clock_timestamp(), false) AS open,
       extract(epoch FROM clock_timestamp() - created_at)::float8 AS age
FROM embedding_segments ORDER BY segment
"""


async def segments(conn: asyncpg.Connection) -> list[Segment]:
    """Every registered segment, oldest first."""
    return [
        Segment(int(r[0]), int(r[1]), int(r[2]), bool(r[3]), bool(r[4]), float(r[5]))
        for r in await conn.fetch(SEGMENTS)
    ]


FORGET_SEGMENT = "DELETE FROM embedding_segments WHERE segment = $1"


async def forget_segment(conn: asyncpg.Connection, segment: int) -> None:
    """Drop a registered segment that received no rows (nothing to build)."""
    await conn.execute(FORGET_SEGMENT, segment)


RELEASE_LOCK = """
SELECT coalesce(writing_until > clock_timestamp(), false) FROM embedding_segments WHERE segment = $1 FOR UPDATE
"""

RELEASE_ROWS = """
WITH released AS (
    UPDATE embeddings SET indexed = false, index_segment = 0
    WHERE vector_dim = $1 AND indexed AND index_segment = $2
    RETURNING 1
)
SELECT count(*) FROM released
"""


async def release_segment(conn: asyncpg.Connection, dim: int, segment: int) -> int | None:
    """Hand a closed segment's rows back to the backlog (unindexed) and forget the segment. None (and nothing
    changed) when it is gone or its lease runs again (its stream wrote a batch meanwhile). The rows are found
    through the segment btree (PostgreSQL 18 skips over its leading project_id)."""
    async with conn.transaction():
        still_open = await conn.fetchval(RELEASE_LOCK, segment)
        if still_open is None or still_open:
            return None
        n = int(await conn.fetchval(RELEASE_ROWS, dim, segment))
        await conn.execute(FORGET_SEGMENT, segment)
    return n


def _seal_chunk_sql(*, of_project: bool) -> str:
    project = " AND project_id = $4" if of_project else ""
    return f"""
WITH chunk AS (
    SELECT embeddings_id FROM embeddings
    WHERE NOT indexed AND vector_dim = $1{project}
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), sealed AS (
    UPDATE embeddings e SET indexed = true, index_segment = $3
    FROM chunk
    WHERE e.embeddings_id = chunk.embeddings_id
    RETURNING 1
), counted AS (
    SELECT count(*) AS n FROM sealed
), registered AS (
    UPDATE embedding_segments SET sealed_rows = sealed_rows + (SELECT n FROM counted) WHERE segment = $3
)
SELECT n FROM counted
"""


SEAL_CHUNK = _seal_chunk_sql(of_project=False)
#: ``SEAL_CHUNK`` for one project's rows only (a separate statement: a "$4 IS NULL OR ..." would cost the plan).
SEAL_PROJECT_CHUNK = _seal_chunk_sql(of_project=True)


async def seal_chunk(conn: asyncpg.Connection, dim: int, segment: int, size: int, project_id: int | None = None) -> int:
    """Mark up to ``size`` unindexed rows of ``dim`` (of ``project_id`` only, if given) as indexed in
    ``segment`` (inserting them into every valid or building index whose range holds the label) and count them
    into its ``sealed_rows``; rows locked by an upload in flight are skipped. Returns the number sealed."""
    if project_id is None:
        n = await conn.fetchval(SEAL_CHUNK, dim, size, segment)
    else:
        n = await conn.fetchval(SEAL_PROJECT_CHUNK, dim, size, segment, project_id)
    return int(n or 0)


@dataclass(frozen=True)
class BuildProgress:
    """A row of ``pg_stat_progress_create_index``."""

    phase: str
    tuples_done: int
    tuples_total: int


BUILD_PROGRESS = """
SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = $1
"""


async def build_progress(conn: asyncpg.Connection, pid: int) -> BuildProgress | None:
    """Progress of the index build running in backend ``pid`` (None: not building)."""
    r = await conn.fetchrow(BUILD_PROGRESS, pid)
    if r is None:
        return None
    return BuildProgress(str(r["phase"]), int(r["tuples_done"] or 0), int(r["tuples_total"] or 0))


PARALLEL_WORKERS = """
SELECT pid FROM pg_stat_activity WHERE leader_pid = $1 AND pid <> $1
"""


async def parallel_workers(conn: asyncpg.Connection, leader_pid: int) -> list[int]:
    """Backend ids of the parallel workers of backend ``leader_pid`` right now."""
    return [int(r["pid"]) for r in await conn.fetch(PARALLEL_WORKERS, leader_pid)]


async def try_lock(conn: asyncpg.Connection, key: tuple[int, int]) -> bool:
    """Session advisory lock; False when another worker (replica) holds it."""
    mark_session_state(conn)  # released explicitly; the pool's full reset is the safety net
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *key))


async def lock(conn: asyncpg.Connection, key: tuple[int, int]) -> None:
    """Session advisory lock, waiting for the holder (a short flip) to let go."""
    mark_session_state(conn)
    await conn.execute("SELECT pg_advisory_lock($1, $2)", *key)


async def unlock(conn: asyncpg.Connection, key: tuple[int, int]) -> None:
    """Release a lock taken by ``try_lock``."""
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", *key)


def flip_lock_key(dim: int) -> tuple[int, int]:
    """Advisory lock key for flipping / sealing rows of ``dim``."""
    return (FLIP_LOCK_CLASS, int(dim))


async def try_lock_indexer(conn: asyncpg.Connection) -> bool:
    """The builder's lock (``BUILD_LOCK_KEY``); False when another worker holds it."""
    return await try_lock(conn, BUILD_LOCK_KEY)


async def unlock_indexer(conn: asyncpg.Connection) -> None:
    """Release ``try_lock_indexer``'s lock."""
    await unlock(conn, BUILD_LOCK_KEY)
