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
from vdb_grpc.domain.search import (
    Condition,
    ProjectStats,
    Search,
    SearchQuery,
    carry_over,
    choose_plan,
    describe_plan,
)
from vdb_grpc.indexer import Indexer
from vdb_grpc.queries import indexer as q_indexer
from vdb_grpc.queries import search as q
from vdb_grpc.queries.search import SearchPlan, SegmentIndex

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
        return (await search.plan_for(conn, pid, DIM, k)).kind


async def live_plan(pool: asyncpg.Pool) -> SearchPlan:
    """HNSW arms over every valid index of the test dimension."""
    async with pool.acquire() as conn:
        cover = q.cover(await q.segment_indexes(conn, DIM))
    assert cover
    return SearchPlan.over(tuple((s.lo, s.hi) for s in cover))


def scans(plan_json: str) -> list[tuple[str, str | None]]:
    """(node type, index name) of every scan of embeddings in an EXPLAIN (FORMAT JSON) result."""
    out: list[tuple[str, str | None]] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "embeddings" or "Index Name" in node:
            out.append((node["Node Type"], node.get("Index Name")))
        for child in node.get("Plans", []):
            walk(child)

    walk(json.loads(plan_json)[0]["Plan"])
    return out


async def explain(
    pool: asyncpg.Pool, plan: SearchPlan, project: str, query: Any, *, generic: bool, n_excl: int = 0
) -> str:
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
    live = await live_plan(loaded)
    plan = await explain(loaded, live, "big", data["big"][0], generic=generic)
    used = scans(plan)
    assert any((ix or "").startswith("embeddings_hnsw_64_") for _, ix in used), plan
    assert all(node != "Seq Scan" for node, _ in used), plan  # the exact arms (tail) read through a btree
    filtered = await explain(loaded, live, "big", data["big"][0], generic=generic, n_excl=1)
    assert any((ix or "").startswith("embeddings_hnsw_64_") for _, ix in scans(filtered)), filtered


async def test_exact_plan_never_uses_the_index(loaded: asyncpg.Pool, data) -> None:  # type: ignore[no-untyped-def]
    plan = await explain(loaded, q.EXACT, "small", data["small"][0], generic=False)
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


def seg(lo: int, hi: int, rows: int) -> SegmentIndex:
    return SegmentIndex(f"embeddings_hnsw_384_{lo}_{hi}", 384, lo, hi, rows, True)


def test_choose_plan() -> None:
    def plan(
        segments: tuple[SegmentIndex, ...], project_rows: int, in_segments: tuple[int, ...], k: int = 10
    ) -> SearchPlan:
        stats = ProjectStats(segments, project_rows, in_segments)
        return choose_plan(stats, k, exact_max_rows=4000, min_share_divisor=50)

    one = (seg(1, 1, 100_000),)
    assert plan(one, 100_000, (4001,)) == SearchPlan.over(((1, 1),))
    assert plan(one, 100_000, (4001,)).kind == "hnsw"
    assert plan(one, 4000, ()).kind == "exact"  # small project
    assert plan((), 100_000, ()).kind == "exact"  # no usable index (yet)
    big = (seg(1, 1, 1_000_000),)
    assert plan(big, 15_000, (15_000,)).kind == "exact"  # 1.5% of the index: filtered scan wades through others
    assert plan(big, 25_000, (20_001,)).kind == "hnsw"
    assert plan(one, 5000, (4001,), k=1500).kind == "exact"  # deep page
    # two segments: the project is big in one, small in the other; labels outside both are read exactly
    two = (seg(1, 4, 1_000_000), seg(7, 7, 50_000))
    p = plan(two, 60_000, (20_001, 300))
    assert p.hnsw == ((1, 4),)
    # segments 5-6 (no index), 7 (the project's 300 rows) and 8- are adjacent: one exact arm reads them all
    assert p.exact == ((0, 0), (5, None))
    assert p.kind == "hnsw"


def test_plans_are_described_for_the_slow_search_log() -> None:
    assert describe_plan(q.EXACT) == "exact (whole project)"
    assert describe_plan(SearchPlan.over(((3, 5), (9, 9)), ((6, 8),))) == (
        "index arms over segments 3-5, 9; exact arms: unindexed rows, segments 0-2, 6-8, 10-"
    )


