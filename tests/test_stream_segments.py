"""Streams writing straight into index segments of their own (``vdb_grpc.domain.stream_segments``).

A stream that has sent ``min_rows`` rows writes the rest as rows indexed in a segment it opened, so the indexer
need not rewrite them before building their index; the indexer builds nothing over a segment while its lease
runs; the stream's close moves its first (unindexed) batches in; a short stream's segment is handed back to the
backlog; a batch whose segment was handed back writes unindexed rows. Every search meanwhile returns exactly
numpy's top-k over all rows (small data, large ``ef_search``: an HNSW arm returns its exact top-k), each row once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import numpy as np
import pytest
from harness import Harness
from search_fixtures import add_embeddings, clustered, exact_top, make_project

from vdb_grpc.auth import ADMIN
from vdb_grpc.db import halfvec_wire
from vdb_grpc.domain.embeddings import Embeddings, StreamBatch, UploadBatch
from vdb_grpc.domain.search import Search, SearchQuery
from vdb_grpc.domain.stream_segments import SegmentPolicy, StreamSegments
from vdb_grpc.indexer import STREAM_HOLD_SECONDS, Indexer
from vdb_grpc.queries import embeddings as qe
from vdb_grpc.queries import indexer as qi
from vdb_grpc.upload_pacing import UploadAwareIndexer
from vdb_grpc.v1 import embedding_pb2 as pb

DIM = 8
K = 20
BATCH = 10


class World:
    """One project whose rows are known (by text_id), uploaded through ``Embeddings.upsert_stream``."""

    def __init__(self, pool: asyncpg.Pool, pid: int, policy: SegmentPolicy, indexer: Indexer | None = None) -> None:
        self.pool = pool
        self.pid = pid
        self.rows: dict[str, np.ndarray[Any, Any]] = {}
        self.closed = 0
        self.indexer = indexer
        self.embeddings = Embeddings(
            pool,
            max_batch_items=1000,
            stream_segments=policy,
            on_index_due=self._closed,
            on_commit=indexer.note_upload if isinstance(indexer, UploadAwareIndexer) else None,
        )
        self.search = Search(pool, exact_max_rows=10, ef_search=1000, stats_ttl=0, segments_ttl=0)
        self.queries = clustered(6, DIM, 2, seed=99)
        self._seed = 0

    def _closed(self) -> None:
        self.closed += 1
        if isinstance(self.indexer, UploadAwareIndexer):
            self.indexer.note_index_due()

    def batch(self, n: int = BATCH, ids: list[str] | None = None) -> StreamBatch:
        """A stream message of ``n`` new rows (or of rows ``ids``, replacing those if stored)."""
        self._seed += 1
        x = clustered(n, DIM, 2, seed=self._seed)
        ids = ids or [f"s{self._seed}-{i}" for i in range(n)]
        self.rows.update(zip(ids, x, strict=True))
        upload = UploadBatch(ids, x, [0] * n, [""] * n, [None] * n, [None] * n)
        return StreamBatch("alice", "docs", n, lambda: upload)

    async def stream(self, messages: Iterable[StreamBatch] | AsyncIterator[StreamBatch]) -> int:
        async def gen() -> AsyncIterator[StreamBatch]:
            if isinstance(messages, AsyncIterator):
                async for m in messages:
                    yield m
            else:
                for m in messages:
                    yield m

        return (await self.embeddings.upsert_stream(ADMIN, gen())).count

    async def add_unindexed(self, n: int) -> None:
        """Rows written as an ordinary upload would (not through a stream)."""
        self._seed += 1
        x = clustered(n, DIM, 2, seed=self._seed)
        async with self.pool.acquire() as conn:
            ids = await add_embeddings(conn, self.pid, "alice", x, prefix=f"u{self._seed}-")
        self.rows.update(zip(ids, x, strict=True))

    async def check(self) -> None:
        """Every query's results are numpy's exact top-k over all rows, each row once."""
        ids = list(self.rows)
        x = np.stack([self.rows[i] for i in ids])
        for qv in self.queries:
            got = await self.search.search(
                ADMIN, SearchQuery(owner="alice", project_handle="docs", vector=list(qv), threshold=-1, limit=K)
            )
            found = [r.text_id for r in got]
            assert len(found) == len(set(found)), "a row returned twice"
            assert found == [ids[i] for i in exact_top(x, qv, K)]


async def make_world(pool: asyncpg.Pool, indexer: Indexer | None = None, **policy: Any) -> World:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "docs", DIM)
    return World(pool, pid, SegmentPolicy(**policy), indexer)


async def segments(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT s.segment, s.sealed_rows, s.writing_until IS NOT NULL AS streamed,"
            " coalesce(s.writing_until > clock_timestamp(), false) AS open,"
            " (SELECT count(*) FROM embeddings e WHERE e.indexed AND e.index_segment = s.segment) AS rows"
            " FROM embedding_segments s ORDER BY 1"
        )


async def unindexed(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM embeddings WHERE NOT indexed"))


async def orphans(pool: asyncpg.Pool) -> int:
    """Indexed rows whose segment is not registered (they would never get an index)."""
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM embeddings e WHERE e.indexed AND e.index_segment <> 0"
                " AND NOT EXISTS (SELECT 1 FROM embedding_segments s WHERE s.segment = e.index_segment)"
            )
        )


async def index_names(pool: asyncpg.Pool) -> dict[str, bool]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname LIKE 'embeddings_hnsw_%' OR c.relname LIKE 'embeddings_ivf_%' ORDER BY 1"
        )
    return {r[0]: r[1] for r in rows}


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Poll ``condition`` until it holds (at most ``seconds``)."""
    async with asyncio.timeout(seconds):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def streamed_rows_committed(pool: asyncpg.Pool) -> bool:
    return any(s["streamed"] and s["rows"] for s in await segments(pool))


