"""SQL for similarity search. Connections come from the caller (any transaction).

A search is one statement: a UNION ALL of *arms*, each the top-k of one part of the project's rows of the query's
dimension, merged by distance then text_id (``search_sql``). The parts (``SearchPlan``, chosen by
``vdb_grpc.domain.search``):

- ``whole``: every row of the project (small projects, dimensions without any HNSW index), read through the
  ``(project_id, vector_dim, indexed, index_segment)`` btree and sorted exactly.
- one index arm per index segment (``embeddings_hnsw_<N>_<lo>_<hi>``, partial over
  ``vector_dim = N AND indexed AND index_segment BETWEEN lo AND hi``): iterative index scan, filters inside it.
  A freshly sealed segment is served by its *interim* index (``embeddings_ivf_<N>_<lo>_<hi>``, IVFFlat, same
  predicate and expression; built in seconds) until its HNSW index is valid: the arm's SQL is the same, the
  planner takes whichever valid index the predicate matches;
- exact arms for everything no HNSW arm covers: the not-yet-indexed rows (``NOT indexed``), segments sealed but
  whose index is still being built, and segments where the project has too few rows for a filtered index scan
  to find them. Each reads only that project's rows of that range, through the btree.

Every row of the project lies in exactly one arm (indexed or not; one segment label, in one range), so no row
is missing or returned twice, whatever index exists at the moment: the SQL never names an index. A partial HNSW
index is only usable when the arm repeats its predicate literally (``vector_dim = N``, ``index_segment BETWEEN
lo AND hi``), so N, lo and hi -- integers the domain layer reads from the catalog, never caller text -- are
formatted into the SQL; every value is bound. If an index named in a cached plan has been dropped meanwhile
(merged away), its arm is answered by the btree or by the merged index: slower for a moment, never wrong.

The similarity threshold is applied to the merged top-k, outside the index scan: inside it, an iterative
scan would walk the whole index whenever nothing qualifies. Because the rows passing a threshold are a prefix
of the distance order, "top-k then threshold" returns the same rows as "threshold then top-k".
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.db import mark_session_state

#: HNSW indexes on halfvec support at most this many dimensions; larger vectors are always searched exactly.
HNSW_MAX_DIMENSIONS = 4000

#: Name prefix of the HNSW indexes: ``embeddings_hnsw_<N>_<lo>_<hi>`` (segments lo..hi of dimension N); the
#: pre-segment ``embeddings_hnsw_<N>`` (0009) covers segment 0, the rows indexed before migration 0012.
HNSW_INDEX_PREFIX = "embeddings_hnsw_"
#: Name prefix of the *interim* indexes: ``embeddings_ivf_<N>_<lo>_<hi>``, IVFFlat over a freshly sealed segment,
#: built in seconds, serving it until its HNSW index is valid, then dropped (docs/search.md).
INTERIM_INDEX_PREFIX = "embeddings_ivf_"

_INDEX_NAME = re.compile(r"embeddings_(hnsw|ivf)_(\d+)(?:_(\d+)_(\d+))?")


def segment_index_name(dim: int, lo: int, hi: int) -> str:
    """Name of the partial HNSW index over segments ``lo``..``hi`` of dimension ``dim``."""
    return f"{HNSW_INDEX_PREFIX}{int(dim)}_{int(lo)}_{int(hi)}"


def interim_index_name(dim: int, lo: int, hi: int) -> str:
    """Name of the partial interim (IVFFlat) index over segments ``lo``..``hi`` of dimension ``dim``."""
    return f"{INTERIM_INDEX_PREFIX}{int(dim)}_{int(lo)}_{int(hi)}"


@dataclass(frozen=True)
class SegmentIndex:
    """One HNSW or interim index of the catalog: dimension, the segment range it covers, size, state."""

    name: str
    dim: int
    lo: int
    hi: int
    rows: int
    valid: bool
    legacy: bool = False  # the pre-segment embeddings_hnsw_<N>: predicate "indexed" only, treated as segment 0
    interim: bool = False  # an IVFFlat index serving a fresh segment until its HNSW index is valid

    @property
    def span(self) -> int:
        return self.hi - self.lo


def parse_index_name(name: str) -> tuple[int, int, int, bool, bool] | None:
    """(dim, lo, hi, legacy, interim) of an HNSW or interim index name, None for other names."""
    m = _INDEX_NAME.fullmatch(name)
    if m is None:
        return None
    interim = m.group(1) == "ivf"
    if m.group(3) is None:
        if interim:
            return None  # interim indexes always name their range
        return int(m.group(2)), 0, 0, True, False
    return int(m.group(2)), int(m.group(3)), int(m.group(4)), False, interim


SEGMENT_INDEXES = r"""
SELECT c.relname AS name, i.indisvalid AND i.indisready AS valid, greatest(c.reltuples, 0)::bigint AS rows
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'embeddings'::regclass
  AND (c.relname LIKE 'embeddings\_hnsw\_%' OR c.relname LIKE 'embeddings\_ivf\_%')
