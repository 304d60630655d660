"""The background indexer: keeps every dimension's rows in HNSW index *segments*, never taking a live index away.

Uploads write ``indexed = false``; PostgreSQL never touches a partial index for rows outside its predicate, so
uploads cost no HNSW maintenance. This task, running in every server process, catches up (docs/search.md):

- **Seal and build.** A backlog of at least ``seal_min_rows`` rows of one dimension (or any backlog of a
  dimension without an index yet) is *sealed* (one project at a time where several have that many rows waiting:
  ``_seal``): up to ``seal_max_rows`` rows get ``indexed = true`` and a new segment label S (registered in
  ``embedding_segments``; no index holds S yet, so the UPDATE maintains no HNSW graph: ~30,000 rows/s). Then
  ``CREATE INDEX CONCURRENTLY embeddings_hnsw_<N>_<S>_<S>`` builds its graph in bulk beside the live indexes.
  Searches read sealed rows whose index is not valid yet exactly (that project's rows only), and switch to the
  new index as soon as it is valid.
- **Interim indexes.** A sealed segment of at least ``interim_min_rows`` rows first gets an IVFFlat index
  (``embeddings_ivf_<N>_<S>_<S>``: k-means over a sample, ~4 s for 100k x 384 where its HNSW build takes ~60 s),
  which serves it until the HNSW index is valid and is dropped then: searches read a tenth of the segment instead
  of all of it. While every sealed segment waiting for its HNSW build has an interim index, further backlog is
  sealed (and gets its interim index) before those builds run -- once the backlog stopped growing for
  ``SETTLE_SECONDS`` or fills a segment, so a long upload is not cut into many small segments.
- **Streamed segments.** A long stream writes its rows straight into a segment of its own
  (``vdb_grpc.domain.stream_segments``): no HNSW index is built over it while its lease runs
  (``Segment.open``; its interim index may be), afterwards it is built like a sealed one; a closed stream
  segment smaller than ``seal_min_rows`` (or any empty segment) is *released*: its rows go back to the backlog
  and the segment is forgotten.
- **Trickle.** Smaller backlogs are flipped in chunks into a segment that has a valid index (inserting into its
  graph, ~300 rows/s per core), so a few fresh rows are indexed within seconds: each project's rows into the
  segment where it has the most rows, else the newest (``_trickle_label``).
- **Merge.** When a project is searched through more than ``max_segments`` index segments, its smallest
  adjacent pair is merged (into at most ``MERGED_MAX_SEALS`` x ``seal_max_rows`` rows) -- never into a graph of
  another project's rows (``indexing.merge_policy``: rows inserted late into a graph of others are hard to reach
  in it); past ``HARD_FACTOR`` x ``max_segments`` indexes of a dimension the smallest pair whatever it mixes.
  One index over both label ranges is built beside them (no row is rewritten), searches switch to it when
  valid, then the parts are dropped; never across a segment between them that has no index yet.
- **Giving way.** A running build is cancelled (and tried again later) when rows that no index serves wait for
  work behind it (``_build_yields``): a merge gives way to any fresh work -- unless it is about to finish, or
  a project it joins is already searched through twice ``max_segments`` segments (merges must not starve under
  a steady stream of fresh rows: ``merge_policy.merge_must_finish``); a segment's HNSW build gives way to a seal
  or an interim build (a new upload's rows, read exactly until then, wait seconds instead of the build's
  minutes; the segment itself stays served by its interim index) -- unless it is about to finish, and only once
  per segment, so its work is thrown away at most once.
- **Crash leftovers.** An index left INVALID by a killed build is dropped and rebuilt; a registered segment
  without a valid index (a build that never finished, an index dropped by hand) is rebuilt; rows indexed before
  segments existed (segment 0, the old ``embeddings_hnsw_<N>``) get ``embeddings_hnsw_<N>_0_0`` beside the old
  index, which is dropped afterwards.

Locks: builds take one session advisory lock per database (``BUILD_LOCK_KEY``; two CREATE INDEX CONCURRENTLY on
one table cannot run at once); flips and seals of one dimension take a per-dimension lock, so a long build of
one dimension never blocks indexing rows elsewhere. Builds run in their own task: trickle flips go on meanwhile.
VACUUM waits for no build (``SKIP_LOCKED``: a build holds the lock VACUUM needs); it runs after every build and
after every ``VACUUM_AFTER_FLIPS`` flipped rows.

``status()`` returns an ``IndexerStatus`` snapshot (backlog per dimension, the build in progress with its rate
and ETA, recent build durations) for metrics; progress is also logged every ``progress_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import asyncpg

from vdb_grpc.db import mark_session_state
from vdb_grpc.indexing.merge_policy import Composition, choose_merge, merge_must_finish
from vdb_grpc.indexing.priority import renice, renice_workers
from vdb_grpc.indexing.sizing import BuildResources, build_resources
from vdb_grpc.queries import indexer as q
from vdb_grpc.queries import search as qs
from vdb_grpc.queries.search import HNSW_MAX_DIMENSIONS, SegmentIndex

log = logging.getLogger(__name__)


#: Flipped rows (each an UPDATE) between two VACUUMs of the table; see ``Indexer._vacuum``.
VACUUM_AFTER_FLIPS = 5000
#: A running merge or segment build expected to finish within this many seconds is not cancelled for fresh work
#: (``Indexer._build_yields``). Was 30 (merges only): in the 200k x 1536 bench a new project's stream waited 40 s
#: behind a 30k-row merge for its interim index (a 1-3 s build), its rows read exactly at 110-130 ms per search
#: meanwhile; a cancelled build only loses its progress.
BUILD_FINISH_SECONDS = 10.0
#: A backlog is sealed ahead of pending HNSW builds (see Interim indexes) once it has not grown for this long.
SETTLE_SECONDS = 2.0
#: While a stream writes into a segment of a dimension, that dimension's HNSW builds and merges wait -- unless a
#: segment has waited this long for its build (``Indexer._jobs``).
STREAM_HOLD_SECONDS = 600.0
#: Jobs for rows that no index serves yet: a running merge gives way to them (``Indexer._build_yields``).
FRESH_WORK = ("seal", "interim", "segment")
#: What a running build gives way to, by its kind: a merge to any fresh work; a segment's HNSW build to the
#: seconds-long work that gets rows no index serves an index at all (its own rows are served by its interim
#: index meanwhile; other segments' HNSW builds wait their turn).
YIELDS_TO: Mapping[str, tuple[str, ...]] = MappingProxyType({"merge": FRESH_WORK, "segment": ("seal", "interim")})
#: Recent builds kept for ``status()``.
RECENT_BUILDS = 20
#: Seconds the projects' row counts per segment are reused by the merge policy while the index list is unchanged
#: (trickle flips and deletes change them slowly; a finished build or merge changes the list). With segments of
#: different projects apart, a dimension may stay above max_segments for good: the count (~0.1 s per million
#: rows) is then taken this often.
COMPOSITION_TTL_SECONDS = 600.0
#: A merge builds a graph of at most this many times ``seal_max_rows`` rows, unless the dimension is past the
#: merge policy's hard limit (``indexing.merge_policy``: larger graphs search worse at the same ef_search).
MERGED_MAX_SEALS = 2
#: A project's rows per segment are counted up to this many when choosing where its trickle goes.
TRICKLE_COUNT_CAP = 100_000


@dataclass(frozen=True)
class BuildRecord:
    """One finished (or abandoned) index build."""

    name: str
    dim: int
    kind: str  # "segment", "interim", "merge" or "replace"
    rows: int
    seconds: float
    completed: bool


@dataclass(frozen=True)
class BuildStatus:
    """The index build in progress (from ``pg_stat_progress_create_index``)."""

    name: str
    dim: int
    kind: str
    rows_estimate: int
    phase: str
    tuples_done: int
    tuples_total: int
    elapsed_seconds: float
    rows_per_second: float | None
    eta_seconds: float | None


@dataclass(frozen=True)
class IndexerStatus:
    """A snapshot of the indexer for metrics and logs.

    ``backlog``: per dimension, rows not yet indexed (counted up to ``seal_max_rows``) at the last pass;
    ``segments``: per dimension, HNSW indexes searches use; ``building``: the build in progress;
    ``recent_builds``: the last builds, newest last; ``builds_completed`` and ``rows_flipped``: since start.
    """

    backlog: Mapping[int, int]
    segments: Mapping[int, int]
    building: BuildStatus | None
    recent_builds: tuple[BuildRecord, ...]
    builds_completed: int
    rows_flipped: int


@dataclass(frozen=True)
class _Job:
    kind: str  # "drop", "release", "segment", "interim", "seal", "merge", "replace"
    dim: int
    lo: int = 0
    hi: int = 0
    rows: int = 0
    name: str = ""
    growing: bool = False  # an interim index over a segment a stream still writes into


@dataclass
class _State:
    indexes: list[SegmentIndex]
    segments: list[q.Segment]
    backlog: dict[int, int] = field(default_factory=dict)
    #: Per dimension that may be due for a merge: per segment label, rows per project (``merge_policy``).
    composition: dict[int, Composition] = field(default_factory=dict)


class Indexer:
    """Background task that seals uploaded rows into segments, builds their HNSW indexes and merges them."""

    #: Told of every finished HNSW segment build or merge: dimensions, seconds (metrics); set by the composition
    #: root. Interim builds are in ``status().recent_builds`` only.
    on_index_built: Callable[[int, float], None] | None = None

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        chunk_size: int = 256,
        bulk_chunk_size: int = 20_000,
        seal_min_rows: int = 2_000,
        seal_max_rows: int = 250_000,
        max_segments: int = 2,
        interim_min_rows: int = 20_000,
        idle_interval: float = 1.0,
        progress_interval: float = 10.0,
        m: int = q.HNSW_M,
        ef_construction: int = q.HNSW_EF_CONSTRUCTION,
        build_memory_bytes: int | None = None,
        build_workers: int | None = None,
        build_nice: int = 0,
        exact_max_rows: int = 4000,
    ) -> None:
        """Args:
        pool: the server's pool (up to three connections are held while working: flips, build, progress).
        chunk_size: rows flipped per transaction into an existing index (each is an HNSW insert).
        bulk_chunk_size: rows sealed per transaction into a segment without an index yet (cheap).
        seal_min_rows: a backlog at least this large is sealed into a new segment and built in bulk.
        seal_max_rows: most rows sealed into one segment (bounds one build's duration).
        max_segments: a dimension with more HNSW indexes than this gets its two smallest neighbours merged.
        interim_min_rows: a sealed segment this large (at 384 dimensions; wider ones at proportionally fewer rows:
            ``interim_rows``) gets an interim IVFFlat index before its HNSW build; 0:
            never (every sealed segment is read exactly until its HNSW index is valid).
        idle_interval: seconds between checks when nothing is to do (``wake`` cuts it short).
        progress_interval: seconds between progress log lines of a running build.
        m, ef_construction: HNSW build parameters.
        build_memory_bytes: most memory one build may use (None: ``indexing.sizing``'s share of this machine).
        build_workers: most parallel maintenance workers per build (None: from the CPU count).
        build_nice: Unix nice value of the backends doing build passes (seals, builds, their VACUUMs) and of
            their parallel workers, so searches get the CPU first (``indexing.priority``); 0 leaves them alone.
            Only for a PostgreSQL running on this machine as this user (embedded mode).
        exact_max_rows: the search's setting of that name (``domain.search.Search``): a project with at most
            this many rows in a segment is read there exactly, so the merge policy does not weigh it
            (``indexing.merge_policy``).
        """
        self._pool = pool
        self._chunk_size = chunk_size
        self._bulk_chunk_size = bulk_chunk_size
        self.seal_min_rows = seal_min_rows
        self.seal_max_rows = seal_max_rows
        self.max_segments = max_segments
        self.interim_min_rows = interim_min_rows
        self._idle_interval = idle_interval
        self._progress_interval = progress_interval
        self._m = m
        self._ef_construction = ef_construction
        self._build_memory_bytes = build_memory_bytes
        self._build_workers = build_workers
        self._build_nice = build_nice
        self.exact_max_rows = exact_max_rows
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._builder: asyncio.Task[None] | None = None
        self._building_job: _Job | None = None
        self._checked_segment_zero = False
        self._segment_zero_dims: set[int] = set()
        self._locked_out = False
        self._flipped_since_vacuum = 0
        self._backlog_seen: dict[int, tuple[int, float]] = {}  # per dimension: backlog, when it last changed
        self._yielded: set[str] = set()  # segment builds cancelled once for fresh work: not again
        # per (project, dimension): the cover's index names, when it expires, the label its trickle goes to
        self._trickle_home: dict[tuple[int, int], tuple[tuple[str, ...], float, int]] = {}
        # per dimension: the cover's index names, when it expires, rows per project per label (merge policy)
        self._composition: dict[int, tuple[tuple[str, ...], float, Composition]] = {}
        # status
        self._backlog: dict[int, int] = {}
        self._segment_counts: dict[int, int] = {}
        self._build_status: BuildStatus | None = None
        self._recent: list[BuildRecord] = []
        self._builds_completed = 0
        self._rows_flipped = 0

    # ------------------------------------------------------------------------------------------ control

    def wake(self) -> None:
        """Ask for a pass soon (call after committing uploads)."""
        self._wakeup.set()

    def start(self) -> None:
        """Start the background task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="vdb-indexer")

    async def stop(self) -> None:
        """Cancel the background task and a build in progress, and wait for them. A chunk in flight is rolled
        back; a cancelled build leaves an INVALID index, which the next pass drops and builds again."""
        task, self._task = self._task, None
        builder, self._builder = self._builder, None
        for t in (task, builder):
            if t is not None:
                t.cancel()
        for t in (task, builder):
            if t is not None:
                try:
                    await t
                except asyncio.CancelledError:
                    pass
                except Exception:  # e.g. the pool closed under a build that was just starting
                    log.warning("index work ended with an error while stopping", exc_info=True)

    def status(self) -> IndexerStatus:
        """The indexer's state for metrics (cheap: no database access)."""
        return IndexerStatus(
            backlog=MappingProxyType(dict(self._backlog)),
            segments=MappingProxyType(dict(self._segment_counts)),
            building=self._build_status,
            recent_builds=tuple(self._recent),
            builds_completed=self._builds_completed,
            rows_flipped=self._rows_flipped,
        )

    async def run_until_idle(self) -> None:
        """Work until no row waits to be indexed, no build is due and every index is valid (tests and
        benchmarks; wrap in ``asyncio.timeout`` to bound it: another worker holding a lock makes it wait)."""
        while True:
            idle = await self.run_once()
            builder = self._builder
            if builder is not None:
                await asyncio.shield(builder)
                continue
            if idle:
                return
            await asyncio.sleep(0.05)  # another worker may hold a lock

    # ------------------------------------------------------------------------------------------ passes

    def allowed_jobs(self) -> Collection[str] | None:
        """The kinds of job ("drop", "release", "interim", "seal", "segment", "merge", "replace") passes may start
        now; None: any. A subclass narrows them (``vdb_grpc.upload_pacing``'s quick passes)."""
        return None

    def flips_allowed(self) -> bool:
        """Whether passes flip small backlogs now (``allowed_jobs``' companion)."""
        return True

    def _allowed(self, jobs: list[_Job]) -> list[_Job]:
        kinds = self.allowed_jobs()
        return jobs if kinds is None else [j for j in jobs if j.kind in kinds]

    async def run_once(self) -> bool:
        """One pass: flip small backlogs, start (or preempt) the builder. True when there was nothing to do."""
        self._reap_builder()
        async with self._pool.acquire() as conn:
            if not self._checked_segment_zero:
                # Rows indexed before segments existed, or flipped before a crash lost their index (a full
                # scan, once per process, as the 0009 indexer did).
                self._segment_zero_dims = {d for d in await q.dims_in_segment_zero(conn) if d <= HNSW_MAX_DIMENSIONS}
                self._checked_segment_zero = True
            state = await self._state(conn)
            flipped = await self._flip_small_backlogs(conn, state) if self.flips_allowed() else False
        jobs = self._allowed(self._jobs(state))
        builder = self._builder
        if builder is not None and not builder.done():
            job = self._building_job
            if job is not None and any(j.kind in YIELDS_TO.get(job.kind, ()) for j in jobs):
                if self._build_yields(job, state):
                    log.info("cancelling the %s build %s: fresh rows wait for an index", job.kind, job.name)
                    if job.kind == "segment":
                        if len(self._yielded) > 10_000:
                            self._yielded.clear()
                        self._yielded.add(job.name)
                    builder.cancel()
            return False
        if jobs:
            self._builder = asyncio.create_task(self._build_pass(), name="vdb-index-builder")
            return False
        self._locked_out = False
        return not flipped and not state.backlog

    def _build_yields(self, job: _Job, state: _State) -> bool:
        """Whether the running build ``job`` (a merge or a segment's HNSW build) gives way to fresh rows waiting
        for work behind it (``YIELDS_TO``).

        It does, unless giving way would cost more than it saves: when it is due to finish within
        ``BUILD_FINISH_SECONDS`` (its ETA); a merge not when a project it joins is already searched through twice
        ``max_segments`` segments (``merge_policy.merge_must_finish``: under a steady stream of fresh segments
        merges would otherwise never finish and its searches would read ever more segments); a segment build not
        a second time (its work is thrown away at most once: under a steady stream of uploads it would never
        finish).
        """
        status = self._build_status
        if status is not None and status.name == job.name and status.rows_per_second and job.rows:
            remaining = max(job.rows - status.tuples_done, 0) / status.rows_per_second
            if remaining <= BUILD_FINISH_SECONDS:
                return False
        if job.kind == "segment":
            return job.name not in self._yielded
        cover = self._covers(state).get(job.dim, ())
        composition = state.composition.get(job.dim)
        return not merge_must_finish(cover, job.lo, job.hi, composition, self.max_segments, self.exact_max_rows)

    def _reap_builder(self) -> None:
        builder = self._builder
        if builder is not None and builder.done():
            self._builder = None
            if not builder.cancelled() and builder.exception() is not None:
                log.error("index build failed", exc_info=builder.exception())

    async def _state(self, conn: asyncpg.Connection) -> _State:
        state = _State(indexes=await qs.segment_indexes(conn), segments=await q.segments(conn))
        for dim in await q.dims_with_backlog(conn):
            state.backlog[dim] = await q.backlog_count(conn, dim, self.seal_max_rows)
        self._backlog = dict(state.backlog)
        now = time.monotonic()
        seen = self._backlog_seen
        for dim, n in state.backlog.items():
            if dim not in seen or seen[dim][0] != n:
                seen[dim] = (n, now)
        for dim in [d for d in seen if d not in state.backlog]:
            del seen[dim]
        counts: dict[int, int] = {}
        for s in qs.cover(state.indexes):
            counts[s.dim] = counts.get(s.dim, 0) + 1
        self._segment_counts = counts
        for dim, cov in self._covers(state).items():
            if len(cov) > self.max_segments:  # a merge may be due: the merge policy weighs the projects' rows
                names = tuple(s.name for s in cov)
                cached = self._composition.get(dim)
                if cached is None or cached[0] != names or cached[1] < now:
                    cached = (names, now + COMPOSITION_TTL_SECONDS, await q.segment_projects(conn, dim))
                    self._composition[dim] = cached
                state.composition[dim] = cached[2]
        return state

    def interim_rows(self, dim: int, *, growing: bool = False) -> int:
        """Rows from which a segment of ``dim`` dimensions (``growing``: a stream still writes into it) gets an
        interim index (0: never)."""
        return q.interim_rows_for(dim, self.interim_min_rows, growing=growing)

    def _covers(self, state: _State) -> dict[int, tuple[SegmentIndex, ...]]:
        """Per dimension, the valid HNSW indexes searches use (interim ones left out)."""
        return qs.hnsw_covers(state.indexes)

    def _settled(self, dim: int, backlog: int) -> bool:
        """Whether ``dim``'s backlog fills a segment or has not grown for ``SETTLE_SECONDS``."""
        seen = self._backlog_seen.get(dim)
        return backlog >= self.seal_max_rows or seen is None or time.monotonic() - seen[1] >= SETTLE_SECONDS

    def _jobs(self, state: _State) -> list[_Job]:
        """Build work due, most urgent first (see the module docstring)."""
        jobs: list[_Job] = []
        building = self._building_job.name if self._building_job is not None else None
        covers = self._covers(state)

        def covered(dim: int, label: int) -> bool:
            return any(s.lo <= label <= s.hi for s in covers.get(dim, ()))

        def interim(dim: int, label: int) -> bool:
            return any(i.interim and i.valid and i.dim == dim and i.lo <= label <= i.hi for i in state.indexes)

        def any_index(dim: int, label: int) -> bool:  # valid or not, being built or left by a crash
            return any(i.dim == dim and i.lo <= label <= i.hi and not i.legacy for i in state.indexes)

        for i in state.indexes:
            if not i.valid and i.name != building:
                jobs.append(_Job("drop", i.dim, name=i.name))
        for dim, cov in sorted(covers.items()):
            for i in state.indexes:
                if i.dim == dim and i.valid and not i.legacy and i not in cov:
                    if any(c.lo <= i.lo and i.hi <= c.hi for c in cov):
                        jobs.append(_Job("drop", dim, name=i.name))  # merged into a wider index, or interim
        for i in state.indexes:
            if i.legacy and i.valid:
                if any(c.lo == 0 and c.hi == 0 and not c.legacy and c.valid for c in state.indexes if c.dim == i.dim):
                    jobs.append(_Job("drop", i.dim, name=i.name))
                else:
                    jobs.append(_Job("replace", i.dim, 0, 0, i.rows, qs.segment_index_name(i.dim, 0, 0)))
        for dim in sorted(self._segment_zero_dims):
            if not any(s.lo <= 0 <= s.hi and not s.legacy for s in covers.get(dim, ())):
                if not any(s.legacy for s in covers.get(dim, ())):
                    jobs.append(_Job("replace", dim, 0, 0, 0, qs.segment_index_name(dim, 0, 0)))
        # Segments without a valid HNSW index. An open one (a stream still writes into it) gets no HNSW build
        # before its close -- each later batch would pay for HNSW inserts -- but may get its interim index: an
        # IVFFlat insert is one nearest-list search, and the stream's own project is then not read exactly for
        # the rest of its upload.
        unbuilt = [s for s in state.segments if s.dim <= HNSW_MAX_DIMENSIONS and not covered(s.dim, s.segment)]
        pending = []
        for seg in (s for s in unbuilt if not s.open):
            if not any_index(seg.dim, seg.segment) and (
                seg.rows == 0 or (seg.streamed and seg.rows < self.seal_min_rows and covers.get(seg.dim))
            ):
                # Empty, or a short stream's: its rows go back to the backlog (trickled into the newest segment)
                # rather than costing a build and a merge of their own.
                jobs.append(_Job("release", seg.dim, seg.segment, seg.segment, seg.rows))
            else:
                pending.append(seg)
        for seg in [*pending, *(s for s in unbuilt if s.open)]:
            due = self.interim_rows(seg.dim, growing=seg.open)
            if due and seg.rows >= due and not any_index(seg.dim, seg.segment):
                name = qs.interim_index_name(seg.dim, seg.segment, seg.segment)
                jobs.append(_Job("interim", seg.dim, seg.segment, seg.segment, seg.rows, name, growing=seg.open))
        waiting = False  # a seal ahead of pending HNSW builds waits for the backlog to settle
        for dim, backlog in sorted(state.backlog.items()):
            if dim > HNSW_MAX_DIMENSIONS or any(
                j.dim == dim and j.kind in ("replace", "release", "interim") for j in jobs
            ):
                continue
            if not (backlog >= self.seal_min_rows or not covers.get(dim)):
                continue
            blocked = [s for s in pending if s.dim == dim]
            if not blocked:
                jobs.append(_Job("seal", dim, rows=backlog))
            elif all(interim(dim, s.segment) for s in blocked) and backlog >= self.interim_rows(dim):
                # The pending segments are served by interim indexes: seal this backlog too (it gets its own).
                if self._settled(dim, backlog):
                    jobs.append(_Job("seal", dim, rows=backlog))
                else:
                    waiting = True
        if waiting:
            return jobs  # no HNSW build or merge now: the builder would hold the backlog back for its duration
        # A dimension a stream is writing into gets no HNSW build or merge meanwhile: a build takes minutes, and
        # the segments the stream closes in the meantime would wait for their interim index behind it. Its rows
        # are served by interim indexes meanwhile; STREAM_HOLD_SECONDS bounds the wait under endless streams.
        held = {
            s.dim
            for s in unbuilt
            if s.open and not any(p.dim == s.dim and p.age >= STREAM_HOLD_SECONDS for p in pending)
        }
        for seg in pending:
            if seg.dim not in held:
                name = qs.segment_index_name(seg.dim, seg.segment, seg.segment)
                jobs.append(_Job("segment", seg.dim, seg.segment, seg.segment, seg.rows, name))
        for dim, cov in sorted(covers.items()):
            if len(cov) > self.max_segments and not any(s.legacy for s in cov) and dim not in held:
                # Never over a segment between the two that has no index yet: a stream may still be writing into
                # it, and its HNSW build would then be maintained by every later batch.
                between = [s.segment for s in unbuilt if s.dim == dim]
                pairs = [
                    (a, b) for a, b in itertools.pairwise(cov) if not any(a.hi < label < b.lo for label in between)
                ]
                composition = state.composition.get(dim)
                limit = MERGED_MAX_SEALS * self.seal_max_rows
                pick = choose_merge(cov, pairs, composition, self.max_segments, self.exact_max_rows, limit)
                if pick is not None:
                    a, b = pick
                    name = qs.segment_index_name(dim, a.lo, b.hi)
                    jobs.append(_Job("merge", dim, a.lo, b.hi, a.rows + b.rows, name))
        return jobs

    # ------------------------------------------------------------------------------------------ flips

    async def _flip_small_backlogs(self, conn: asyncpg.Connection, state: _State) -> bool:
        """Flip one chunk of every small backlog into its dimension's newest valid segment. True if any."""
        covers = self._covers(state)
        done = False
        for dim, backlog in sorted(state.backlog.items()):
            if dim > HNSW_MAX_DIMENSIONS:
                # No index is possible; flipping keeps the unindexed-rows index small. Searches are exact anyway.
                done |= await self._locked_flip(conn, dim, 0, self._bulk_chunk_size, until_empty=True) > 0
                continue
            cov = covers.get(dim, ())
            if backlog >= self.seal_min_rows or not cov or any(s.legacy for s in cov):
                continue  # the builder seals it (or replaces the pre-segment index first)
            if len(cov) == 1:
                done |= await self._locked_flip(conn, dim, cov[0].hi, self._chunk_size) > 0
                continue
            # Each project's rows into the segment where it has the most (its graph), else the newest: trickled
            # rows inserted into another project's graph, hour after hour, would be hard to reach in it
            # (indexing.merge_policy).
            projects = list(await q.backlog_by_project(conn, dim, self._chunk_size * 4))
            labels = {p: await self._trickle_label(conn, p, dim, cov) for p in projects}
            if len(set(labels.values())) == 1:  # all to one segment (the usual case): one flip for all of them
                done |= await self._locked_flip(conn, dim, labels[projects[0]], self._chunk_size) > 0
                continue
            for project, label in labels.items():
                done |= await self._locked_flip(conn, dim, label, self._chunk_size, project=project) > 0
        if self._flipped_since_vacuum >= VACUUM_AFTER_FLIPS:
            await self._vacuum(conn)
        return done

    async def _trickle_label(
        self, conn: asyncpg.Connection, project: int, dim: int, cov: tuple[SegmentIndex, ...]
    ) -> int:
        """The segment label ``project``'s trickled rows of ``dim`` go to: the newest segment of ``cov`` where it
        has more than ``exact_max_rows`` rows and the most, else the newest one (remembered for
        ``COMPOSITION_TTL_SECONDS`` while ``cov`` stays the same)."""
        names = tuple(s.name for s in cov)
        now = time.monotonic()
        cached = self._trickle_home.get((project, dim))
        if cached is not None and cached[0] == names and cached[1] >= now:
            return cached[2]
        cap = max(self.exact_max_rows + 1, TRICKLE_COUNT_CAP)
        counts = await qs.segment_rows(conn, project, dim, [(s.lo, s.hi, cap) for s in cov])
        best = max(range(len(cov)), key=lambda i: (counts[i], i))
        label = cov[best].hi if counts[best] > self.exact_max_rows else cov[-1].hi
        if len(self._trickle_home) > 10_000:
            self._trickle_home.clear()
        self._trickle_home[(project, dim)] = (names, now + COMPOSITION_TTL_SECONDS, label)
        return label

    async def _locked_flip(
        self,
        conn: asyncpg.Connection,
        dim: int,
        label: int,
        size: int,
        *,
        until_empty: bool = False,
        project: int | None = None,
    ) -> int:
        key = q.flip_lock_key(dim)
        if not await q.try_lock(conn, key):
            return 0
        total = 0
        while True:
            n = await q.seal_chunk(conn, dim, label, size, project)
            total += n
            if not until_empty or n < size:
                break
        await q.unlock(conn, key)  # on an exception: the pool's full reset on release
        self._flipped_since_vacuum += total
        self._rows_flipped += total
        return total

    async def _vacuum(self, conn: asyncpg.Connection) -> None:
        """VACUUM the table after many flips or a seal, unless a build holds its lock (then later).

        A flip is an UPDATE: the old row versions stay in the btrees (and the heap) until a vacuum, so the exact
        scan of "not yet indexed" rows would otherwise recheck every flipped row -- measured 3.4 ms per search
        on 20,000 flipped rows, against 0 after VACUUM. Autovacuum gets there too, but only minutes later.
        """
        async with self._session(conn, statement_timeout=True):
            await conn.execute("VACUUM (SKIP_LOCKED, ANALYZE) embeddings")
        self._flipped_since_vacuum = 0

    # ------------------------------------------------------------------------------------------ builds

    async def _build_pass(self) -> None:
        """Holding the build lock, run due build jobs one after another until none is left."""
        async with self._pool.acquire() as conn:
            if not await q.try_lock_indexer(conn):
                self._locked_out = True
                return
            self._locked_out = False
            backend = conn.get_server_pid()
            if self._build_nice:
                renice(backend, self._build_nice)
            try:
                while True:
                    state = await self._state(conn)
                    jobs = self._allowed(self._jobs(state))
                    if not jobs:
                        break
                    await self._execute(conn, jobs[0])
            finally:
                self._building_job = None
                self._build_status = None
                if self._build_nice and not renice(backend, 0):
                    # Not permitted to raise the priority again (RLIMIT_NICE): this backend must not serve
                    # searches from the pool at build priority, so the pool replaces the connection.
                    conn.terminate()
            # Not in ``finally``: after a cancellation the connection may still be busy with the cancelled
            # statement; the pool's full reset on release (the lock marked the session) unlocks it then.
            if not conn.is_closed():
                await q.unlock_indexer(conn)

    async def _execute(self, conn: asyncpg.Connection, job: _Job) -> None:
        if job.kind == "drop":
            log.info("dropping index %s", job.name)
            async with self._session(conn):
                await conn.execute(q.drop_index_sql(job.name))
            return
        if job.kind == "release":
            n = await q.release_segment(conn, job.dim, job.lo)
            if n is not None:
                log.info("handed %d rows of segment %d (%d dimensions) back to the backlog", n, job.lo, job.dim)
            return
        if job.kind == "seal":
            label = await q.new_segment(conn, job.dim)
            rows = await self._seal(conn, job.dim, label)
            if rows == 0:
                await q.forget_segment(conn, label)
                return
            if not (self.interim_min_rows and rows >= self.interim_rows(job.dim)):
                await self._vacuum(conn)  # else after the interim build: it makes the segment cheap sooner
            return  # the next job builds its interim or its HNSW index (or seals more first)
        await self._build(conn, job)

    async def _seal(self, conn: asyncpg.Connection, dim: int, label: int) -> int:
        """Seal up to ``seal_max_rows`` unindexed rows of ``dim`` into segment ``label`` (chunked commits).

        When the backlog holds several projects' rows and one of them has at least ``seal_min_rows``, only the
        largest such project's rows are sealed (the rest wait for the next seal or trickle): a segment's graph is
        built in heap order, and a project's rows after many rows of another's would be hard to reach in it
        (``indexing.merge_policy``; the same reason merges keep projects apart).
        """
        key = q.flip_lock_key(dim)
        await q.lock(conn, key)  # waits for a trickle flip of this dimension to finish its chunk
        by_project = await q.backlog_by_project(conn, dim, self.seal_max_rows * 4)
        large = [p for p, n in by_project.items() if n >= self.seal_min_rows]
        project = max(large, key=lambda p: by_project[p]) if len(by_project) > 1 and large else None
        total = 0
        while total < self.seal_max_rows:
            size = min(self._bulk_chunk_size, self.seal_max_rows - total)
            n = await q.seal_chunk(conn, dim, label, size, project)
            total += n
            if n == 0:
                break
        await q.unlock(conn, key)  # on an exception: the pool's full reset on release
        self._rows_flipped += total
        if project is None:
            log.info("sealed %d rows of %d dimensions into segment %d", total, dim, label)
        else:
            log.info("sealed %d rows of project %d (%d dimensions) into segment %d", total, project, dim, label)
        return total

    async def _build(self, conn: asyncpg.Connection, job: _Job) -> None:
        res = self._resources(job)
        if job.kind == "interim":
            sql = q.create_interim_index_sql(job.dim, job.lo, job.hi, job.rows, growing=job.growing)
            what = "interim IVFFlat index"
        else:
            sql = q.create_segment_index_sql(job.dim, job.lo, job.hi, m=self._m, ef_construction=self._ef_construction)
            what = "HNSW index"
        log.info(
            "building %s %s (%s, ~%d rows, maintenance_work_mem %d MB, %d parallel workers)",
            what, job.name, job.kind, job.rows, res.maintenance_work_mem_bytes >> 20, res.parallel_workers,
        )  # fmt: skip
        started = time.monotonic()
        self._building_job = job
        watcher = asyncio.create_task(self._watch(job, conn.get_server_pid(), started))
        completed = False
        try:
            async with self._session(conn, resources=res):
                await conn.execute(sql)
            completed = True
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            seconds = time.monotonic() - started
            self._recent = [*self._recent, BuildRecord(job.name, job.dim, job.kind, job.rows, seconds, completed)][
                -RECENT_BUILDS:
            ]
            self._building_job = None
            self._build_status = None
        self._builds_completed += 1
        if self.on_index_built is not None and job.kind != "interim":
            self.on_index_built(job.dim, seconds)
        log.info("built %s %s (%s, ~%d rows) in %.1fs", what, job.name, job.kind, job.rows, seconds)
        await self._vacuum(conn)

    def _resources(self, job: _Job) -> BuildResources:
        return build_resources(
            max(job.rows, 1),
            job.dim,
            self._m,
            memory_limit_bytes=self._build_memory_bytes,
            max_workers=self._build_workers,
        )

    async def _watch(self, job: _Job, pid: int, started: float) -> None:
        """Poll the build's progress; log it every ``progress_interval`` seconds with rate and ETA."""
        next_log = started + self._progress_interval
        reniced: set[int] = set()
        async with self._pool.acquire() as conn:
            while True:
                await asyncio.sleep(min(1.0, self._progress_interval))
                if self._build_nice:
                    reniced = await renice_workers(conn, pid, self._build_nice, reniced)
                p = await q.build_progress(conn, pid)
                now = time.monotonic()
                elapsed = now - started
                rate = eta = None
                if p is not None and p.tuples_done > 0 and elapsed > 0:
                    rate = p.tuples_done / elapsed
                    # pgvector reports no total while it loads tuples into the graph: the sealed rows are it.
                    total = p.tuples_total or job.rows
                    if total > p.tuples_done:
                        eta = (total - p.tuples_done) / rate
                self._build_status = BuildStatus(
                    name=job.name,
                    dim=job.dim,
                    kind=job.kind,
                    rows_estimate=job.rows,
                    phase=p.phase if p else "waiting",
                    tuples_done=p.tuples_done if p else 0,
                    tuples_total=p.tuples_total if p else 0,
                    elapsed_seconds=elapsed,
                    rows_per_second=rate,
                    eta_seconds=eta,
                )
                if now >= next_log:
                    next_log = now + self._progress_interval
                    s = self._build_status
                    log.info(
                        "building %s: %s, %d/%d tuples, %s rows/s, ETA %s",
                        s.name, s.phase, s.tuples_done, s.tuples_total,
                        f"{rate:.0f}" if rate else "?", f"{eta:.0f}s" if eta is not None else "?",
                    )  # fmt: skip

    @contextlib.asynccontextmanager
    async def _session(
        self, conn: asyncpg.Connection, *, resources: BuildResources | None = None, statement_timeout: bool = True
    ) -> AsyncIterator[None]:
        # Builds and vacuums outlast the pool's statement timeout; builds get memory and workers sized to them.
        mark_session_state(conn)
        sets = ["SET statement_timeout = 0"] if statement_timeout else []
        if resources is not None:
            sets.append(f"SET maintenance_work_mem = '{int(resources.maintenance_work_mem_bytes) // 1024}kB'")
            sets.append(f"SET max_parallel_maintenance_workers = {int(resources.parallel_workers)}")
        await conn.execute("; ".join(sets))
        yield  # on an exception the pool's full reset on release (the session is marked) resets the settings
        await conn.execute(
            "RESET statement_timeout; RESET maintenance_work_mem; RESET max_parallel_maintenance_workers"
        )

    # ------------------------------------------------------------------------------------------ loop

    async def _run(self) -> None:
        while True:
            try:
                idle = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be restarting; try again later rather than dying silently.
                log.exception("indexer pass failed; retrying in %.0fs", self._idle_interval * 5)
                await asyncio.sleep(self._idle_interval * 5)
                continue
            if idle or self._locked_out or self._builder is not None:
                # Nothing to flip (a build may be running in its own task), or another worker holds the lock.
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands
                # right after the event is set, and stop() would then wait forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_interval):
                        await self._wakeup.wait()
                self._wakeup.clear()
