"""SearchSimilar: validation, permission, plan choice (exact vs HNSW) and the search itself (SPEC §8).

similarity = 1 - cosine distance; results with similarity >= threshold, most similar first, ties by text_id.
Only rows of the same project and of the query's dimension are compared, so a project whose instance changed
dimensions never errors. Plans (``vdb_grpc.queries.search.SearchPlan``):

- whole-project exact when the project is small (<= ``exact_max_rows`` rows of the dimension), when the
  dimension has no valid HNSW index (> 4000 dims, first build not finished), or when offset + limit is a large
  share of the project;
- otherwise one HNSW arm per index segment where the project has enough rows (more than ``exact_max_rows`` and at
  least 1/``min_share_divisor`` of the segment: below that a filtered index scan wades through other projects'
  rows and loses recall), and exact arms, each reading only this project's rows, for the rest (segments where
  the project is small, segments sealed but not built yet, rows not yet indexed).

Every arm returns exact results for the rows it sees; HNSW arms are approximate only through the index (recall
measured in docs/search.md). Every row lies in exactly one arm whatever the cached statistics say, so stale
statistics only make a search slower, never wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.auth import Principal
from vdb_grpc.cache import CoherentCache
from vdb_grpc.db import HNSW_MAX_SCAN_TUPLES
from vdb_grpc.domain.projects import ProjectAccess, resolve_project_access
from vdb_grpc.errors import FailedPrecondition, InvalidArgument, NotFound
from vdb_grpc.limits import show
from vdb_grpc.queries import search as q
from vdb_grpc.queries.search import EXACT, HNSW_MAX_DIMENSIONS, MetadataFilter, SearchPlan, SegmentIndex
from vdb_grpc.settings import Settings
from vdb_grpc.validation import check_handle

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_OFFSET = 10_000
DEFAULT_THRESHOLD = 0.5
MAX_CONDITIONS = 16
TEXT_ID_MAX = 1000
FLOAT16_MAX = 65504.0
#: Magnitudes up to 2**-25 (half the smallest float16 subnormal) round to zero when stored as halfvec.
FLOAT16_ROUNDS_TO_ZERO = 2.0**-25


@dataclass(frozen=True)
class Condition:
    """A metadata condition as the caller wrote it: ``key`` (dotted path) and a JSON value."""

    key: str
    value: Any


@dataclass(frozen=True)
class SearchQuery:
    """Input of SearchSimilar (exactly one of ``text_id`` and ``vector``)."""

    owner: str
    project_handle: str
    text_id: str | None = None
    vector: Sequence[float] | None = None
    limit: int = 0
    offset: int = 0
    threshold: float | None = None
    exclude: tuple[Condition, ...] = ()
    require: tuple[Condition, ...] = ()
    include_text: bool = False
    include_metadata: bool = False


@dataclass(frozen=True)
class SearchResult:
    """One result."""

    text_id: str
    similarity: float
    text: str | None = None
    metadata: dict[str, Any] | None = None


def check_query_vector(values: Sequence[float], dimensions: int, field: str = "vector") -> np.ndarray[Any, Any]:
    """The same value checks as uploads: length, finite, float16 range, not all zero.

    Raises:
        InvalidArgument: naming ``field``.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidArgument.field(field, "must not be empty")
    if arr.size != dimensions:
        raise InvalidArgument.field(
            field, f"has {arr.size} values but the project's instance has {dimensions} dimensions"
        )
    # One reduction answers all three value checks (NaN and infinity make the maximum non-finite).
    largest = float(np.max(np.abs(arr)))
    if not math.isfinite(largest):
        raise InvalidArgument.field(field, "values must be finite (no NaN or infinity)")
    if largest > FLOAT16_MAX:
        raise InvalidArgument.field(field, f"values must be within the float16 range (|x| <= {FLOAT16_MAX:g})")
    if largest <= FLOAT16_ROUNDS_TO_ZERO:
        raise InvalidArgument.field(field, "must not be the zero vector (cosine similarity is undefined)")
    return arr.astype(np.float32)


