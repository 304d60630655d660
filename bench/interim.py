"""Recall@10 and cost of the *interim* IVFFlat index (docs/search.md) on HELD-OUT queries, per probes setting.

Run by hand:

    .venv/bin/python bench/interim.py [--rows 100000] [--dims 384] [--probes 5,10,20]
        [--shapes 1000:0.6,100:1.0,5000:1.5]

Starts a private embedded PostgreSQL in a temp dir. For each shape ROWS_PER_CLUSTER:SPREAD it loads ROWS
clustered vectors into one project, seals them into one segment and builds the interim index exactly as the
indexer does (``queries.indexer.create_interim_index_sql``), then asks QUERIES held-out vectors -- fresh draws from
the same clusters, never stored documents -- through the service's search statement (one index arm) and compares
with exact numpy search; then the same statement with the index dropped (the exact arm it replaces). Prints build
seconds, and per probes: recall@10, mean statement latency; and the exact latency.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

K = 10


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--probes", default="5,10,20")
    ap.add_argument("--shapes", default="1000:0.6,100:1.0,5000:1.5", help="rows per cluster:spread, comma-separated")
    args = ap.parse_args()

    from recall import clusters, draw, measure, private_database  # bench/recall.py

    from vdb_grpc.queries import indexer as qi
    from vdb_grpc.queries import search as q

    server, pool, pid = await private_database(args.dims, "vdb-interim-")
    lists = qi.interim_lists(args.rows)
    print(f"rows={args.rows} dims={args.dims} lists={lists} queries={args.queries} (held out)", flush=True)
    for shape in args.shapes.split(","):
        per, spread = shape.split(":")
        centres = clusters(max(1, args.rows // int(per)), args.dims, seed=1)
        x = draw(centres, args.rows, seed=2, spread=float(spread))
        queries = draw(centres, args.queries, seed=3, spread=float(spread))
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        truth = [set(np.argsort(-(xn @ (v / np.linalg.norm(v))))[:K].tolist()) for v in queries]
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM embeddings; DELETE FROM embedding_segments")
            await conn.execute("VACUUM embeddings")
            label = await qi.new_segment(conn, args.dims)
            recs = [(f"t{i}", "b", pid, x[i], args.dims, True, label) for i in range(args.rows)]
            await conn.copy_records_to_table(
                "embeddings",
                records=recs,
                columns=["text_id", "owner", "project_id", "vector", "vector_dim", "indexed", "index_segment"],
            )
            await conn.execute("VACUUM ANALYZE embeddings")
            t = time.monotonic()
            await conn.execute("SET maintenance_work_mem = '512MB'")
            await conn.execute(qi.create_interim_index_sql(args.dims, label, label, args.rows))
            build_s = time.monotonic() - t
            plan = q.SearchPlan.over(((label, label),))

            for probes in (int(p) for p in args.probes.split(",")):
                await conn.execute(f"SET ivfflat.probes = {probes}")
                rec, _, ms = await measure(conn, plan, args.dims, pid, queries, truth)
                print(f"{args.rows // int(per)} clusters, spread {spread}: build {build_s:.1f}s  probes {probes:3d}"
                      f"  recall@10 {rec:.3f}  {ms:.2f} ms", flush=True)  # fmt: skip
            await conn.execute(qi.drop_index_sql(q.interim_index_name(args.dims, label, label)))
            rec, _, ms = await measure(conn, plan, args.dims, pid, queries, truth)
            print(f"{args.rows // int(per)} clusters, spread {spread}: exact arm (no index)"
                  f"  recall@10 {rec:.3f}  {ms:.2f} ms", flush=True)  # fmt: skip
    await pool.close()
    server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
