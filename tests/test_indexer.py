"""The background indexer: segment HNSW indexes built beside the live ones, flips, merges, crash leftovers, locks."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import numpy as np
import pytest
from search_fixtures import add_embeddings, clustered, make_project, make_user

from vdb_grpc.indexer import Indexer
from vdb_grpc.queries import indexer as q


async def index_defs(conn: asyncpg.Connection, dim: int) -> list[tuple[int, str, bool, str]]:
    """(oid, definition, valid, name) of every HNSW index of ``dim``, by name."""
    rows = await conn.fetch(
        "SELECT c.oid::int, pg_get_indexdef(c.oid), i.indisvalid, c.relname::text FROM pg_class c"
        " JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname ~ $1 ORDER BY c.relname",
        f"^embeddings_hnsw_{dim}(_|$)",
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def index_def(conn: asyncpg.Connection, dim: int) -> tuple[int, str, bool, str] | None:
    """The one HNSW index of ``dim`` (None: none; fails when there are several)."""
    defs = await index_defs(conn, dim)
    assert len(defs) <= 1, defs
    return defs[0] if defs else None


async def unindexed(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM embeddings WHERE NOT indexed"))


async def test_builds_an_index_for_any_dimension_and_flips_every_row(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "odd", 100)
        await add_embeddings(conn, pid, "alice", clustered(50, 100, 3, seed=1))
        other = await make_project(conn, "alice", "tiny", 7)
        await add_embeddings(conn, other, "alice", clustered(20, 7, 2, seed=2))
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        assert await unindexed(conn) == 0
        for dim in (100, 7):
            found = await index_def(conn, dim)
            assert found is not None and found[2]
            d = found[1]
            assert "USING hnsw" in d and f"halfvec({dim})" in d and "halfvec_cosine_ops" in d
            assert f"vector_dim = {dim}" in d and "indexed" in d and "m='16'" in d and "ef_construction='128'" in d
            assert re.search(r"index_segment >= (\d+)\) AND \(index_segment <= \1\)", d), d  # one segment


async def test_small_backlog_is_flipped_into_the_existing_index(pool: asyncpg.Pool) -> None:
    indexer = Indexer(pool, seal_min_rows=1000)
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 16)
        await add_embeddings(conn, pid, "alice", clustered(100, 16, 3, seed=1))
    await indexer.run_until_idle()
    async with pool.acquire() as conn:
        before = await index_def(conn, 16)
        await add_embeddings(conn, pid, "alice", clustered(30, 16, 3, seed=2), prefix="n")
        assert await unindexed(conn) == 30
    await indexer.run_until_idle()
    async with pool.acquire() as conn:
        assert await unindexed(conn) == 0
        assert await index_def(conn, 16) == before  # same index: rows were inserted, not rebuilt
        # and the index holds them: an index-only probe with the predicate finds every row
        await conn.execute("SET enable_seqscan = off; SET hnsw.iterative_scan = relaxed_order")
        n = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE vector_dim = 16 AND indexed"
            " ORDER BY vector::halfvec(16) <=> $1 LIMIT 1000) s",
            np.ones(16, np.float32),
        )
        assert n == 130


async def test_large_backlog_gets_a_new_segment_beside_the_live_index(pool: asyncpg.Pool) -> None:
    indexer = Indexer(pool, seal_min_rows=50)
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 16)
        await add_embeddings(conn, pid, "alice", clustered(60, 16, 3, seed=1))
    await indexer.run_until_idle()
    async with pool.acquire() as conn:
        before = await index_def(conn, 16)
        await add_embeddings(conn, pid, "alice", clustered(200, 16, 3, seed=2), prefix="n")
    await indexer.run_until_idle()
    async with pool.acquire() as conn:
        after = await index_defs(conn, 16)
        assert await unindexed(conn) == 0
        assert before is not None and before in after  # the live index was never dropped
        assert len(after) == 2 and all(d[2] for d in after)
        counts = await conn.fetch("SELECT index_segment, count(*) FROM embeddings GROUP BY 1 ORDER BY 1")
        assert [tuple(r) for r in counts] == [(1, 60), (2, 200)]


async def test_segments_beyond_max_segments_are_merged(pool: asyncpg.Pool) -> None:
    indexer = Indexer(pool, seal_min_rows=20, max_segments=2, exact_max_rows=10)
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 16)
        for i in range(3):
            await add_embeddings(conn, pid, "alice", clustered(30 + 10 * i, 16, 3, seed=i), prefix=f"s{i}-")
            await indexer.run_until_idle()
        names = [d[3] for d in await index_defs(conn, 16)]
        # segments 1 (30 rows) and 2 (40) were merged into one index: two indexes, covering labels 1..3
        assert names == ["embeddings_hnsw_16_1_2", "embeddings_hnsw_16_3_3"], names
        assert indexer.status().recent_builds[-1].kind == "merge"


async def test_merges_keep_each_projects_rows_out_of_other_projects_graphs(pool: asyncpg.Pool) -> None:
    """A merge never puts one project's rows late into a graph of another's (their recall there fell to 0.969
    at 1M rows, benchmarks.md): segments of different projects stay apart, a project spread over more than
    max_segments has its own neighbours merged. Every search still returns numpy's exact top-k."""
    indexer = Indexer(pool, seal_min_rows=20, max_segments=1, exact_max_rows=10)
    xs: dict[int, list[np.ndarray]] = {}
    ids: dict[int, list[str]] = {}
    async with pool.acquire() as conn:
        a = await make_project(conn, "alice", "proj-a", 16)
        b = await make_project(conn, "alice", "proj-b", 16)
        for i, pid in enumerate((a, b, a, a)):
            x = clustered(40, 16, 2, seed=10 + i)
            ids.setdefault(pid, []).extend(await add_embeddings(conn, pid, "alice", x, prefix=f"u{i}-"))
            xs.setdefault(pid, []).append(x)
            await indexer.run_until_idle()
        names = [d[3] for d in await index_defs(conn, 16)]
    # a's segments 3 and 4 merged; 1 (a) stays apart from them: b's segment lies between
    assert names == ["embeddings_hnsw_16_1_1", "embeddings_hnsw_16_2_2", "embeddings_hnsw_16_3_4"], names
    from search_fixtures import exact_top

    from vdb_grpc.auth import ADMIN
    from vdb_grpc.domain.search import Search, SearchQuery

    search = Search(pool, exact_max_rows=10, ef_search=1000, stats_ttl=0, segments_ttl=0)
    for pid, handle in ((a, "proj-a"), (b, "proj-b")):
        x = np.concatenate(xs[pid])
        for qv in clustered(4, 16, 2, seed=99):
            got = await search.search(
                ADMIN, SearchQuery(owner="alice", project_handle=handle, vector=list(qv), threshold=-1, limit=10)
            )
            assert [r.text_id for r in got] == [ids[pid][i] for i in exact_top(x, qv, 10)]


