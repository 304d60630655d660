"""Search plans on a few thousand clustered rows: EXPLAIN shows the HNSW index where it should be used, and
every plan the service may choose reaches recall@10 >= 0.95 against exact numpy search.

The exact/HNSW crossover is lowered (``exact_max_rows``) so a 3,000-row project takes the HNSW plan and the
module stays fast; ``choose_plan`` itself is tested with production-sized numbers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest
from search_fixtures import add_embeddings, clustered, exact_top, make_project, make_user

from vdb_grpc.auth import ADMIN
from vdb_grpc.db import create_pool
from vdb_grpc.domain.search import Condition, Search, SearchQuery, choose_plan
from vdb_grpc.indexer import Indexer
from vdb_grpc.queries import search as q
from vdb_grpc.queries.search import PlanStats

DIM = 64
BIG = 3000
SMALL = 600
TAIL = 300
K = 10


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray[Any, Any]]:
    return {
        "big": clustered(BIG, DIM, 30, seed=1),
        "small": clustered(SMALL, DIM, 6, seed=2),
        "other": clustered(2000, DIM, 20, seed=3),
        "tail": clustered(TAIL, DIM, 30, seed=4),
    }


@pytest.fixture
async def pool(db_uri: str, server_settings) -> AsyncIterator[asyncpg.Pool]:  # type: ignore[no-untyped-def]
    p = await create_pool(db_uri, server_settings)
    yield p
    await p.close()


@pytest.fixture
async def loaded(pool: asyncpg.Pool, data) -> asyncpg.Pool:  # type: ignore[no-untyped-def]
    """Projects big (3,000 rows, 5% tagged "rare"), small (600) and other (2,000) in one 64-dim index."""
    async with pool.acquire() as conn:
        await make_user(conn, "alice")
        for name in ("big", "small", "other"):
            pid = await make_project(conn, "alice", name, DIM)
            md = [{"src": "rare" if i % 20 == 0 else "common"} for i in range(len(data[name]))]
            await add_embeddings(conn, pid, "alice", data[name], prefix=f"{name}-", metadata=md)
    await Indexer(pool).run_until_idle()
    return pool


def searcher(pool: asyncpg.Pool) -> Search:
    return Search(pool, exact_max_rows=1000, min_share_divisor=50)


async def recall(
    search: Search,
    x: np.ndarray[Any, Any],
    project: str,
    prefix: str,
    ids: list[str],
    *,
    keep: np.ndarray[Any, Any] | None = None,
    exclude: tuple[Condition, ...] = (),
    n_queries: int = 40,
) -> float:
    rng = np.random.default_rng(11)
    hits = 0
    for qi in rng.choice(len(x), n_queries, replace=False):
        mask = np.ones(len(x), bool) if keep is None else keep.copy()
        mask[qi] = False  # the query document itself is left out
        truth = {ids[i] for i in exact_top(x, x[qi], K, mask)}
        got = await search.search(
            ADMIN, SearchQuery(owner="alice", project_handle=project, text_id=ids[qi], threshold=-1, exclude=exclude)
        )
        assert len(got) == K
        hits += len(truth & {r.text_id for r in got})
    return hits / (K * n_queries)


async def plan_of(search: Search, pool: asyncpg.Pool, project: str, k: int = K) -> str:
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT project_id FROM projects WHERE project_handle = $1", project)
        return await search.plan_for(conn, pid, DIM, k)


async def explain(pool: asyncpg.Pool, plan: q.Plan, project: str, query: Any, *, generic: bool, n_excl: int = 0) -> str:
    sql = q.search_sql(plan, DIM, n_excl, 0, include_text=True, include_metadata=True)
    excl = tuple(q.MetadataFilter(("src",), '"common"') for _ in range(n_excl))
    async with pool.acquire() as conn, conn.transaction():
        if generic:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        pid = await conn.fetchval("SELECT project_id FROM projects WHERE project_handle = $1", project)
        args = q.search_args(query, pid, None, threshold=0.5, offset=0, limit=K, exclude=excl, require=())
        rows = await conn.fetch("EXPLAIN (FORMAT JSON) " + sql, *args)
    return json.dumps(json.loads(rows[0][0]))


@pytest.mark.parametrize("generic", [False, True])
async def test_hnsw_plan_uses_the_index(loaded: asyncpg.Pool, data, generic: bool) -> None:  # type: ignore[no-untyped-def]
    plan = await explain(loaded, "hnsw", "big", data["big"][0], generic=generic)
    assert '"Index Name": "embeddings_hnsw_64"' in plan, plan
    assert '"Index Name": "embeddings_unindexed_idx"' in plan, plan  # the tail is read through its btree
    filtered = await explain(loaded, "hnsw", "big", data["big"][0], generic=generic, n_excl=1)
    assert '"Index Name": "embeddings_hnsw_64"' in filtered, filtered


async def test_exact_plan_never_uses_the_index(loaded: asyncpg.Pool, data) -> None:  # type: ignore[no-untyped-def]
    plan = await explain(loaded, "exact", "small", data["small"][0], generic=False)
    assert "embeddings_hnsw" not in plan, plan


async def test_exact_plan_on_a_small_project(loaded: asyncpg.Pool, data) -> None:  # type: ignore[no-untyped-def]
    s = searcher(loaded)
    assert await plan_of(s, loaded, "small") == "exact"
    ids = [f"small-{i:05d}" for i in range(SMALL)]
    assert await recall(s, data["small"], "small", "small-", ids) == 1.0


async def test_hnsw_plan_on_a_large_project(loaded: asyncpg.Pool, data) -> None:  # type: ignore[no-untyped-def]
    s = searcher(loaded)
    assert await plan_of(s, loaded, "big") == "hnsw"
    ids = [f"big-{i:05d}" for i in range(BIG)]
    assert await recall(s, data["big"], "big", "big-", ids) >= 0.95


async def test_hnsw_plan_with_an_unindexed_tail(loaded: asyncpg.Pool, data) -> None:  # type: ignore[no-untyped-def]
    async with loaded.acquire() as conn:
        pid = await conn.fetchval("SELECT project_id FROM projects WHERE project_handle = 'big'")
        await add_embeddings(conn, pid, "alice", data["tail"], prefix="tail-")
        assert await conn.fetchval("SELECT count(*) FROM embeddings WHERE project_id = $1 AND NOT indexed", pid) == TAIL
    s = searcher(loaded)
    assert await plan_of(s, loaded, "big") == "hnsw"
    x = np.concatenate([data["big"], data["tail"]])
    ids = [f"big-{i:05d}" for i in range(BIG)] + [f"tail-{i:05d}" for i in range(TAIL)]
    assert await recall(s, x, "big", "", ids) >= 0.95
    # a tail document as the query finds its indexed neighbours and the other tail rows
    got = await s.search(ADMIN, SearchQuery(owner="alice", project_handle="big", text_id="tail-00000", threshold=-1))
    truth = {ids[i] for i in exact_top(x, x[BIG], K + 1)} - {"tail-00000"}
    assert len(truth & {r.text_id for r in got}) >= K - 1


async def test_hnsw_plan_with_an_exclude_dropping_95_percent(loaded: asyncpg.Pool, data) -> None:  # type: ignore[no-untyped-def]
    s = searcher(loaded)
    keep = np.array([i % 20 == 0 for i in range(BIG)])
    ids = [f"big-{i:05d}" for i in range(BIG)]
    r = await recall(s, data["big"], "big", "big-", ids, keep=keep, exclude=(Condition("src", "common"),))
    assert r >= 0.95


async def test_exact_and_hnsw_agree_on_order_and_threshold(loaded: asyncpg.Pool, data) -> None:  # type: ignore[no-untyped-def]
    hnsw = searcher(loaded)
    exact = Search(loaded, exact_max_rows=100_000)
    assert await plan_of(exact, loaded, "big") == "exact"
    query = SearchQuery(owner="alice", project_handle="big", vector=list(data["big"][5]), threshold=0.7, limit=20)
    a = await hnsw.search(ADMIN, query)
    b = await exact.search(ADMIN, query)
    assert all(r.similarity >= 0.7 - 1e-6 for r in a + b)
    assert [r.similarity for r in a] == sorted((r.similarity for r in a), reverse=True)
    assert len({r.text_id for r in a} & {r.text_id for r in b}) >= 0.9 * len(b)


def test_choose_plan() -> None:
    def plan(index_rows: int | None, project_rows: int, k: int = 10, dim: int = 384) -> str:
        stats = PlanStats(index_rows=index_rows, project_rows=project_rows)
        return choose_plan(dim, stats, k, exact_max_rows=4000, min_share_divisor=50)

    assert plan(100_000, 100_000) == "hnsw"
    assert plan(100_000, 4000) == "exact"  # small project
    assert plan(None, 100_000) == "exact"  # no usable index (yet)
    assert plan(0, 100_000) == "exact"
    assert plan(1_000_000, 15_000) == "exact"  # 1.5% of the index: filtered index scan would wade through others
    assert plan(1_000_000, 25_000) == "hnsw"
    assert plan(100_000, 5000, k=1500) == "exact"  # deep page
    assert plan(100_000, 100_000, dim=4096) == "exact"  # beyond HNSW's dimension limit