async def idle(indexer: Indexer) -> None:
    async with asyncio.timeout(60):
        await indexer.run_until_idle()


async def test_a_long_stream_writes_its_rows_into_a_segment_of_its_own(pool: asyncpg.Pool) -> None:
    """Batches 0 and 1 (sent before the stream knows its project's dimensions, and before min_rows) are
    ordinary unindexed rows; the rest is written into the stream's segment; the close moves the first ones in."""
    w = await make_world(pool, min_rows=20)
    assert await w.stream([w.batch() for _ in range(6)]) == 60
    segs = await segments(pool)
    assert [(s["sealed_rows"], s["rows"], s["streamed"], s["open"]) for s in segs] == [(60, 60, True, False)]
    assert await unindexed(pool) == 0
    assert w.closed == 1
    await w.check()  # the segment has no index yet: read exactly

    indexer = Indexer(pool, seal_min_rows=20, interim_min_rows=0)
    await idle(indexer)
    assert await index_names(pool) == {f"embeddings_hnsw_{DIM}_{segs[0]['segment']}_{segs[0]['segment']}": True}
    assert [b.kind for b in indexer.status().recent_builds] == ["segment"]  # no seal: nothing was rewritten
    await w.check()


async def test_short_streams_and_single_uploads_write_unindexed_rows(pool: asyncpg.Pool) -> None:
    w = await make_world(pool, min_rows=20)
    assert await w.stream([w.batch(), w.batch()]) == 20  # 20 rows sent before the third batch: none is left
    assert await segments(pool) == []
    assert await unindexed(pool) == 20
    off = World(pool, w.pid, SegmentPolicy(min_rows=0))
    assert await off.stream([off.batch(5, ids=[f"off{i}-{j}" for j in range(5)]) for i in range(5)]) == 25  # never
    assert await segments(pool) == []
    assert w.closed == off.closed == 0