def test_every_label_lies_in_exactly_one_arm() -> None:
    p = SearchPlan.over(((3, 5), (9, 9)), ((6, 8),))
    ranges = [(lo, hi) for lo, hi in p.hnsw] + [(lo, hi if hi is not None else 10**9) for lo, hi in p.exact]
    for label in range(0, 50):
        assert sum(lo <= label <= hi for lo, hi in ranges) == 1, label


def test_cover_prefers_the_merged_index_and_ignores_invalid_ones() -> None:
    parts = [seg(1, 1, 10), seg(2, 2, 10), seg(3, 3, 10)]
    merged = seg(1, 2, 20)
    building = SegmentIndex("embeddings_hnsw_384_1_3", 384, 1, 3, 0, False)
    assert q.cover([*parts, merged, building]) == (merged, parts[2])
    assert q.cover(parts) == tuple(parts)


def test_cover_takes_an_interim_index_only_where_no_hnsw_index_is_valid() -> None:
    hnsw = [seg(1, 1, 10), seg(2, 2, 10)]
    interim2 = SegmentIndex("embeddings_ivf_384_2_2", 384, 2, 2, 10, True, interim=True)
    interim3 = SegmentIndex("embeddings_ivf_384_3_3", 384, 3, 3, 10, True, interim=True)
    building3 = SegmentIndex("embeddings_hnsw_384_3_3", 384, 3, 3, 0, False)
    assert q.cover([*hnsw, interim2, interim3, building3]) == (*hnsw, interim3)
    merged = seg(1, 3, 30)
    assert q.cover([*hnsw, interim3, merged]) == (merged,)
    assert q.parse_index_name("embeddings_ivf_384_3_3") == (384, 3, 3, False, True)
    assert q.parse_index_name("embeddings_ivf_384") is None  # interim indexes always name their range
    assert q.parse_index_name("embeddings_hnsw_384") == (384, 0, 0, True, False)


def test_index_ddl_names_only_segment_indexes() -> None:
    """Index DDL cannot bind parameters: only names ``parse_index_name`` accepts are ever dropped, and the
    interim index's lists stay between 1 and 100 (a tenth of the segment probed)."""
    for name in ("embeddings_hnsw_384_1_2", "embeddings_ivf_384_3_3", "embeddings_hnsw_384"):
        assert q_indexer.drop_index_sql(name) == f"DROP INDEX CONCURRENTLY IF EXISTS {name}"
    for name in ("embeddings_pkey", "embeddings_ivf_384", "embeddings_hnsw_384_1_2; DROP TABLE users", "x"):
        with pytest.raises(ValueError):
            q_indexer.drop_index_sql(name)
    assert [q_indexer.interim_lists(n) for n in (0, 199, 400, 20_000, 250_000)] == [1, 1, 2, 100, 100]
    sql = q_indexer.create_interim_index_sql(384, 3, 3, 50_000)
    assert "embeddings_ivf_384_3_3" in sql and "lists = 100" in sql
    assert "WHERE vector_dim = 384 AND indexed AND index_segment BETWEEN 3 AND 3" in sql  # the HNSW predicate