"""


async def segment_indexes(conn: asyncpg.Connection, dim: int | None = None) -> list[SegmentIndex]:
    """Every HNSW and interim index on embeddings (of ``dim`` only, if given), valid or not, from the catalog."""
    out = []
    for r in await conn.fetch(SEGMENT_INDEXES):
        parsed = parse_index_name(r["name"])
        if parsed is None or (dim is not None and parsed[0] != dim):
            continue
        d, lo, hi, legacy, interim = parsed
        out.append(SegmentIndex(r["name"], d, lo, hi, int(r["rows"]), bool(r["valid"]), legacy, interim))
    return sorted(out, key=lambda s: (s.dim, s.lo, s.hi, s.legacy, s.interim))


def cover(indexes: list[SegmentIndex]) -> tuple[SegmentIndex, ...]:
    """Valid indexes covering disjoint segment ranges, widest first (a merged index beats its parts), an HNSW
    index before an interim one over the same range."""
    chosen: list[SegmentIndex] = []
    for s in sorted((s for s in indexes if s.valid), key=lambda s: (-s.span, s.interim, -s.rows, s.legacy)):
        if all(s.hi < c.lo or s.lo > c.hi for c in chosen):
            chosen.append(s)
    return tuple(sorted(chosen, key=lambda s: s.lo))


def hnsw_covers(indexes: list[SegmentIndex]) -> dict[int, tuple[SegmentIndex, ...]]:
    """Per dimension, the ``cover`` of its valid HNSW indexes (interim ones left out): what the indexer counts as
    built."""
    hnsw = [i for i in indexes if not i.interim]
    return {dim: cover([i for i in hnsw if i.dim == dim]) for dim in {i.dim for i in hnsw}}


def uncovered(covered: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int | None], ...]:
    """The segment ranges (hi None: unbounded) outside the disjoint ``covered`` ranges, from 0 up."""
    out: list[tuple[int, int | None]] = []
    nxt = 0
    for lo, hi in sorted(covered):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    out.append((nxt, None))
    return tuple(out)


@dataclass(frozen=True)
class SearchPlan:
    """Which arms one search runs (see the module docstring).

    ``whole``: one exact arm over all the project's rows of the dimension; otherwise one index arm (HNSW or
    interim) per range in ``hnsw`` plus exact arms for the unindexed rows and for each range in ``exact`` (hi
    None: unbounded). The ranges of ``hnsw`` and ``exact`` together must cover every segment label exactly once.
    """

    whole: bool = True
    hnsw: tuple[tuple[int, int], ...] = ()
    exact: tuple[tuple[int, int | None], ...] = ()

    @property
    def kind(self) -> str:
        """Either "hnsw" (at least one arm uses an HNSW index) or "exact"."""
        return "hnsw" if not self.whole and self.hnsw else "exact"

    @classmethod
    def over(cls, hnsw: tuple[tuple[int, int], ...], exact: tuple[tuple[int, int], ...] = ()) -> SearchPlan:
        """HNSW arms for ``hnsw``, exact arms for ``exact`` and for every label outside both."""
        rest: list[tuple[int, int | None]] = sorted((*exact, *uncovered((*hnsw, *exact))), key=lambda r: r[0])
        merged: list[tuple[int, int | None]] = []
        for lo, hi in rest:  # adjacent exact ranges read as one arm (the same rows, one sort and plan node less)
            if merged and merged[-1][1] is not None and merged[-1][1] + 1 == lo:
                merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return cls(whole=False, hnsw=tuple(sorted(hnsw)), exact=tuple(merged))


EXACT = SearchPlan()


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


PROJECT_ROWS = """
SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE project_id = $1 AND vector_dim = $2 LIMIT $3) p
"""


async def project_rows(conn: asyncpg.Connection, project_id: int, dim: int, cap: int) -> int:
    """The project's rows of ``dim``, counted up to ``cap`` (an index-only walk of the segment btree)."""
    return int(await conn.fetchval(PROJECT_ROWS, project_id, dim, cap))