async def test_a_stream_longer_than_a_segment_opens_another(pool: asyncpg.Pool) -> None:
    w = await make_world(pool, min_rows=20, max_rows=25)
    assert await w.stream([w.batch() for _ in range(8)]) == 80
    segs = await segments(pool)
    assert len(segs) == 3 and all(not s["open"] for s in segs)
    assert all(s["rows"] <= 25 and s["rows"] == s["sealed_rows"] for s in segs)
    assert sum(s["rows"] for s in segs) + await unindexed(pool) == 80
    assert w.closed == 3
    await w.check()
    await idle(Indexer(pool, seal_min_rows=20, seal_max_rows=25, interim_min_rows=0, max_segments=10))
    assert await unindexed(pool) == 0
    await w.check()


async def test_no_index_is_built_over_a_segment_a_stream_still_writes(pool: asyncpg.Pool) -> None:
    """While the stream waits between batches its segment stays open: no index over it, and no HNSW build or
    merge of its dimension at all (rows uploaded meanwhile are sealed, their build waits) -- until a segment has
    waited STREAM_HOLD_SECONDS; even then no merge spans the open segment. Searches are exact throughout; the
    stream replaces indexed rows too, which move into its segment and are found once."""
    w = await make_world(pool, min_rows=20)
    await w.add_unindexed(30)
    indexer = Indexer(pool, seal_min_rows=20, interim_min_rows=0, max_segments=1, exact_max_rows=5)
    await idle(indexer)
    first = await index_names(pool)
    assert len(first) == 1
    replaced = [f"u1-{i:05d}" for i in range(10)]  # add_unindexed's first rows
    assert set(replaced) <= set(w.rows)
    go_on = asyncio.Event()
    sent = asyncio.Event()

    async def messages() -> AsyncIterator[StreamBatch]:
        for _ in range(4):
            yield w.batch()
        yield w.batch(10, ids=replaced)  # replaces 10 of the rows indexed above
        sent.set()
        await go_on.wait()
        yield w.batch()

    task = asyncio.create_task(w.stream(messages()))
    await sent.wait()

    async def all_sent_committed() -> bool:  # batches 0-3 (40 new rows) and 4 (the replacements) committed
        async with pool.acquire() as conn:
            rows = await conn.fetchval("SELECT count(*) FROM embeddings WHERE project_id = $1", w.pid)
            moved = await conn.fetchval(
                "SELECT count(*) FROM embeddings WHERE project_id = $1 AND text_id = ANY($2) AND index_segment > 1",
                w.pid,
                replaced,
            )
        return bool(rows == 70 and moved == 10)

    await until(all_sent_committed)
    await w.add_unindexed(25)  # another upload meanwhile: sealed, its build held back by the stream
    await idle(indexer)
    (open_seg,) = [s["segment"] for s in await segments(pool) if s["open"]]
    (sealed,) = [s["segment"] for s in await segments(pool) if not s["streamed"] and s["segment"] > open_seg]
    assert await index_names(pool) == first
    await w.check()
    async with pool.acquire() as conn:  # the sealed segment has waited long enough
        await conn.execute(
            "UPDATE embedding_segments SET created_at = created_at - make_interval(secs => $2) WHERE segment = $1",
            sealed,
            STREAM_HOLD_SECONDS + 1,
        )
    await idle(indexer)
    names = await index_names(pool)
    assert f"embeddings_hnsw_{DIM}_{sealed}_{sealed}" in names
    assert not any(f"_{open_seg}_" in n or n.endswith(f"_{open_seg}") for n in names)
    assert len(names) == 2  # max_segments 1, yet no merge over the open segment lying between the two
    await w.check()
    go_on.set()
    assert await task == 60  # 50 inserted, 10 replaced
    await w.check()
    await idle(indexer)
    names = await index_names(pool)
    assert len(names) == 1 and all(names.values())  # built, then merged with its neighbours
    assert await unindexed(pool) == 0
    await w.check()


