"""Bulk import/export benchmark: `vdb-grpc import` of a JSONL file against StreamUpsertEmbeddings, same rows.

Run by hand (a few minutes; needs ~2 GB of disk in a temp dir per 100,000 x 384 rows):

    .venv/bin/python bench/import_export.py                    # 100,000 x 384 dims
    .venv/bin/python bench/import_export.py --rows 1000000     # 1M x 384 (about 8 GB of JSONL)
    .venv/bin/python bench/import_export.py --rows 1000000 --parquet-only   # the stream and Parquet only

Each measurement runs on a fresh ``python -m vdb_grpc serve`` (embedded, background indexer on), like
bench/ingest.py, whose helpers it uses:

1. StreamUpsertEmbeddings from a separate client process that built every message before the clock started
   (bench/ingest.py's stream client: the rate the server takes, with no file to read);
2. ``vdb-grpc import FILE`` as a separate process, clock around the whole command: reading and checking the
   JSONL file (vectors written as ``json.dumps(float32_vector.tolist())`` does: 17 significant digits),
   building the messages and the same stream, with ``--batch-size`` as in 1;
3. ``vdb-grpc export`` of the imported project to JSONL (float16-rounded vectors), then ``vdb-grpc import`` of
   that export into a fresh server (what moving a project between servers costs);
4. with pyarrow installed: the same rows as Parquet, imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: int, dims: int) -> None:
    text_ids, vectors, metadata = ingest.dataset(rows, dims)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            out.write(json.dumps({"text_id": text_ids[i], "vector": vectors[i].tolist(), "metadata": metadata[i]}))
            out.write("\n")


def write_parquet(path: Path, rows: int, dims: int) -> bool:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    text_ids, vectors, metadata = ingest.dataset(rows, dims)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dims).cast(pa.list_(pa.float32()))
    table = pa.table({"text_id": text_ids, "vector": vec, "metadata": [json.dumps(m) for m in metadata]})
    pq.write_table(table, path)
    return True


class Fresh:
    """A fresh embedded server with the bench user and one project of ``dims`` dimensions."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.dir = Path(tempfile.mkdtemp(prefix="vdbx-"))

    async def __aenter__(self) -> Fresh:
        import asyncpg

        from vdb_grpc.db import init_connection

        self.served = ingest.Served(self.dir)
        socket_dir = (self.dir / "pg" / "postmaster.pid").read_text().splitlines()[4]
        conn = await asyncpg.connect(f"postgresql://postgres:@/vdb?host={socket_dir}")
        await init_connection(conn)
        self.key = await ingest.create_user(self.served.port, (self.dir / "admin_key").read_text().strip())
        await ingest.create_projects(conn, self.dims, ["bench-grpc"])
        await conn.execute("CHECKPOINT")
        self.conn = conn
        return self

    async def stored(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM embeddings"))

    async def __aexit__(self, *exc: Any) -> None:
        await self.conn.close()
        self.served.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def cli(key: str, *args: str) -> float:
    """Seconds for one ``vdb-grpc`` command as a separate process."""
    env = dict(os.environ, VDB_API_KEY=key)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vdb_grpc", *args, "--quiet"], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - started


def line(name: str, rows: int, seconds: float, ref: float | None = None) -> None:
    rate = rows / seconds
    text = f"  {name:<52} {rate:>9,.0f} rows/s  ({seconds:7.2f} s)"
    if ref is not None:
        text += f"   {rate / ref:.2f} of the stream's rate"
    print(text, flush=True)


async def jsonl_runs(work: Path, rows: int, dims: int, batch: int, project: str, stream_rate: float) -> None:
    """JSONL import, export, and import of the export, each on a fresh server."""
    src = work / "corpus.jsonl"
    started = time.perf_counter()
    write_jsonl(src, rows, dims)
    print(f"  wrote {src.stat().st_size / 1e6:,.0f} MB of JSONL in {time.perf_counter() - started:.0f}s")
    async with Fresh(dims) as f:
        server = f"127.0.0.1:{f.served.port}"
        s = await asyncio.to_thread(
            cli, f.key, "import", str(src), "--project", project, "--server", server, "--batch-size", str(batch)
        )
        assert await f.stored() == rows
        line("vdb-grpc import corpus.jsonl (17-digit floats)", rows, s, stream_rate)
        exported = work / "export.jsonl"
        s = await asyncio.to_thread(cli, f.key, "export", "--project", project, "--server", server, "-o", str(exported))
        line("vdb-grpc export (float16-rounded vectors)", rows, s)
    src.unlink()

    async with Fresh(dims) as f:
        server = f"127.0.0.1:{f.served.port}"
        s = await asyncio.to_thread(
            cli, f.key, "import", str(exported), "--project", project, "--server", server,
            "--batch-size", str(batch),
        )  # fmt: skip
        assert await f.stored() == rows
        line("vdb-grpc import export.jsonl (its own export)", rows, s, stream_rate)
    exported.unlink()


async def main(args: argparse.Namespace) -> int:
    rows, dims, batch = args.rows, args.dims, args.batch
    work = Path(tempfile.mkdtemp(prefix="vdbxf-"))
    try:
        print(f"vdb-grpc import/export benchmark: {rows:,} x {dims} dims, batches of {batch:,}; {os.cpu_count()} CPUs")
        print(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        project = "bench/bench-grpc"
        async with Fresh(dims) as f:
            s = await asyncio.to_thread(
                ingest.run_client, f.served.port, f.key, "stream", "bench-grpc", rows, dims, batch
            )
            line("StreamUpsertEmbeddings, messages prebuilt", rows, s)
        stream_rate = rows / s
        if not args.parquet_only:
            await jsonl_runs(work, rows, dims, batch, project, stream_rate)

        parquet = work / "corpus.parquet"
        if write_parquet(parquet, rows, dims):
            async with Fresh(dims) as f:
                server = f"127.0.0.1:{f.served.port}"
                s = await asyncio.to_thread(
                    cli, f.key, "import", str(parquet), "--project", project, "--server", server,
                    "--batch-size", str(batch),
                )  # fmt: skip
                assert await f.stored() == rows
                line("vdb-grpc import corpus.parquet", rows, s, stream_rate)
        print(f"  load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="embeddings to import")
    parser.add_argument("--dims", type=int, default=384, help="vector dimensions")
    parser.add_argument("--batch", type=int, default=1000, help="embeddings per stream message")
    parser.add_argument("--parquet-only", action="store_true", help="skip the JSONL runs (8 GB of JSONL at 1M)")
    sys.exit(asyncio.run(main(parser.parse_args())))