async def test_a_backlog_of_several_large_projects_is_sealed_one_project_at_a_time(pool: asyncpg.Pool) -> None:
    """Two projects' uploads waiting together get a segment each (a graph holding one project's rows after the
    other's would serve the later one poorly: merge_policy); a few rows of a small third project are trickled
    into an existing segment rather than getting one of their own."""
    async with pool.acquire() as conn:
        pids = [await make_project(conn, "alice", f"proj-{c}", 8) for c in "abc"]
        for pid, n, seed in zip(pids, (300, 200, 10), (1, 2, 3), strict=True):
            await add_embeddings(conn, pid, "alice", clustered(n, 8, 2, seed=seed), prefix=f"p{pid}-")
        await Indexer(pool, seal_min_rows=100).run_until_idle()
        rows = await conn.fetch(
            "SELECT index_segment, project_id, count(*) FROM embeddings GROUP BY 1, 2 ORDER BY 1, 2"
        )
        assert await unindexed(conn) == 0
    by_segment: dict[int, dict[int, int]] = {}
    for label, pid, n in rows:
        by_segment.setdefault(label, {})[pid] = n
    a, b, c = pids
    (seg_a,) = [s for s, p in by_segment.items() if p.get(a) == 300]
    (seg_b,) = [s for s, p in by_segment.items() if p.get(b) == 200]
    assert seg_a != seg_b and set(by_segment[seg_a]) <= {a, c} and set(by_segment[seg_b]) <= {b, c}
    assert sum(p.get(c, 0) for p in by_segment.values()) == 10