async def quick_pass(indexer: Indexer) -> None:
    """One pass of the indexer and the builder it started."""
    await indexer.run_once()
    builder = indexer._builder
    if builder is not None:
        async with asyncio.timeout(30):
            await builder


async def test_while_uploads_arrive_a_streams_segment_gets_its_interim_index_and_nothing_slower(
    pool: asyncpg.Pool,
) -> None:
    """The server's paced indexer, uploads arriving all along: quick passes build the interim index of a stream's
    segment once it holds interim_min_rows rows, while the stream still writes (later rows enter it on insert),
    and flip, seal and build nothing else; once uploads pause, the HNSW build replaces the interim index."""
    indexer = UploadAwareIndexer(
        pool, seal_min_rows=20, interim_min_rows=30, quiet_seconds=3600, max_deferral_seconds=3600, quick_interval=0
    )
    w = await make_world(pool, indexer, min_rows=20)
    go_on = asyncio.Event()

    async def messages() -> AsyncIterator[StreamBatch]:
        for _ in range(6):  # batches 0 and 1 unindexed, 40 rows in the open segment
            yield w.batch()
        await go_on.wait()
        for _ in range(2):
            yield w.batch()

    task = asyncio.create_task(w.stream(messages()))

    async def forty_in_segment() -> bool:
        return any(s["open"] and s["rows"] == 40 for s in await segments(pool))

    await until(forty_in_segment)
    assert indexer.deferring()
    await quick_pass(indexer)
    (label,) = [s["segment"] for s in await segments(pool)]
    assert await index_names(pool) == {f"embeddings_ivf_{DIM}_{label}_{label}": True}
    assert await unindexed(pool) == 20  # a quick pass flips and seals nothing
    await w.check()
    go_on.set()
    assert await task == 80  # its close moved batches 0 and 1 in, and asked for a quick pass
    await quick_pass(indexer)
    assert await index_names(pool) == {f"embeddings_ivf_{DIM}_{label}_{label}": True}  # no HNSW build yet
    assert await unindexed(pool) == 0
    await w.check()
    await idle(indexer)  # uploads have paused
    assert await index_names(pool) == {f"embeddings_hnsw_{DIM}_{label}_{label}": True}
    await w.check()


async def test_a_stream_tells_the_indexer_when_its_open_segment_is_due_for_its_interim_index(
    pool: asyncpg.Pool,
) -> None:
    """Once the batch that brings the open segment to interim_rows has committed, the stream tells the indexer
    (once, while it still streams), not only at its close; a segment that never gets there is not announced."""
    w = await make_world(pool, min_rows=20, interim_rows=30)
    told_while_streaming: list[int] = []

    async def told() -> bool:
        return w.closed > 0

    async def messages() -> AsyncIterator[StreamBatch]:
        # Batches 0 and 1 unindexed; 2, 3, 4 write 30 rows into the segment. Two batches are in flight at once
        # and committed in order: batch 4's commit is taken note of when batch 6 arrives.
        for _ in range(7):
            yield w.batch()
        await until(told)
        told_while_streaming.append(w.closed)
        (seg,) = await segments(pool)
        assert seg["open"] and seg["sealed_rows"] >= 30 and seg["rows"] >= 30  # told after the commit
        yield w.batch()

    assert await w.stream(messages()) == 80
    assert told_while_streaming == [1]
    assert w.closed == 2  # told once for the interim index, once at the close

    short = World(pool, w.pid, SegmentPolicy(min_rows=20, interim_rows=100))
    batches = [short.batch(10, ids=[f"short{i}-{j}" for j in range(10)]) for i in range(8)]
    assert await short.stream(batches) == 80  # 60 rows in its segment: fewer than 100
    assert short.closed == 1  # the close only