def metadata_filter(cond: Condition, field: str) -> MetadataFilter:
    """A dotted key and a JSON value → a jsonb path condition.

    Raises:
        InvalidArgument: empty key or path segment, or a value that is not JSON.
    """
    if not cond.key:
        raise InvalidArgument.field(f"{field}.key", "is required")
    path = tuple(cond.key.split("."))
    if any(part == "" for part in path):
        raise InvalidArgument.field(f"{field}.key", f"{show(cond.key)} has an empty path segment")
    try:
        value_json = json.dumps(cond.value, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidArgument.field(f"{field}.value", "must be a JSON value") from None
    return MetadataFilter(path=path, value_json=value_json)


@dataclass(frozen=True)
class ValidatedQuery:
    """A checked request (the vector is checked later, once the instance's dimensions are known)."""

    limit: int
    offset: int
    threshold: float
    exclude: tuple[MetadataFilter, ...]
    require: tuple[MetadataFilter, ...]


def validate(query: SearchQuery) -> ValidatedQuery:
    """Check everything that needs no database.

    Raises:
        InvalidArgument: naming the offending field.
    """
    check_handle(query.owner, "owner")
    check_handle(query.project_handle, "project_handle")
    if (query.text_id is None) == (query.vector is None):
        raise InvalidArgument.field("query", "give exactly one of text_id and vector")
    if query.text_id is not None and not (1 <= len(query.text_id) <= TEXT_ID_MAX):
        raise InvalidArgument.field("text_id", f"must be 1-{TEXT_ID_MAX} characters")
    limit = query.limit or DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument.field("limit", f"must be between 1 and {MAX_LIMIT} (0 = {DEFAULT_LIMIT})")
    if not 0 <= query.offset <= MAX_OFFSET:
        raise InvalidArgument.field("offset", f"must be between 0 and {MAX_OFFSET}")
    threshold = DEFAULT_THRESHOLD if query.threshold is None else float(query.threshold)
    if math.isnan(threshold) or not -1.0 <= threshold <= 1.0:
        raise InvalidArgument.field("threshold", "must be between -1 and 1")
    for name, conds in (("exclude", query.exclude), ("require", query.require)):
        if len(conds) > MAX_CONDITIONS:
            raise InvalidArgument.field(name, f"at most {MAX_CONDITIONS} conditions")
    return ValidatedQuery(
        limit=limit,
        offset=query.offset,
        threshold=threshold,
        exclude=tuple(metadata_filter(c, f"exclude[{i}]") for i, c in enumerate(query.exclude)),
        require=tuple(metadata_filter(c, f"require[{i}]") for i, c in enumerate(query.require)),
    )


#: A project's size is counted up to this many rows: enough for the deep-page rule at the largest offset + limit.
PROJECT_COUNT_CAP = 4 * (MAX_OFFSET + MAX_LIMIT) + 1


@dataclass(frozen=True)
class ProjectStats:
    """What the plan choice needs: the dimension's index segments (the disjoint valid cover), the project's
    rows of the dimension (counted up to ``PROJECT_COUNT_CAP``), and per segment the project's rows in it
    (counted up to ``segment_cap``; empty when the project is small enough for the whole-exact plan)."""

    segments: tuple[SegmentIndex, ...]
    project_rows: int
    segment_rows: tuple[int, ...] = ()


def segment_cap(segment: SegmentIndex, *, exact_max_rows: int, min_share_divisor: int) -> int:
    """Rows of a project in ``segment`` beyond which the segment is searched through its index (+1: counted so far)."""
    return max(exact_max_rows, segment.rows // min_share_divisor) + 1


def carry_over(
    stats: ProjectStats, segments: tuple[SegmentIndex, ...], cap: Callable[[SegmentIndex], int]
) -> ProjectStats | None:
    """The counts of ``stats`` carried over to a new index list, or None where they cannot be.

    A new index covers either old ranges (a merge: their counts add up; a count that reached its cap -- the
    project had at least that many rows there -- makes the merged one reach its cap too, ``cap`` giving a
    segment's cap) or labels no old index covered (a segment just built: counted as 0, so its rows are read by
    an exact arm, where they were read until now). An old range split by the new list (a merged index dropped
    by hand) cannot be carried over. Every row still lies in exactly one arm whatever the counts, so
    carried-over counts only ever cost speed or, for the moment until the recount, an HNSW arm instead of an
    exact one.
    """
    if not stats.segment_rows:
        return ProjectStats(segments, stats.project_rows)
    counts: list[int] = []
    for new in segments:
        n, saturated = 0, False
        for old, rows in zip(stats.segments, stats.segment_rows, strict=True):
            if new.lo <= old.lo and old.hi <= new.hi:
                n += rows
                saturated |= rows >= cap(old)
            elif old.lo <= new.hi and new.lo <= old.hi:
                return None  # overlaps without containing: a split
        counts.append(max(n, cap(new)) if saturated else n)
    return ProjectStats(segments, stats.project_rows, tuple(counts))


def choose_plan(stats: ProjectStats, k: int, *, exact_max_rows: int, min_share_divisor: int) -> SearchPlan:
    """The arms of one search (see the module docstring); ``k`` = offset + limit."""
    rows = stats.project_rows
    if not stats.segments or rows <= exact_max_rows or k * 4 >= rows:
        return EXACT
    hnsw: list[tuple[int, int]] = []
    exact: list[tuple[int, int]] = []
    for seg, n in zip(stats.segments, stats.segment_rows, strict=True):
        cap = segment_cap(seg, exact_max_rows=exact_max_rows, min_share_divisor=min_share_divisor)
        (hnsw if n >= cap else exact).append((seg.lo, seg.hi))
    if not hnsw:
        return EXACT
    return SearchPlan.over(tuple(hnsw), tuple(exact))


def describe_plan(plan: SearchPlan) -> str:
    """A plan in a log line: "exact (whole project)", or its index arms and exact arms as segment ranges."""
    if plan.whole:
        return "exact (whole project)"

    def ranges(rs: tuple[tuple[int, int | None], ...]) -> str:
        return ", ".join(f"{lo}-{'' if hi is None else hi}" if hi != lo else str(lo) for lo, hi in rs) or "none"

    return f"index arms over segments {ranges(plan.hnsw)}; exact arms: unindexed rows, segments {ranges(plan.exact)}"


class Search:
    """Use case SearchSimilar."""

    #: Told the plan of every search ("exact" or "hnsw"; metrics); set by the composition root.
    on_plan: Callable[[str], None] | None = None

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        exact_max_rows: int = 4000,
        min_share_divisor: int = 50,
        ef_search: int = Settings.hnsw_ef_search,
        max_scan_tuples: int = HNSW_MAX_SCAN_TUPLES,
        stats_ttl: float = 10.0,
        segments_ttl: float = 1.0,
        access_cache: CoherentCache[tuple[Principal, str, str], ProjectAccess] | None = None,
        slow_search_seconds: float = 1.0,
    ) -> None:
        """Args:
        pool: database pool.
        exact_max_rows: projects up to this many rows are searched exactly (measured crossover ~3,000).
        min_share_divisor: a project holding less than 1/this of its dimension's index is searched exactly.
        ef_search: HNSW candidate list size (raised to offset + limit when larger); the pool's sessions must
            start with the same value and ``max_scan_tuples`` (``db.hnsw_session_settings``), else each
            search sets them.
        max_scan_tuples: iterative scan budget (rows visited) before the index scan gives up.
        stats_ttl: seconds a project's size estimate is fresh (a stale size only shifts the plan choice). After
            that the next search still uses it and has it counted again in the background, so no search waits
            for the counting (up to ~70k index entries at 1M rows: the periodic p99 outlier it once was); only
            a changed index list (a build or merge finished) is counted on the search's path. 0: counted on
            every search.
        segments_ttl: seconds the list of a dimension's valid HNSW indexes is reused (a newly built or merged
            index is used this much later at most; one that was dropped is never needed for correctness).
        access_cache: recent read-permission checks (``vdb_grpc.cache``); None: checked on every search.
        slow_search_seconds: a search taking longer than this (plan and statement) is logged at WARNING with
            its plan and timings; 0: never.
        """
        self._pool = pool
        self.exact_max_rows = exact_max_rows
        self.min_share_divisor = min_share_divisor
        self.ef_search = ef_search
        self.max_scan_tuples = max_scan_tuples
        self._session_scan = (ef_search, max_scan_tuples)
        self._stats_ttl = stats_ttl
        self._stats: dict[tuple[int, int], tuple[float, ProjectStats]] = {}
        self._refreshing: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._segments_ttl = segments_ttl
        self._segments: dict[int, tuple[float, tuple[SegmentIndex, ...]]] = {}
        self._access_cache = access_cache
        self._slow_search_seconds = slow_search_seconds

    async def search(self, principal: Principal, query: SearchQuery) -> list[SearchResult]:
        """Run SearchSimilar for ``principal``.

        Raises:
            InvalidArgument, Unauthenticated, PermissionDenied, NotFound, FailedPrecondition.
        """
        v = validate(query)
        async with self._pool.acquire() as conn:
            access = await self._access(conn, principal, query.owner, query.project_handle)
            if query.text_id is not None:
                stored = await q.stored_vector(conn, access.project_id, query.text_id)
                if stored is None:
                    raise NotFound.resource_missing(
                        "embedding", f"{query.owner}/{query.project_handle}/{query.text_id}", query.owner
                    )
                vector: Any = stored.vector
                dim = stored.dim  # same-dimension rows only, even if the instance changed since
                leave_out: str | None = query.text_id
            else:
                if access.instance_id is not None and not access.instance_usable:
                    access.require_instance()  # refuses: the owner may no longer use the instance
                if access.dimensions is None:
                    raise FailedPrecondition(
                        f"project {query.owner}/{query.project_handle} has no LLM service instance; "
                        "bind one to search by vector"
                    )
                assert query.vector is not None
                vector = check_query_vector(query.vector, access.dimensions)
                dim = access.dimensions
                leave_out = None
            k = v.offset + v.limit
            started = time.perf_counter()
            plan = await self.plan_for(conn, access.project_id, dim, k)
            planned = time.perf_counter()
            if self.on_plan is not None:
                self.on_plan(plan.kind)
            if plan.kind == "hnsw":
                ef_search, scan_budget = max(self.ef_search, min(k, 1000)), max(self.max_scan_tuples, k * 20)
                if (ef_search, scan_budget) != self._session_scan:  # else the pool's session defaults apply
                    await q.set_hnsw_scan(conn, ef_search, scan_budget)
            hits = await q.search(
                conn,
                plan,
                dim,
                vector,
                access.project_id,
                leave_out,
                threshold=v.threshold,
                offset=v.offset,
                limit=v.limit,
                exclude=v.exclude,
                require=v.require,
                include_text=query.include_text,
                include_metadata=query.include_metadata,
            )
            done = time.perf_counter()
        if self._slow_search_seconds and done - started > self._slow_search_seconds:
            log.warning(
                "slow search: %.0f ms (plan %.1f ms, statement %.1f ms) in %s/%s: %d dimensions, k %d, %d filters, %s",
                (done - started) * 1000, (planned - started) * 1000, (done - planned) * 1000, query.owner,
                query.project_handle, dim, k, len(v.exclude) + len(v.require), describe_plan(plan),
            )  # fmt: skip
        return [
            SearchResult(text_id=h.text_id, similarity=1.0 - h.distance, text=h.text, metadata=h.metadata) for h in hits
        ]

    async def _access(
        self, conn: asyncpg.Connection, principal: Principal, owner: str, project_handle: str
    ) -> ProjectAccess:
        """The one project permission check (read: admin, owner, editor, reader, anyone if public_read),
        answered from the access cache while nothing has changed (refusals are never cached)."""

        async def check() -> ProjectAccess:
            return await resolve_project_access(conn, principal, owner, project_handle, "read")

        cache = self._access_cache
        if cache is None:
            return await check()
        access = await cache.get_or_load((principal, owner, project_handle), check)
        assert access is not None  # check() returns or raises
        return access

    async def plan_for(self, conn: asyncpg.Connection, project_id: int, dim: int, k: int) -> SearchPlan:
        """The plan for one search (index list cached ``segments_ttl``, project sizes ``stats_ttl`` seconds)."""
        if dim > HNSW_MAX_DIMENSIONS:
            return EXACT
        now = time.monotonic()
        cached_segments = self._segments.get(dim)
        if cached_segments is None or cached_segments[0] < now:
            segments = q.cover(await q.segment_indexes(conn, dim))
            self._segments[dim] = (now + self._segments_ttl, segments)
        else:
            segments = cached_segments[1]
        if not segments:
            return EXACT
        key = (project_id, dim)
        cached = self._stats.get(key)
        if cached is not None and self._stats_ttl > 0:
            expires, known = cached
            if known.segments == segments:
                if expires < now:
                    self._refresh_stats(key, segments)  # plan with the stale counts; no search waits
                return self._choose(known, k)
            carried = carry_over(known, segments, self._segment_cap)
            if carried is not None:  # an index was built or merged: carried-over counts, recounted meanwhile
                self._stats[key] = (now, carried)
                self._refresh_stats(key, segments)
                return self._choose(carried, k)
        stats = await self._project_stats(conn, project_id, dim, segments)
        self._store_stats(key, stats)
        return self._choose(stats, k)

    def _choose(self, stats: ProjectStats, k: int) -> SearchPlan:
        return choose_plan(stats, k, exact_max_rows=self.exact_max_rows, min_share_divisor=self.min_share_divisor)

    def _segment_cap(self, segment: SegmentIndex) -> int:
        return segment_cap(segment, exact_max_rows=self.exact_max_rows, min_share_divisor=self.min_share_divisor)

    def _store_stats(self, key: tuple[int, int], stats: ProjectStats) -> None:
        if len(self._stats) > 10_000:
            self._stats.clear()
        self._stats[key] = (time.monotonic() + self._stats_ttl, stats)

    def _refresh_stats(self, key: tuple[int, int], segments: tuple[SegmentIndex, ...]) -> None:
        """Count the project's rows again in the background (one task per project and dimension at a time)."""
        if key in self._refreshing:
            return

        async def refresh() -> None:
            try:
                async with self._pool.acquire() as conn:
                    stats = await self._project_stats(conn, key[0], key[1], segments)
                cached = self._stats.get(key)
                if cached is None or cached[1].segments == segments:  # not overtaken by a newer index list
                    self._store_stats(key, stats)
            except Exception as exc:  # the pool closing, the database restarting: the next search tries again
                log.debug("recounting project %d's rows failed: %r", key[0], exc)
            finally:
                self._refreshing.pop(key, None)

        self._refreshing[key] = asyncio.get_running_loop().create_task(refresh())

    async def _project_stats(
        self, conn: asyncpg.Connection, project_id: int, dim: int, segments: tuple[SegmentIndex, ...]
    ) -> ProjectStats:
        rows = await q.project_rows(conn, project_id, dim, PROJECT_COUNT_CAP)
        if rows <= self.exact_max_rows:
            return ProjectStats(segments, rows)
        caps = [(s.lo, s.hi, self._segment_cap(s)) for s in segments]
        return ProjectStats(segments, rows, tuple(await q.segment_rows(conn, project_id, dim, caps)))
