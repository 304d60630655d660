"""The background indexer: per-dimension partial HNSW indexes, flips, rebuilds, crash leftovers, locks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest
from search_fixtures import add_embeddings, clustered, make_project, make_user

from vdb_grpc.db import create_pool
from vdb_grpc.indexer import Indexer
from vdb_grpc.queries import indexer as q


@pytest.fixture
async def pool(db_uri: str, server_settings) -> AsyncIterator[asyncpg.Pool]:  # type: ignore[no-untyped-def]
    p = await create_pool(db_uri, server_settings)
    async with p.acquire() as conn:
        await make_user(conn, "alice")
    yield p
    await p.close()


async def index_def(conn: asyncpg.Connection, dim: int) -> tuple[int, str, bool] | None:
    row = await conn.fetchrow(
        "SELECT c.oid::int, pg_get_indexdef(c.oid), i.indisvalid FROM pg_class c"
        " JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = $1",
        f"embeddings_hnsw_{dim}",
    )
    return (row[0], row[1], row[2]) if row else None


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


async def test_small_backlog_is_flipped_into_the_existing_index(pool: asyncpg.Pool) -> None:
    indexer = Indexer(pool, rebuild_min_backlog=1000)
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


async def test_large_backlog_is_rebuilt_in_bulk(pool: asyncpg.Pool) -> None:
    indexer = Indexer(pool, rebuild_min_backlog=50)
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 16)
        await add_embeddings(conn, pid, "alice", clustered(60, 16, 3, seed=1))
    await indexer.run_until_idle()
    async with pool.acquire() as conn:
        before = await index_def(conn, 16)
        await add_embeddings(conn, pid, "alice", clustered(200, 16, 3, seed=2), prefix="n")
    await indexer.run_until_idle()
    async with pool.acquire() as conn:
        after = await index_def(conn, 16)
        assert await unindexed(conn) == 0
        assert before is not None and after is not None and after[0] != before[0] and after[2]


async def test_invalid_index_left_by_a_crash_is_rebuilt(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await make_project(conn, "alice", "p", 8)
        await add_embeddings(conn, pid, "alice", clustered(40, 8, 2, seed=1))
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        oid = (await index_def(conn, 8))[0]  # type: ignore[index]
        # what an interrupted CREATE INDEX CONCURRENTLY leaves behind
        await conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1", oid)
        await add_embeddings(conn, pid, "alice", clustered(1, 8, 1, seed=2), prefix="n")
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        found = await index_def(conn, 8)
        assert found is not None and found[2] and found[0] != oid


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