async def test_a_segment_whose_stream_died_is_built_once_its_lease_runs_out(pool: asyncpg.Pool) -> None:
    w = await make_world(pool, min_rows=20)
    rows = clustered(30, DIM, 2, seed=5)
    ids = [f"d{i}" for i in range(30)]
    async with pool.acquire() as conn:  # what a stream's batch writes, with a lease of half a second
        label = await qe.open_segment(conn, DIM, 0.5)
        async with conn.transaction():
            await qe.upsert_embeddings(
                conn,
                owner="alice",
                project_id=w.pid,
                instance_id=await instance(conn, w.pid),
                dimensions=DIM,
                text_ids=ids,
                texts=[None] * 30,
                vectors=halfvec_wire(rows),
                metadata_json="[" + ",".join(["null"] * 30) + "]",
                segment=label,
            )
            assert await qe.renew_segment(conn, label, 30, 0.5)
    w.rows.update(zip(ids, rows, strict=True))
    indexer = Indexer(pool, seal_min_rows=20, interim_min_rows=0)
    assert await indexer.run_once()  # nothing to do while the lease runs
    assert await index_names(pool) == {}
    await w.check()
    await asyncio.sleep(0.6)
    await idle(indexer)
    assert await index_names(pool) == {f"embeddings_hnsw_{DIM}_{label}_{label}": True}
    await w.check()


async def instance(conn: asyncpg.Connection, pid: int) -> int:
    return int(await conn.fetchval("SELECT llm_service_instance_id FROM projects WHERE project_id = $1", pid))


async def test_a_short_streams_segment_is_handed_back_to_the_backlog(pool: asyncpg.Pool) -> None:
    """A closed stream segment smaller than a seal (here: the stream's first rows were flipped into the live
    index before it closed, so the close had nothing to move in) costs no build and merge: its rows go back to
    the backlog and are trickled into the live segment."""
    w = await make_world(pool, min_rows=20)
    await w.add_unindexed(40)
    indexer = Indexer(pool, seal_min_rows=30, interim_min_rows=0)  # the stream's first 20 rows are trickled
    await idle(indexer)
    (live,) = await index_names(pool)
    go_on = asyncio.Event()

    async def messages() -> AsyncIterator[StreamBatch]:
        for _ in range(3):
            yield w.batch()
        await go_on.wait()

    task = asyncio.create_task(w.stream(messages()))
    await until(lambda: streamed_rows_committed(pool))
    while await unindexed(pool):  # the first two batches are trickled meanwhile
        await indexer.run_once()
    go_on.set()
    assert await task == 30
    assert [(s["rows"], s["open"]) for s in await segments(pool) if s["streamed"]] == [(10, False)]
    await w.check()
    await idle(indexer)
    assert [s for s in await segments(pool) if s["streamed"]] == []
    assert await index_names(pool) == {live: True}
    assert await unindexed(pool) == 0 and await orphans(pool) == 0
    await w.check()


async def test_a_batch_whose_segment_was_handed_back_writes_unindexed_rows(pool: asyncpg.Pool) -> None:
    """A stream silent past its lease: the indexer may hand its segment back meanwhile. The next batch, which
    wrote into it, notices when it renews the lease and makes its rows unindexed in the same transaction; the
    batch after opens a new segment. No row is left in a segment nobody builds."""
    w = await make_world(pool, min_rows=20)
    go_on = asyncio.Event()
    sent = asyncio.Event()

    async def messages() -> AsyncIterator[StreamBatch]:
        for _ in range(3):
            yield w.batch()
        sent.set()
        await go_on.wait()
        for _ in range(3):
            yield w.batch()

    task = asyncio.create_task(w.stream(messages()))
    await sent.wait()
    await until(lambda: streamed_rows_committed(pool))
    (first,) = [s["segment"] for s in await segments(pool)]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE embedding_segments SET writing_until = clock_timestamp() - interval '1 second'")
        assert await qi.release_segment(conn, DIM, first) == 10
    go_on.set()
    assert await task == 60
    segs = await segments(pool)
    assert first not in [s["segment"] for s in segs]
    assert await orphans(pool) == 0
    assert sum(s["rows"] for s in segs) + await unindexed(pool) == 60
    await w.check()
    await idle(Indexer(pool, seal_min_rows=20, interim_min_rows=0))
    assert await unindexed(pool) == 0 and await orphans(pool) == 0
    await w.check()