def test_counts_carry_over_to_a_new_index_list() -> None:
    """After a build or merge the plan uses the old counts carried over (recounted in the background)."""
    a, b, c = seg(1, 1, 500_000), seg(2, 2, 500_000), seg(3, 3, 50_000)

    def cap(s: SegmentIndex) -> int:
        return max(4000, s.rows // 50) + 1

    old = ProjectStats((a, b), 44_001, (cap(a), 1_000))  # a: at its cap (at least that many rows); b: 1,000
    merged = seg(1, 2, 1_000_000)
    # a merge: counts add up, and a count at its cap keeps the merged one at its cap
    assert cap(a) + 1_000 < cap(merged)
    assert carry_over(old, (merged,), cap) == ProjectStats((merged,), 44_001, (cap(merged),))
    small = ProjectStats((a, b), 9_000, (3_000, 1_000))
    assert carry_over(small, (merged,), cap) == ProjectStats((merged,), 9_000, (4_000,))
    # a segment just built: 0 (its rows stay in an exact arm until the recount)
    assert carry_over(old, (a, b, c), cap) == ProjectStats((a, b, c), 44_001, (cap(a), 1_000, 0))
    # a merged index dropped by hand: its parts cannot be told apart -> counted anew
    assert carry_over(ProjectStats((merged,), 44_001, (20_000,)), (a, b), cap) is None
    # a project small enough for the whole-exact plan has no per-segment counts
    assert carry_over(ProjectStats((a,), 10), (merged,), cap) == ProjectStats((merged,), 10)


@pytest.mark.parametrize("generic", [False, True])
async def test_exact_parts_read_only_the_projects_rows(loaded: asyncpg.Pool, data, generic: bool) -> None:  # type: ignore[no-untyped-def]
    """A small project's exact plan, and every exact arm of the HNSW plan, go through the segment btree: never
    a scan of every project's rows (the table holds 5,600 rows of three projects; the small one has 600)."""
    async with loaded.acquire() as conn:
        await conn.execute("ANALYZE embeddings")
    for plan, project in ((q.EXACT, "small"), (await live_plan(loaded), "big")):
        used = scans(await explain(loaded, plan, project, data["small"][0], generic=generic))
        assert used and all(node != "Seq Scan" for node, _ in used), used
        exact_scans = {ix for _, ix in used if ix and not ix.startswith("embeddings_hnsw") and ix != "embeddings_pkey"}
        assert exact_scans and exact_scans <= {"embeddings_project_segment_idx", "embeddings_unindexed_idx"}, used


@pytest.mark.parametrize("generic", [False, True])
async def test_exact_arms_over_an_indexed_segment_never_use_its_hnsw_index(
    loaded: asyncpg.Pool, data, generic: bool
) -> None:  # type: ignore[no-untyped-def]
    """An exact arm over a segment range implies that segment's index predicate; it must still be exact (btree
    + sort), never an HNSW scan -- for a project absent from the segment that scan would also walk the index."""
    async with loaded.acquire() as conn:
        cover = q.cover(await q.segment_indexes(conn, DIM))
    lo, hi = cover[0].lo, cover[0].hi
    plan = SearchPlan(whole=False, hnsw=(), exact=((0, lo - 1), (lo, hi), (hi + 1, None)))
    used = scans(await explain(loaded, plan, "small", data["small"][0], generic=generic))
    assert all(not (ix or "").startswith("embeddings_hnsw") for _, ix in used), used


@pytest.mark.parametrize("generic", [False, True])
async def test_an_index_arm_uses_its_index_when_the_project_fills_its_segment(
    pool: asyncpg.Pool, generic: bool
) -> None:
    """A project whose rows are all of one segment (a stream's segment of its own) in a table of many others'
    rows: the planner, multiplying the project's and the segment's shares as if they were independent,
    estimates a handful of its rows there and answered the index arm with the btree and a sort of all of them --
    the 20,000-row project of the 200k x 1536 bench read exactly at 110-130 ms instead of 2-4 ms through its HNSW
    index. The arm must use the index, as custom and as generic plan."""
    async with pool.acquire() as conn:
        await make_user(conn, "alice")
        own = await make_project(conn, "alice", "own", DIM)
        await add_embeddings(conn, own, "alice", clustered(3_000, DIM, 6, seed=6), prefix="s-")
    await Indexer(pool).run_until_idle()
    async with pool.acquire() as conn:
        # 100,000 rows of other projects (4 dimensions, left unindexed) make the project and its segment 3 % of
        # the table each
        for n in range(4):
            other = await make_project(conn, "alice", f"other{n}", 4)
            await add_embeddings(conn, other, "alice", clustered(25_000, 4, 5, seed=10 + n), prefix=f"o{n}-")
        await conn.execute("ANALYZE embeddings")
        (segment,) = q.cover(await q.segment_indexes(conn, DIM))
    plan = SearchPlan.over(((segment.lo, segment.hi),))
    used = scans(await explain(pool, plan, "own", clustered(1, DIM, 6, seed=7)[0], generic=generic))
    assert ("Index Scan", segment.name) in used, used