SEGMENT_ROWS = """
SELECT (SELECT count(*) FROM (
            SELECT 1 FROM embeddings e
            WHERE e.project_id = $1 AND e.vector_dim = $2 AND e.indexed AND e.index_segment BETWEEN s.lo AND s.hi
            LIMIT s.cap) x) AS n
FROM unnest($3::int[], $4::int[], $5::bigint[]) WITH ORDINALITY AS s (lo, hi, cap, i)
ORDER BY s.i
"""


async def segment_rows(
    conn: asyncpg.Connection, project_id: int, dim: int, ranges: list[tuple[int, int, int]]
) -> list[int]:
    """For each (lo, hi, cap): the project's indexed rows of ``dim`` in segments lo..hi, counted up to cap."""
    if not ranges:
        return []
    los, his, caps = zip(*ranges, strict=True)
    return [int(r["n"]) for r in await conn.fetch(SEGMENT_ROWS, project_id, dim, list(los), list(his), list(caps))]


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
#
# "(e.project_id = $2) IS TRUE" (the same rows: project_id is NOT NULL) keeps the segment btree's leading column
# out of the index arm's reach. With a plain "e.project_id = $2" the planner could answer the arm with the btree
# and a sort of the project's rows in the segment, and did whenever it underestimated them: it multiplies the
# project's share of the table by the segment's, as if independent, so a project that fills a segment of its own
# (a stream's) looks like a few hundred rows -- a 20,000-row project at 1536 dimensions was read exactly at
# 110-130 ms per search instead of 2-4 ms through its index. The domain layer has already decided that the
# project is large in this segment (choose_plan); the only alternatives left to the planner are the segment's
# partial index, or reading every project's rows of the segment.
_INDEX_ARM = """
    (SELECT e.embeddings_id, e.text_id, e.vector::halfvec({dim}) <=> $1 AS distance
     FROM embeddings e
     WHERE e.vector_dim = {dim} AND e.indexed{segments} AND (e.project_id = $2) IS TRUE
       AND e.text_id IS DISTINCT FROM $3
      {filters}
     ORDER BY e.vector::halfvec({dim}) <=> $1
     LIMIT $4)"""

# OFFSET 0 keeps the sort outside the scan: an exact arm over a segment range implies that segment's HNSW index
# predicate, and "ORDER BY distance LIMIT k" directly over the scan would let the planner answer it with an
# (approximate, and for a project absent from the segment very slow) index scan instead of the btree.
_EXACT_ARM = """
    (SELECT x.embeddings_id, x.text_id, x.distance FROM (
        SELECT e.embeddings_id, e.text_id, e.vector::halfvec({dim}) <=> $1 AS distance
        FROM embeddings e
        WHERE e.project_id = $2 AND e.vector_dim = {dim}{rows} AND e.text_id IS DISTINCT FROM $3
         {filters}
        OFFSET 0) x
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


def _range_sql(lo: int, hi: int | None) -> str:
    if hi is None:
        return f" AND e.index_segment >= {int(lo)}"
    if lo == hi:
        return f" AND e.index_segment = {int(lo)}"
    return f" AND e.index_segment BETWEEN {int(lo)} AND {int(hi)}"


def _hnsw_range_sql(lo: int, hi: int) -> str:
    # Always BETWEEN (the index predicate's form), so the planner proves the arm matches the partial index.
    return f" AND e.index_segment BETWEEN {int(lo)} AND {int(hi)}"


def search_sql(
    plan: SearchPlan, dim: int, n_exclude: int, n_require: int, *, include_text: bool, include_metadata: bool
) -> str:
    """The search statement for one plan and dimension (also what tests EXPLAIN)."""
    dim = int(dim)
    filters = _filters_sql(8, n_exclude, n_require)
    if plan.whole:
        arms = [_EXACT_ARM.format(dim=dim, rows="", filters=filters)]
    else:
        arms = [_INDEX_ARM.format(dim=dim, segments=_hnsw_range_sql(lo, hi), filters=filters) for lo, hi in plan.hnsw]
        arms.append(_EXACT_ARM.format(dim=dim, rows=" AND NOT e.indexed", filters=filters))
        arms += [
            _EXACT_ARM.format(dim=dim, rows=" AND e.indexed" + _range_sql(lo, hi), filters=filters)
            for lo, hi in plan.exact
        ]
    extra = ""
    if include_text:
        extra += ", e.text"
    if include_metadata:
        extra += ", e.metadata"
    join = " JOIN embeddings e ON e.embeddings_id = c.embeddings_id" if extra else ""
    return _OUTER.format(candidates="\n    UNION ALL".join(arms), extra=extra, join=join)


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
    plan: SearchPlan,
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