async def test_a_segment_open_again_is_not_handed_back(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        label = await qe.open_segment(conn, DIM, 60)
        assert await qi.release_segment(conn, DIM, label) is None  # its lease runs
        assert await qi.release_segment(conn, DIM, label + 1) is None  # no such segment
        assert await conn.fetchval("SELECT count(*) FROM embedding_segments") == 1


# ------------------------------------------------------------------------------------------------ through gRPC


@pytest.fixture
def server_settings(server_settings: Any) -> Any:
    return server_settings.replace(index_seal_min_rows=20, index_interim_min_rows=0)


async def test_a_streamed_upload_is_indexed_without_being_sealed(vdb: Harness) -> None:
    """Through the server: a stream of 8 batches lands in one closed segment of its own, the background
    indexer builds its index without a seal, and searches return the exact top-k before and after."""
    key = await vdb.create_user("alice")
    auth = (("authorization", f"Bearer {key}"),)
    async with vdb.pool.acquire() as conn:
        await make_project(conn, "alice", "docs", DIM)
    x = clustered(80, DIM, 2, seed=3)
    ids = [f"g{i:03d}" for i in range(80)]

    def requests() -> Iterable[pb.StreamUpsertEmbeddingsRequest]:
        for b in range(8):
            yield pb.StreamUpsertEmbeddingsRequest(
                owner="alice" if b == 0 else "",
                project_handle="docs" if b == 0 else "",
                embeddings=[
                    pb.Embedding(text_id=ids[i], vector=list(map(float, x[i]))) for i in range(b * 10, b * 10 + 10)
                ],
            )

    reply = await vdb.embeddings.StreamUpsertEmbeddings(requests(), metadata=auth)
    assert (reply.batches, reply.count) == (8, 80)
    segs = await segments(vdb.pool)
    assert [(s["rows"], s["streamed"], s["open"]) for s in segs] == [(80, True, False)]
    label = segs[0]["segment"]
    name = f"embeddings_hnsw_{DIM}_{label}_{label}"

    async def built() -> bool:
        return (await index_names(vdb.pool)).get(name) is True

    await until(built, 60)
    qv = clustered(1, DIM, 2, seed=77)[0]
    res = await vdb.embeddings.SearchSimilar(
        pb.SearchSimilarRequest(
            owner="alice", project_handle="docs", vector=pb.QueryVector(values=list(map(float, qv))), limit=5,
            threshold=-1.0,
        ),
        metadata=auth,
    )  # fmt: skip
    assert [r.text_id for r in res.results] == [ids[i] for i in exact_top(x, qv, 5)]
    assert await segments(vdb.pool) == segs  # no seal, no second segment


def test_index_jobs_around_open_segments() -> None:
    """``Indexer._jobs`` as a pure function of the catalog and the registry: an open segment gets no HNSW job and
    holds back its dimension's builds and merges, unless a segment has waited STREAM_HOLD_SECONDS; no merge spans
    a segment without an index; a closed short stream segment (or an empty one) is handed back."""
    from vdb_grpc.indexer import _State
    from vdb_grpc.queries.indexer import Segment
    from vdb_grpc.queries.search import SegmentIndex

    def hnsw(lo: int, hi: int, rows: int) -> SegmentIndex:
        return SegmentIndex(f"embeddings_hnsw_{DIM}_{lo}_{hi}", DIM, lo, hi, rows, True)

    indexer = Indexer(None, seal_min_rows=100, interim_min_rows=0, max_segments=1)  # type: ignore[arg-type]
    built = [hnsw(1, 1, 1000), hnsw(3, 3, 500)]
    segs = [Segment(1, DIM, 1000), Segment(2, DIM, 800, streamed=True, open=True), Segment(3, DIM, 500)]

    def jobs(*extra: Segment) -> list[tuple[str, int, int]]:
        return [(j.kind, j.lo, j.hi) for j in indexer._jobs(_State(list(built), [*segs, *extra]))]

    assert jobs() == []  # held by the open segment 2: neither a build nor the merge of 1 and 3
    assert jobs(Segment(4, DIM, 300, age=10)) == []  # segment 4's build waits too ...
    assert jobs(Segment(4, DIM, 300, age=STREAM_HOLD_SECONDS + 1)) == [("segment", 4, 4)]  # ... not forever
    built.append(hnsw(4, 4, 300))
    old = Segment(5, DIM, 300, age=STREAM_HOLD_SECONDS + 1)
    assert jobs(Segment(4, DIM, 300), old) == [("segment", 5, 5), ("merge", 3, 4)]  # never 1..3 across 2
    assert jobs(Segment(4, DIM, 300), Segment(5, DIM, 30, streamed=True), Segment(6, DIM, 0)) == [
        ("release", 5, 5),
        ("release", 6, 6),
    ]


def test_wider_vectors_get_their_interim_index_at_fewer_rows() -> None:
    """VDB_INDEX_INTERIM_MIN_ROWS counts rows of 384 dimensions: reading a segment exactly costs rows x
    dimensions, so a 1536-dim segment is due at a quarter of the rows (narrower ones at the setting itself; 0
    stays off). An interim index over a segment a stream still writes into gets as many lists as any (it will
    hold far more rows than it was trained on), so it is due at a quarter of those rows again; a closed one's
    lists follow its rows."""
    from vdb_grpc.indexer import _State
    from vdb_grpc.queries.indexer import INTERIM_MAX_LISTS, Segment, create_interim_index_sql, interim_rows_for

    assert [interim_rows_for(d, 20_000) for d in (8, 384, 768, 1536, 3072)] == [20_000, 20_000, 10_000, 5_000, 2_500]
    # a segment still being written: a quarter, at least 1,000 rows (or the setting, if lower)
    assert [interim_rows_for(d, 20_000, growing=True) for d in (384, 1536, 3072)] == [5_000, 1_250, 1_000]
    assert interim_rows_for(384, 30, growing=True) == 30
    assert interim_rows_for(1536, 0) == interim_rows_for(1536, 0, growing=True) == 0
    assert "lists = 25)" in create_interim_index_sql(1536, 7, 7, 5_000)
    assert f"lists = {INTERIM_MAX_LISTS})" in create_interim_index_sql(1536, 7, 7, 5_000, growing=True)

    indexer = Indexer(None, seal_min_rows=100, interim_min_rows=20_000)  # type: ignore[arg-type]

    def interim_jobs(*segs: Segment) -> list[tuple[int, int, bool]]:
        jobs = indexer._jobs(_State([], list(segs)))
        return [(j.dim, j.lo, j.growing) for j in jobs if j.kind == "interim"]

    assert interim_jobs(
        Segment(1, 1536, 1_300, streamed=True, open=True),  # due (1,250 while written at 1536): growing
        Segment(2, 1536, 4_999),  # closed: not yet (5,000)
        Segment(3, 384, 4_999, streamed=True, open=True),  # not yet at 384 dimensions (5,000 while written)
        Segment(4, 768, 12_000),  # closed: lists by its rows
        Segment(5, 384, 5_000, streamed=True, open=True),  # due
    ) == [(768, 4, False), (1536, 1, True), (384, 5, True)]


async def test_a_batch_that_sees_other_dimensions_never_writes_into_the_streams_segment(pool: asyncpg.Pool) -> None:
    """The project is bound to an instance of other dimensions while its stream pauses: a batch whose own
    transaction sees the new dimensions writes unindexed rows (its segment was opened for the old ones); the
    stream opens a segment of the new dimensions for later batches. No row lies in a segment of other
    dimensions than its own, none in an unregistered one."""
    w = await make_world(pool, min_rows=20)
    go_on = asyncio.Event()

    def four(seed: int) -> StreamBatch:
        x = clustered(BATCH, 4, 2, seed=seed)
        ids = [f"f{seed}-{i}" for i in range(BATCH)]
        upload = UploadBatch(ids, x, [0] * BATCH, [""] * BATCH, [None] * BATCH, [None] * BATCH)
        return StreamBatch("alice", "docs", BATCH, lambda: upload)

    async def messages() -> AsyncIterator[StreamBatch]:
        for _ in range(3):
            yield w.batch()
        await go_on.wait()
        for seed in range(4):
            yield four(seed)

    task = asyncio.create_task(w.stream(messages()))
    await until(lambda: streamed_rows_committed(pool))
    async with pool.acquire() as conn:
        instance_id = await conn.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
            " VALUES ('four', 'alice', 'https://example.org/embed', 'openai', 'm', 4) RETURNING instance_id"
        )
        await conn.execute("UPDATE projects SET llm_service_instance_id = $1 WHERE project_id = $2", instance_id, w.pid)
    go_on.set()
    assert await task == 70
    async with pool.acquire() as conn:
        misplaced = await conn.fetchval(
            "SELECT count(*) FROM embeddings e LEFT JOIN embedding_segments s ON s.segment = e.index_segment"
            " WHERE e.indexed AND (s.segment IS NULL OR s.vector_dim <> e.vector_dim)"
        )
        four_dims = await conn.fetch(
            "SELECT e.indexed, s.vector_dim FROM embeddings e LEFT JOIN embedding_segments s"
            " ON s.segment = e.index_segment AND e.indexed WHERE e.vector_dim = 4"
        )
    assert misplaced == 0
    assert len(four_dims) == 40 and {(r["indexed"], r["vector_dim"]) for r in four_dims} <= {(False, None), (True, 4)}
    assert (True, 4) in {(r["indexed"], r["vector_dim"]) for r in four_dims}  # a segment of the new dimensions


