"""Ingest benchmark: gRPC uploads from a separate client process against the COPY floor, same data, same table shape.

Run by hand (a few minutes; needs ~2 GB of disk in a temp dir):

    .venv/bin/python bench/ingest.py                      # 100,000 x 384 dims, batches of 1,000
    .venv/bin/python bench/ingest.py --preset all         # that, then 20,000 x 1,536 dims
    .venv/bin/python bench/ingest.py --rows 50000 --dims 768 --batch 500

For each size and each gRPC method it starts ``python -m vdb_grpc serve`` in embedded mode on a fresh data dir
(the real server, background indexer included), creates a user through the API and an instance + project by
SQL, then measures on that server:

1. the floor: one ``copy_records_to_table`` (asyncpg, binary COPY) of the same rows into a fresh table shaped
   exactly like ``embeddings`` (columns, defaults, checks, indexes and foreign keys) in the same database; the
   records are built before the clock starts. For reference (first run only) also the same COPY into a table
   without the foreign keys (``LIKE embeddings INCLUDING ALL`` alone);
2. the gRPC upload of the same rows from a separate client process, either StreamUpsertEmbeddings (one stream,
   one message per batch) or UpsertEmbeddings (one request per batch, each awaited before the next).

The client builds its request messages before the clock starts (as the floor builds its records); the clock
stops when the server has answered, i.e. every row is committed. The server's background indexer is on, as in
production (it waits while uploads arrive); the line after each gRPC figure says how far it got. Items carry
small metadata ({"source", "page", "lang"}) and no text. Each gRPC rate is printed with its ratio to the floor
and the target (>= 0.40).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.40
PRESETS = {"small": (100_000, 384), "large": (20_000, 1536)}
SEED = 7


def dataset(rows: int, dims: int) -> tuple[list[str], np.ndarray[Any, Any], list[dict[str, Any]]]:
    """The benchmark rows (deterministic, so the client process rebuilds exactly the same ones)."""
    rng = np.random.default_rng(SEED)
    vectors = rng.standard_normal((rows, dims), dtype=np.float32)
    text_ids = [f"https://example.org/corpus/doc-{i // 20}#chunk-{i % 20}" for i in range(rows)]
    metadata = [{"source": f"doc-{i // 20}", "page": i % 20, "lang": "en"} for i in range(rows)]
    return text_ids, vectors, metadata


# --------------------------------------------------------------------------------------------- client side


def client_main(port: int, key: str, mode: str, project: str, rows: int, dims: int, batch: int) -> None:
    """Separate process: build the requests, wait for "go" on stdin, upload, print the seconds it took."""
    import grpc

    from vdb_grpc.v1 import embedding_pb2 as pb
    from vdb_grpc.v1 import embedding_pb2_grpc

    text_ids, vectors, metadata = dataset(rows, dims)
    batches: list[list[pb.Embedding]] = []
    for start in range(0, rows, batch):
        items = []
        for i in range(start, min(start + batch, rows)):
            e = pb.Embedding(text_id=text_ids[i], vector=vectors[i].tolist())
            e.metadata.update(metadata[i])
            items.append(e)
        batches.append(items)
    if mode == "stream":
        requests: list[Any] = [
            pb.StreamUpsertEmbeddingsRequest(owner="bench", project_handle=project, embeddings=items) if k == 0
            else pb.StreamUpsertEmbeddingsRequest(embeddings=items)
            for k, items in enumerate(batches)
        ]  # fmt: skip
    else:
        requests = [pb.UpsertEmbeddingsRequest(owner="bench", project_handle=project, embeddings=b) for b in batches]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    md = (("authorization", f"Bearer {key}"),)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    stored = 0
    if mode == "stream":
        stored = stub.StreamUpsertEmbeddings(iter(requests), metadata=md).count
    else:
        for r in requests:
            stored += stub.UpsertEmbeddings(r, metadata=md).count
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "stored": stored}), flush=True)


def run_client(port: int, key: str, mode: str, project: str, rows: int, dims: int, batch: int) -> float:
    """Start the client process, let it prepare, start the clock; return its upload time in seconds."""
    args = [sys.executable, __file__, "--client", str(port), key, mode, project, str(rows), str(dims), str(batch)]
    proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("client process failed while preparing")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"client process failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    if result["stored"] != rows:
        raise RuntimeError(f"server stored {result['stored']} of {rows} rows")
    return float(result["seconds"])


# --------------------------------------------------------------------------------------------- server side


class Served:
    """``python -m vdb_grpc serve`` in embedded mode on ``data_dir``."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VDB_", "ENCRYPTION_KEY"))}
        env.update(VDB_DATA_DIR=str(data_dir), VDB_LISTEN="127.0.0.1:0", VDB_LOG_LEVEL="info", **(settings or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vdb_grpc", "serve"], env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 180
        log = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"serving on [\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise RuntimeError("server did not start:\n" + "".join(log))

    def _drain(self) -> None:
        """Keep reading the log (a full pipe would block the server); show warnings and errors."""
        assert self.proc.stderr is not None
        show = 0
        for line in self.proc.stderr:
            if "WARNING" in line or "ERROR" in line:
                show = 1 if "ERROR" not in line else 40
            if show:
                show -= 1
                print("  [server] " + line.rstrip(), flush=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def create_user(port: int, admin_key: str) -> str:
    """The bench user, created through the API; returns its key."""
    import grpc

    from vdb_grpc.v1 import user_pb2, user_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await user_pb2_grpc.UserServiceStub(ch).CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(user_handle="bench", email="bench@example.org")),
            metadata=(("authorization", f"Bearer {admin_key}"),),
        )
    return str(resp.api_key)


async def create_projects(conn: Any, dims: int, handles: list[str]) -> tuple[int, dict[str, int]]:
    """One instance of ``dims`` dimensions and a project bound to it per handle."""
    instance_id = await conn.fetchval(
        "INSERT INTO llm_service_instances (instance_handle, owner, endpoint, api_standard, model, dimensions)"
        " VALUES ('bench-model', 'bench', 'https://example.org/embed', 'openai', 'bench-model', $1)"
        " RETURNING instance_id",
        dims,
    )
    projects = {}
    for handle in handles:
        projects[handle] = await conn.fetchval(
            "INSERT INTO projects (project_handle, owner, llm_service_instance_id) VALUES ($1, 'bench', $2)"
            " RETURNING project_id",
            handle,
            instance_id,
        )
    return int(instance_id), projects


async def copy_floor(conn: Any, table: str, records: list[tuple[Any, ...]], *, foreign_keys: bool) -> float:
    """Seconds for one binary COPY of ``records`` into a fresh table shaped like ``embeddings``."""
    await conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (LIKE embeddings INCLUDING ALL)")
    if foreign_keys:
        for (definition,) in await conn.fetch(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'embeddings'::regclass"
            " AND contype = 'f' ORDER BY conname"
        ):
            await conn.execute(f"ALTER TABLE {table} ADD {definition}")
    await conn.execute("CHECKPOINT")
    started = time.perf_counter()
    await conn.copy_records_to_table(
        table,
        records=records,
        columns=["text_id", "owner", "project_id", "llm_service_instance_id", "vector", "vector_dim", "metadata"],
    )
    elapsed = time.perf_counter() - started
    await conn.execute(f"DROP TABLE {table}")
    return elapsed


def line(name: str, rows: int, seconds: float, floor: float | None = None) -> None:
    rate = rows / seconds
    text = f"  {name:<58} {rate:>9,.0f} rows/s  ({seconds:6.2f} s)"
    if floor is not None:
        ratio = rate / floor
        text += f"   ratio {ratio:.2f}  target >= {TARGET:.2f}  {'PASS' if ratio >= TARGET else 'FAIL'}"
    print(text, flush=True)


async def bench(rows: int, dims: int, batch: int, mode: str, data_dir: Path) -> None:
    """One fresh server: the COPY floor, then one gRPC upload of the same rows in ``mode``."""
    import asyncpg

    from vdb_grpc.db import init_connection

    served = Served(data_dir)
    try:
        # The server's PostgreSQL, through its Unix socket (postmaster.pid line 5 names the directory); not
        # get_server(): a second handle from another process could restart the cluster.
        socket_dir = (data_dir / "pg" / "postmaster.pid").read_text().splitlines()[4]
        conn = await asyncpg.connect(f"postgresql://postgres:@/vdb?host={socket_dir}")
        await init_connection(conn)
        key = await create_user(served.port, (data_dir / "admin_key").read_text().strip())
        instance_id, projects = await create_projects(conn, dims, ["bench-copy", "bench-grpc"])

        text_ids, vectors, metadata = dataset(rows, dims)
        records = [
            (text_ids[i], "bench", projects["bench-copy"], instance_id, vectors[i], dims, json.dumps(metadata[i]))
            for i in range(rows)
        ]
        floor_s = await copy_floor(conn, "bench_copy_floor", records, foreign_keys=True)
        line("COPY floor (asyncpg, one COPY, embeddings' shape incl. FKs)", rows, floor_s)
        if mode == "stream":
            no_fk_s = await copy_floor(conn, "bench_copy_no_fk", records, foreign_keys=False)
            line("  for reference: the same COPY without the foreign keys", rows, no_fk_s)
        del records

        await conn.execute("CHECKPOINT")
        seconds = await asyncio.to_thread(run_client, served.port, key, mode, "bench-grpc", rows, dims, batch)
        label = {
            "stream": "gRPC StreamUpsertEmbeddings (client process)",
            "unary": "gRPC UpsertEmbeddings, one request at a time",
        }[mode]
        line(label, rows, seconds, rows / floor_s)
        indexed = await conn.fetchval("SELECT count(*) FROM embeddings WHERE indexed")
        print(f"    (background indexer: {indexed:,} of {rows:,} rows indexed when the upload ended; it waits while")
        print("     uploads arrive, then indexes them in one build)")
        stored = await conn.fetchval("SELECT count(*) FROM embeddings")
        assert stored == rows, f"expected {rows} rows, found {stored}"
        await conn.close()
    finally:
        served.stop()


async def main(args: argparse.Namespace) -> int:
    if args.preset == "all":
        sizes = list(PRESETS.values())
    elif args.preset:
        sizes = [PRESETS[args.preset]]
    else:
        sizes = [(args.rows, args.dims)]
    print("vdb-grpc ingest benchmark (embedded PostgreSQL; gRPC client in a separate process)")
    for rows, dims in sizes:
        print(f"\n{rows:,} embeddings x {dims} dims, batches of {args.batch:,}, small metadata, no text")
        print(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        for mode in ("stream", "unary"):
            # A fresh server and database per gRPC run, so neither inherits the other's indexing work.
            data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="vdbi-"))
            if args.data_dir and any(data_dir.iterdir()):
                raise SystemExit(f"--data-dir {data_dir} must be empty")
            try:
                await bench(rows, dims, args.batch, mode, data_dir)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
                if args.data_dir:
                    data_dir.mkdir()
        print(f"  load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, key, mode, project, rows, dims, batch = sys.argv[2:9]
        client_main(int(port), key, mode, project, int(rows), int(dims), int(batch))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="embeddings to upload")
    parser.add_argument("--dims", type=int, default=384, help="vector dimensions")
    parser.add_argument("--batch", type=int, default=1000, help="embeddings per request / stream message")
    parser.add_argument(
        "--preset", choices=["small", "large", "all"], help="small = 100,000 x 384, large = 20,000 x 1,536; all = both"
    )
    parser.add_argument("--data-dir", help="empty directory for the embedded database (default: a temp dir)")
    sys.exit(asyncio.run(main(parser.parse_args())))