async def test_trickled_rows_go_to_the_segment_where_their_project_has_its_rows(pool: asyncpg.Pool) -> None:
    """Small uploads are inserted into the graph of the segment where their project has the most rows, not into
    the newest segment whoever it belongs to (hour after hour of trickle into another project's graph)."""
    indexer = Indexer(pool, seal_min_rows=100, max_segments=4, exact_max_rows=50)
    async with pool.acquire() as conn:
        a = await make_project(conn, "alice", "proj-a", 8)
        b = await make_project(conn, "alice", "proj-b", 8)
        c = await make_project(conn, "alice", "proj-c", 8)
        for pid, seed in ((a, 1), (b, 2)):
            await add_embeddings(conn, pid, "alice", clustered(300, 8, 2, seed=seed), prefix=f"big{pid}-")
            await indexer.run_until_idle()  # a segment each: a's is 1, b's (the newest) 2
        await add_embeddings(conn, a, "alice", clustered(30, 8, 2, seed=3), prefix="small-a-")
        await add_embeddings(conn, c, "alice", clustered(5, 8, 2, seed=4), prefix="small-c-")
        await indexer.run_until_idle()
        assert await unindexed(conn) == 0
        rows = await conn.fetch(
            "SELECT project_id, index_segment, count(*) FROM embeddings WHERE text_id LIKE 'small-%' GROUP BY 1, 2"
        )
        homes = await conn.fetch(
            "SELECT project_id, min(index_segment) FROM embeddings WHERE text_id LIKE 'big%' GROUP BY 1"
        )
    home = {r[0]: r[1] for r in homes}
    assert home[a] < home[b]
    placed = {(r[0], r[1]): r[2] for r in rows}
    assert placed == {(a, home[a]): 30, (c, home[b]): 5}  # a's own segment; c (small) into the newest


async def test_invalid_index_left_by_a_crash_is_rebuilt(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 8)
        await add_embeddings(conn, pid, "alice", clustered(40, 8, 2, seed=1))
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        oid = (await index_def(conn, 8))[0]  # type: ignore[index]
        await conn.execute("ALTER INDEX embeddings_hnsw_8_1_1 RENAME TO embeddings_hnsw_8_1_9")
        # what an interrupted CREATE INDEX CONCURRENTLY leaves behind
        await conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1", oid)
        await add_embeddings(conn, pid, "alice", clustered(1, 8, 1, seed=2), prefix="n")
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        found = await index_defs(conn, 8)
        assert all(d[2] for d in found) and oid not in [d[0] for d in found], found  # dropped, segments rebuilt
        assert await unindexed(conn) == 0


async def test_lost_index_with_flipped_rows_is_rebuilt_at_start(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 8)
        await add_embeddings(conn, pid, "alice", clustered(40, 8, 2, seed=1), indexed=True)
        assert await index_def(conn, 8) is None
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        assert await index_def(conn, 8) is not None


async def test_dimensions_beyond_hnsw_limit_are_flipped_without_an_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "wide", 4096)
        await add_embeddings(conn, pid, "alice", clustered(3, 4096, 1, seed=1))
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        assert await unindexed(conn) == 0
        assert await index_def(conn, 4096) is None


async def test_work_is_left_to_the_worker_holding_the_lock(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 8)
        await add_embeddings(conn, pid, "alice", clustered(10, 8, 2, seed=1))
    async with pool.acquire() as other:
        assert await q.try_lock_indexer(other)
        indexer = Indexer(pool)
        assert await indexer.run_once() is False
        async with pool.acquire() as conn:
            assert await unindexed(conn) == 10 and await index_def(conn, 8) is None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await indexer.run_until_idle()
        await q.unlock_indexer(other)
    await Indexer(pool).run_until_idle()


async def test_server_runs_the_indexer_in_the_background(vdb) -> None:  # type: ignore[no-untyped-def]
    async with vdb.pool.acquire() as conn:
        await make_user(conn, "bob")
        pid = await make_project(conn, "bob", "p", 12)
        await add_embeddings(conn, pid, "bob", clustered(25, 12, 2, seed=1))
    async with asyncio.timeout(30):
        while True:
            async with vdb.pool.acquire() as conn:
                if await unindexed(conn) == 0 and await index_def(conn, 12) is not None:
                    break
            await asyncio.sleep(0.2)


