"""Index segments of streaming uploads: a long stream writes its rows straight into a segment of its own.

An upload writes ``indexed = false`` rows, which the background indexer later *seals* into a segment (an UPDATE
of every row: ~3 s per 100k rows, and as many dead row versions for VACUUM) before it can build the segment's
index. A stream that has already sent ``min_rows`` rows is a bulk load: its later batches are written as rows
indexed in a segment the stream opened (``queries.embeddings.open_segment``), which no index covers yet -- the
same state a seal leaves them in, without the rewrite. Searches read such rows exactly, as any sealed segment
without a valid index (``vdb_grpc.queries.search``).

- **Lease.** The segment row records until when the stream may still write into it (``writing_until``); every
  batch renews it in its own transaction, and the indexer builds no index over a segment whose lease runs: an
  index built while the stream writes would be maintained by every later batch (HNSW inserts: ~300 rows/s per
  core). A stream that dies with its server leaves a lease that simply runs out.
- **Close.** When the stream ends (or its segment is full: ``max_rows``), the stream closes its segment after the
  last batch written into it has committed: the project's unindexed rows of that dimension -- the stream's first
  batches, written before it opened the segment -- are moved into it (up to ``max_rows``), and the lease ends.
  ``on_index_due`` then tells the indexer, which builds the segment's interim index right away instead of
  waiting for uploads to pause (``vdb_grpc.upload_pacing``).
- **Interim index while open.** The indexer builds an interim (IVFFlat) index over an open segment once it holds
  ``queries.indexer.interim_rows_for(dim, interim_rows, growing=True)`` rows: the stream tells it
  (``on_index_due``) as soon as the batch that got the segment there has committed, so the stream's own project
  is read exactly for as short as possible (the indexer's quick passes would find the segment up to
  ``quick_interval`` later).
- **Leftovers.** A closed stream segment with fewer rows than a seal would take is handed back to the backlog by
  the indexer (``Indexer``'s "release"), so a short stream costs no build and merge of its own. A batch whose
  segment was handed back meanwhile (a stream idle past its lease) writes unindexed rows instead
  (``queries.embeddings.renew_segment`` tells it), and the stream opens a new segment for its next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from vdb_grpc.queries import embeddings as q
from vdb_grpc.queries.indexer import interim_rows_for
from vdb_grpc.queries.search import HNSW_MAX_DIMENSIONS
from vdb_grpc.runtime.deadline import clear_call_deadline

log = logging.getLogger(__name__)

#: Seconds a stream's segment stays leased after its last batch; a stream silent for half as long opens a new
#: segment for its next batch (the indexer may be building the old one by the time it commits).
SEGMENT_LEASE_SECONDS = 120.0


@dataclass(frozen=True)
class SegmentPolicy:
    """When streams write into segments of their own.

    Attributes:
        min_rows: a stream writes into a segment once it has sent this many rows (0: never; every upload writes
            unindexed rows). The server uses ``VDB_INDEX_SEAL_MIN_ROWS``: a backlog that large would be sealed.
        max_rows: most rows per segment (``VDB_INDEX_SEAL_MAX_ROWS``); a longer stream opens another one.
        lease_seconds: the lease of an open segment, renewed by every batch.
        interim_rows: ``VDB_INDEX_INTERIM_MIN_ROWS``; an open segment's interim index is due at
            ``queries.indexer.interim_rows_for(dim, interim_rows, growing=True)`` rows (a quarter, counted at 384
            dimensions), and the stream tells the indexer when its segment gets there. 0: never told.
    """

    min_rows: int = 0
    max_rows: int = 250_000
    lease_seconds: float = SEGMENT_LEASE_SECONDS
    interim_rows: int = 0


@dataclass(eq=False)
class StreamSegment:
    """A segment one stream writes into."""

    label: int
    dim: int
    project_id: int
    renewed: float  # time.monotonic() of the last batch planned into it (its lease was renewed right after)
    rows: int = 0  # rows of the batches written into it
    last_batch: int = -1  # the last batch planned into it
    gone: bool = False  # handed back by the indexer: batches write unindexed rows instead
    due_batch: int | None = None  # the batch that brings it to the policy's interim_rows (its commit: tell)
    told: bool = False  # the indexer was told it is due for its interim index


@dataclass(eq=False)
class StreamSegments:
    """The segments of one streaming upload: which segment each batch writes into, and closing them."""

    pool: asyncpg.Pool
    policy: SegmentPolicy
    on_index_due: Callable[[], None] | None = None
    current: StreamSegment | None = None
    _sent: int = 0
    _retired: list[StreamSegment] = field(default_factory=list)

    async def for_batch(self, index: int, size: int, project_id: int | None, dim: int | None) -> StreamSegment | None:
        """The segment batch ``index`` of ``size`` rows writes into (None: unindexed rows), opening one when due.

        ``project_id`` and ``dim``: the stream's project and its instance's dimensions as the last committed batch
        saw them (None before one has committed); the batch itself writes into the segment only if its own
        transaction sees the same dimensions.
        """
        sent, self._sent = self._sent, self._sent + size
        p = self.policy
        if not p.min_rows or project_id is None or dim is None or sent < p.min_rows or dim > HNSW_MAX_DIMENSIONS:
            return None
        seg = self.current
        now = time.monotonic()
        if (
            seg is None
            or seg.gone
            or (seg.dim, seg.project_id) != (dim, project_id)
            or seg.rows + size > p.max_rows
            or now - seg.renewed > p.lease_seconds / 2
        ):
            if seg is not None:
                self._retired.append(seg)
            self.current = None
            try:
                async with self.pool.acquire() as conn:
                    label = await q.open_segment(conn, dim, p.lease_seconds)
            except Exception:  # the batch itself will meet the same trouble and report it
                log.warning("could not open a segment for a stream; its batch is written unindexed", exc_info=True)
                return None
            seg = self.current = StreamSegment(label, dim, project_id, now)
            log.debug("stream opened segment %d (%d dimensions)", label, dim)
        seg.rows += size
        seg.last_batch = index
        seg.renewed = now
        due = interim_rows_for(seg.dim, p.interim_rows, growing=True)
        if due and seg.due_batch is None and seg.rows >= due:
            seg.due_batch = index
        return seg

    async def committed(self, index: int) -> None:
        """Batch ``index`` has committed: tell the indexer if it brought the open segment to its interim index's
        size; close the retired segments no later batch writes into."""
        seg = self.current
        if seg is not None and seg.due_batch is not None and seg.due_batch <= index and not (seg.told or seg.gone):
            seg.told = True
            if self.on_index_due is not None:
                self.on_index_due()
        done = [s for s in self._retired if s.last_batch <= index]
        self._retired = [s for s in self._retired if s.last_batch > index]
        for seg in done:
            await self._close(seg)

    async def close_all(self) -> None:
        """The stream has ended (every batch committed or rolled back): close its segments."""
        segments = [*self._retired, *([self.current] if self.current is not None else [])]
        self._retired, self.current = [], None
        for seg in segments:
            await self._close(seg)

    def close_all_later(self) -> asyncio.Task[None] | None:
        """``close_all`` in a task of its own (a stream cut short: its handler may be cancelled again)."""
        if self.current is None and not self._retired:
            return None
        task = asyncio.create_task(self._close_detached(), name="vdb-close-stream-segments")
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)
        return task

    async def _close_detached(self) -> None:
        clear_call_deadline()  # the stream's deadline may have passed; the lease bounds nothing here
        await self.close_all()

    async def _close(self, seg: StreamSegment) -> None:
        if seg.gone:
            return
        try:
            async with self.pool.acquire() as conn:
                adopted = await q.close_segment(
                    conn, seg.label, seg.project_id, seg.dim, self.policy.max_rows - seg.rows
                )
        except Exception:
            log.warning("could not close stream segment %d; its lease runs out instead", seg.label, exc_info=True)
            return
        if adopted is None:
            seg.gone = True
            return
        log.info(
            "stream closed segment %d (%d dimensions): %d rows written, %d earlier ones moved in",
            seg.label, seg.dim, seg.rows, adopted,
        )  # fmt: skip
        if self.on_index_due is not None:
            self.on_index_due()


#: Detached close tasks, kept referenced until they end.
_CLOSING: set[asyncio.Task[None]] = set()