async def test_closing_a_segment_that_was_handed_back_moves_nothing(pool: asyncpg.Pool) -> None:
    w = await make_world(pool, min_rows=20)
    await w.add_unindexed(5)
    async with pool.acquire() as conn:
        label = await qe.open_segment(conn, DIM, 60)
        await conn.execute("UPDATE embedding_segments SET writing_until = clock_timestamp() - interval '1 second'")
        assert await qi.release_segment(conn, DIM, label) == 0
        assert await qe.close_segment(conn, label, w.pid, DIM, 100) is None  # gone: nothing adopted
    assert await unindexed(pool) == 5 and await orphans(pool) == 0 and await segments(pool) == []


async def test_which_batches_write_into_a_segment() -> None:
    """No segment (and no database work) before min_rows rows were sent, before the stream knows its project's
    dimensions, for dimensions no HNSW index can hold, or with the policy off."""
    segs = StreamSegments(None, SegmentPolicy(min_rows=20))  # type: ignore[arg-type]  # never reaches the pool
    assert await segs.for_batch(0, 10, 1, DIM) is None  # 0 rows sent before it
    assert await segs.for_batch(1, 10, None, None) is None  # dimensions not known yet
    assert await segs.for_batch(2, 10, 1, 4001) is None  # 20 sent, but beyond HNSW's 4,000 dimensions
    off = StreamSegments(None, SegmentPolicy(min_rows=0))  # type: ignore[arg-type]
    for i in range(5):
        assert await off.for_batch(i, 1000, 1, DIM) is None