async def test_stop_cancels_a_running_indexer(pool: asyncpg.Pool) -> None:
    indexer = Indexer(pool, idle_interval=0.05)
    indexer.start()
    indexer.wake()
    await asyncio.sleep(0.1)
    await indexer.stop()
    await indexer.stop()  # idempotent


async def test_stop_never_hangs_when_cancelled_right_after_a_wake(pool: asyncpg.Pool) -> None:
    # With asyncio.wait_for (Python 3.11) a cancel landing just after wake() was swallowed ~1 time in 2.
    for _ in range(30):
        indexer = Indexer(pool, idle_interval=0.05)
        indexer.start()
        await asyncio.sleep(0.01)
        indexer.wake()
        async with asyncio.timeout(5):
            await indexer.stop()


async def test_waits_instead_of_spinning_while_another_worker_holds_the_lock(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 8)
        await add_embeddings(conn, pid, "alice", clustered(10, 8, 2, seed=1))
    passes = 0

    class Counting(Indexer):
        async def run_once(self) -> bool:
            nonlocal passes
            passes += 1
            return await super().run_once()

    async with pool.acquire() as other:
        assert await q.try_lock_indexer(other)
        indexer = Counting(pool, idle_interval=0.2)
        indexer.start()
        await asyncio.sleep(1.0)
        await indexer.stop()
        await q.unlock_indexer(other)
    assert passes <= 10, f"{passes} passes in 1 s while locked out: the indexer spins"


def test_a_running_merge_yields_unless_it_is_about_to_finish() -> None:
    """``_build_yields`` from the running merge's progress: it finishes when its ETA is within
    BUILD_FINISH_SECONDS, and gives way to fresh work otherwise (a 20-s ETA yields: 30 s let a stream's rows wait
    40 s for their interim index in the 200k x 1536 bench)."""
    from vdb_grpc.indexer import BUILD_FINISH_SECONDS, BuildStatus, _Job, _State
    from vdb_grpc.queries.search import SegmentIndex

    indexer = Indexer(None, max_segments=2)  # type: ignore[arg-type]
    job = _Job("merge", 64, 1, 2, 30_000, "embeddings_hnsw_64_1_2")
    state = _State([SegmentIndex(f"embeddings_hnsw_64_{i}_{i}", 64, i, i, 10_000, True) for i in (1, 2, 3)], [])

    def eta(seconds: float) -> bool:
        done = job.rows - int(seconds * 1000)
        indexer._build_status = BuildStatus(
            job.name, 64, "merge", job.rows, "building", done, job.rows, 20.0, 1000.0, seconds
        )
        return indexer._build_yields(job, state)

    assert BUILD_FINISH_SECONDS == 10.0
    assert eta(5) is False  # about to finish: finishes
    assert eta(20) is True  # gives way to the fresh rows
    indexer._build_status = None
    assert indexer._build_yields(job, state) is True  # progress unknown: gives way


def test_a_running_segment_build_yields_once_unless_it_is_about_to_finish() -> None:
    """A segment's HNSW build gives way to a seal or an interim build unless its ETA is within
    BUILD_FINISH_SECONDS -- and only once: a second time it goes on (its work is thrown away at most once)."""
    from vdb_grpc.indexer import YIELDS_TO, BuildStatus, _Job, _State

    indexer = Indexer(None, max_segments=2)  # type: ignore[arg-type]
    job = _Job("segment", 64, 4, 4, 30_000, "embeddings_hnsw_64_4_4")
    state = _State([], [])
    assert set(YIELDS_TO["segment"]) == {"seal", "interim"}  # not another segment's HNSW build, nor a merge
    indexer._build_status = BuildStatus(job.name, 64, "segment", job.rows, "building", 25_000, 0, 20.0, 1000.0, 5.0)
    assert indexer._build_yields(job, state) is False  # 5 s left: finishes
    indexer._build_status = BuildStatus(job.name, 64, "segment", job.rows, "building", 5_000, 0, 5.0, 1000.0, 25.0)
    assert indexer._build_yields(job, state) is True
    indexer._yielded.add(job.name)  # what run_once records when it cancels the build
    assert indexer._build_yields(job, state) is False  # cancelled once already: runs to the end this time
    other = _Job("segment", 64, 5, 5, 30_000, "embeddings_hnsw_64_5_5")
    indexer._build_status = None
    assert indexer._build_yields(other, state) is True  # progress unknown: gives way
