"""The Prometheus endpoint: scraped over HTTP on loopback and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import math
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from harness import ADMIN, ANON, bearer, rpc_error
from prometheus_client.parser import text_string_to_metric_families
from search_fixtures import add_embeddings, clustered, make_project, make_user

from vdb_grpc.db import create_pool
from vdb_grpc.runtime.metrics import Metrics, ProviderObserver
from vdb_grpc.server import VdbServer, build_server
from vdb_grpc.v1 import embedding_pb2, embedding_pb2_grpc, project_pb2, project_pb2_grpc

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Served:
    server: VdbServer
    pool: asyncpg.Pool
    channel: grpc.aio.Channel
    key: str

    def scrape_text(self) -> str:
        assert self.server.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{self.server.metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200
            return str(r.read().decode())

    async def scrape(self) -> Samples:
        text = await asyncio.to_thread(self.scrape_text)
        out: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when there is none; summed over the rest)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@pytest.fixture
async def served(db_uri: str, server_settings) -> AsyncIterator[Served]:  # type: ignore[no-untyped-def]
    settings = server_settings.replace(metrics_listen="127.0.0.1:0")
    pool = await create_pool(db_uri, settings)
    async with pool.acquire() as conn:
        key = await make_user(conn, "alice")
        pid = await make_project(conn, "alice", "docs", 8)
        await add_embeddings(conn, pid, "alice", clustered(30, 8, 2, seed=3))
    server = build_server(settings, pool)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(server, pool, channel, key)
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()


async def test_grpc_call_metrics_use_the_grpc_ecosystem_names(served: Served) -> None:
    projects = project_pb2_grpc.ProjectServiceStub(served.channel)
    for _ in range(3):
        await projects.ListProjects(project_pb2.ListProjectsRequest(), metadata=bearer(served.key))
    await rpc_error(
        projects.GetProject(project_pb2.GetProjectRequest(owner="alice", project_handle="nope"), metadata=ADMIN),
        grpc.StatusCode.NOT_FOUND,
    )
    await rpc_error(
        projects.ListProjects(project_pb2.ListProjectsRequest(), metadata=ANON), grpc.StatusCode.UNAUTHENTICATED
    )
    s = await served.scrape()
    svc = "vdb_grpc.v1.ProjectService"
    base = {"grpc_type": "unary", "grpc_service": svc}
    assert value(s, "grpc_server_started_total", grpc_method="ListProjects", **base) == 4
    assert value(s, "grpc_server_handled_total", grpc_method="ListProjects", grpc_code="OK", **base) == 3
    assert value(s, "grpc_server_handled_total", grpc_method="ListProjects", grpc_code="Unauthenticated", **base) == 1
    assert value(s, "grpc_server_handled_total", grpc_method="GetProject", grpc_code="NotFound", **base) == 1
    assert value(s, "grpc_server_handling_seconds_count", grpc_method="ListProjects", **base) == 4
    assert value(s, "grpc_server_handling_seconds_bucket", grpc_method="ListProjects", le="+Inf", **base) == 4
    assert value(s, "grpc_server_msg_received_total", grpc_method="ListProjects", **base) == 4
    assert value(s, "grpc_server_msg_sent_total", grpc_method="ListProjects", **base) == 3
    # Health checks and reflection are not RPCs of the service and are not counted.
    assert not any(ls and dict(ls).get("grpc_service", "").startswith("grpc.") for _, ls in s)


async def test_stream_messages_are_counted_one_by_one(served: Served) -> None:
    stub = embedding_pb2_grpc.EmbeddingServiceStub(served.channel)

    async def batches() -> AsyncIterator[embedding_pb2.StreamUpsertEmbeddingsRequest]:
        for b in range(3):
            yield embedding_pb2.StreamUpsertEmbeddingsRequest(
                owner="alice",
                project_handle="docs",
                embeddings=[embedding_pb2.Embedding(text_id=f"s{b}-{i}", vector=[1.0] * 8) for i in range(2)],
            )

    resp = await stub.StreamUpsertEmbeddings(batches(), metadata=bearer(served.key))
    assert resp.batches == 3
    s = await served.scrape()
    labels = {"grpc_type": "client_stream", "grpc_method": "StreamUpsertEmbeddings"}
    assert value(s, "grpc_server_msg_received_total", **labels) == 3
    assert value(s, "grpc_server_msg_sent_total", **labels) == 1
    assert value(s, "grpc_server_handled_total", grpc_code="OK", **labels) == 1


async def test_service_gauges_searches_cache_and_pool(served: Served) -> None:
    stub = embedding_pb2_grpc.EmbeddingServiceStub(served.channel)
    req = embedding_pb2.SearchSimilarRequest(
        owner="alice", project_handle="docs", vector=embedding_pb2.QueryVector(values=[1.0] * 8), threshold=-1
    )
    for _ in range(2):
        await stub.SearchSimilar(req, metadata=bearer(served.key))
    metrics = served.server.metrics
    assert metrics is not None
    await metrics.refresh()  # the background task does this every few seconds
    s = await served.scrape()
    assert value(s, "vdb_searches_total", plan="exact") == 2
    # First call: both caches miss; second: both hit.
    assert value(s, "vdb_auth_cache_lookups_total", cache="api_key", result="miss") == 1
    assert value(s, "vdb_auth_cache_lookups_total", cache="api_key", result="hit") == 1
    assert value(s, "vdb_auth_cache_lookups_total", cache="project_access", result="hit") == 1
    assert value(s, "vdb_database_up") == 1
    assert value(s, "vdb_embeddings_stored") == 30
    assert value(s, "vdb_pool_connections_max", pool="primary") == 4
    assert 1 <= value(s, "vdb_pool_connections", pool="primary") <= 4
    assert value(s, "vdb_pool_connections_in_use", pool="primary") >= 0
    assert 0 <= value(s, "vdb_database_snapshot_age_seconds") < 60


async def test_indexer_backlog_and_build_durations(served: Served) -> None:
    metrics, indexer = served.server.metrics, served.server.indexer
    assert metrics is not None and indexer is not None
    await indexer.stop()  # hold the background indexer so the backlog stays put
    async with served.pool.acquire() as conn:
        pid = await make_project(conn, "alice", "five", 5)
        await add_embeddings(conn, pid, "alice", clustered(25, 5, 2, seed=4))
    await metrics.refresh()
    s = await served.scrape()
    assert value(s, "vdb_indexer_backlog_rows", dimensions="5") == 25
    assert value(s, "vdb_embeddings_stored") == 55
    await asyncio.wait_for(indexer.run_until_idle(), timeout=60)
    await metrics.refresh()
    s = await served.scrape()
    assert value(s, "vdb_indexer_backlog_rows", dimensions="5") == 0
    assert value(s, "vdb_index_build_seconds_count", dimensions="5") == 1


async def test_rows_in_segments_without_a_valid_hnsw_index_are_reported_waiting(served: Served) -> None:
    """Rows a stream wrote into its own segment (or a seal sealed) are no backlog, yet wait for their HNSW
    index: a gauge of their own, until the index is valid."""
    from vdb_grpc.queries import embeddings as qe

    metrics, indexer = served.server.metrics, served.server.indexer
    assert metrics is not None and indexer is not None
    await indexer.stop()
    async with served.pool.acquire() as conn:
        pid = await make_project(conn, "alice", "six", 6)
        await add_embeddings(conn, pid, "alice", clustered(25, 6, 2, seed=5))
        label = await qe.open_segment(conn, 6, 60)  # as a stream's segment holding these rows
        await conn.execute("UPDATE embeddings SET indexed = true, index_segment = $1 WHERE project_id = $2", label, pid)
        await conn.execute("UPDATE embedding_segments SET sealed_rows = 25 WHERE segment = $1", label)
    await metrics.refresh()
    s = await served.scrape()
    assert value(s, "vdb_indexer_backlog_rows", dimensions="6") == 0
    assert value(s, "vdb_indexer_segment_rows_waiting", dimensions="6") == 25
    async with served.pool.acquire() as conn:  # the stream ends
        await conn.execute("UPDATE embedding_segments SET writing_until = clock_timestamp() WHERE segment = $1", label)
    await asyncio.wait_for(indexer.run_until_idle(), timeout=60)
    await metrics.refresh()
    s = await served.scrape()
    assert value(s, "vdb_indexer_segment_rows_waiting", dimensions="6") == 0


async def test_database_down_is_reported_without_stalling_a_scrape(db_uri: str, server_settings) -> None:  # type: ignore[no-untyped-def]
    metrics = Metrics()
    pool = await create_pool(db_uri, server_settings)
    metrics.watch_pool("primary", pool)
    await metrics.refresh()
    assert metrics.snapshot.up == 1
    await pool.close()  # a closed pool fails like a database that went away
    await metrics.refresh()
    assert metrics.snapshot.up == 0


async def test_provider_observer_and_label_safety(served: Served) -> None:
    metrics = served.server.metrics
    assert metrics is not None
    observer: ProviderObserver = metrics  # the protocol server-side embedding calls
    observer.provider_call(shape="openai", instance="alice/emb", outcome="ok", seconds=0.2)
    observer.provider_call(shape="openai", instance="alice/emb", outcome="rate_limited", seconds=0.1)
    observer.provider_retry(shape="openai", instance="alice/emb", reason="rate_limited")
    s = await served.scrape()
    assert value(s, "vdb_provider_calls_total", shape="openai", instance="alice/emb", outcome="ok") == 1
    assert value(s, "vdb_provider_call_seconds_count", instance="alice/emb") == 2
    assert value(s, "vdb_provider_retries_total", reason="rate_limited") == 1
    # Never a key or user data in the exposition (the search above ran with alice's key).
    text = await asyncio.to_thread(served.scrape_text)
    assert served.key not in text and "s0-0" not in text


async def test_no_metrics_when_unset(db_uri: str, server_settings) -> None:  # type: ignore[no-untyped-def]
    from vdb_grpc.settings import Settings

    assert Settings.from_env({}).metrics_listen is None
    pool = await create_pool(db_uri, server_settings)
    server = build_server(server_settings, pool)
    try:
        assert server.metrics is None and server.metrics_port is None
    finally:
        await server.stop(None)
        await pool.close()


async def test_two_servers_keep_separate_registries() -> None:
    a, b = Metrics(), Metrics()
    a.search_plan("hnsw")
    assert a.registry.get_sample_value("vdb_searches_total", {"plan": "hnsw"}) == 1
    assert b.registry.get_sample_value("vdb_searches_total", {"plan": "hnsw"}) is None
    assert math.isclose(a.registry.get_sample_value("vdb_database_up") or 0.0, 0.0)


def test_metrics_listen_setting() -> None:
    from vdb_grpc.settings import Settings, SettingsError

    assert Settings.from_env({"VDB_METRICS_LISTEN": "0.0.0.0:9464"}).metrics_listen == "0.0.0.0:9464"
    for bad in ("9464", "host:", "host:99999"):
        with pytest.raises(SettingsError, match="VDB_METRICS_LISTEN"):
            Settings.from_env({"VDB_METRICS_LISTEN": bad})


async def test_metrics_port_in_use_is_a_clear_error() -> None:
    a, b = Metrics(), Metrics()
    port = a.serve_http("127.0.0.1:0")
    try:
        with pytest.raises(RuntimeError, match="cannot serve metrics"):
            b.serve_http(f"127.0.0.1:{port}")
    finally:
        await a.stop()
