"""External database outages: health follows the database, calls fail fast with UNAVAILABLE, and the server,
its indexer and its replica listener recover by themselves when the database is back.

The "external" database is a PostgreSQL cluster of its own (a second data dir run with the embedded binaries),
so this module can stop and start it without disturbing the session's test cluster.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from harness import ADMIN, ADMIN_KEY, ENCRYPTION_KEY, bearer
from search_fixtures import add_embeddings, make_project, make_user

from vdb_grpc import errors
from vdb_grpc.db import create_pool
from vdb_grpc.migrate import apply_migrations
from vdb_grpc.runtime.health import DatabaseHealth
from vdb_grpc.runtime.postgres import EmbeddedPostgres
from vdb_grpc.server import build_server
from vdb_grpc.settings import Settings
from vdb_grpc.v1 import embedding_pb2, embedding_pb2_grpc, user_pb2, user_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
async def external() -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """A separate cluster with a migrated database ``vdb``; yields (cluster, dsn)."""
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="vdbo-"))
    cluster = EmbeddedPostgres(root / "pg")
    assert cluster.claim()
    await asyncio.to_thread(cluster.start)
    try:
        with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE vdb")
        dsn = cluster.dsn("vdb")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        await asyncio.to_thread(apply_migrations, dsn)
        yield cluster, dsn
    finally:
        await asyncio.to_thread(cluster.stop, "immediate")
        cluster.release()
        shutil.rmtree(root, ignore_errors=True)


def _settings(dsn: str, **changes: object) -> Settings:
    base = Settings(
        database_url=dsn,
        listen="127.0.0.1:0",
        admin_key=ADMIN_KEY,
        encryption_key=ENCRYPTION_KEY,
        pool_min_size=1,
        pool_max_size=4,
        shutdown_grace_seconds=1.0,
        health_probe_seconds=0.2,
        db_connect_timeout_seconds=1.0,
        pool_acquire_timeout_seconds=2.0,
    )
    return base.replace(**changes)


async def _status(stub: health_pb2_grpc.HealthStub) -> int:
    return int((await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status)


async def _wait_status(stub: health_pb2_grpc.HealthStub, wanted: int, within: float) -> float:
    started = time.monotonic()
    while await _status(stub) != wanted:
        assert time.monotonic() - started < within, f"health not {wanted} within {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_outage_is_reported_fails_fast_and_everything_recovers(external) -> None:  # type: ignore[no-untyped-def]
    cluster, dsn = external
    settings = _settings(dsn)
    pool = await create_pool(dsn, settings)
    vdb = build_server(settings, pool, listen_dsn=dsn, health_dsn=dsn)
    await vdb.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{vdb.port}")
    health_stub = health_pb2_grpc.HealthStub(channel)
    users = user_pb2_grpc.UserServiceStub(channel)
    embeddings = embedding_pb2_grpc.EmbeddingServiceStub(channel)
    search = embedding_pb2.SearchSimilarRequest(
        owner="alice", project_handle="docs", vector=embedding_pb2.QueryVector(values=[1, 0, 0, 0]), threshold=-1
    )
    try:
        assert vdb.replicas is not None and vdb.indexer is not None
        await asyncio.wait_for(vdb.replicas.listening.wait(), 10)
        async with pool.acquire() as conn:
            key = await make_user(conn, "alice")
            pid = await make_project(conn, "alice", "docs", 4)
            await add_embeddings(conn, pid, "alice", [[1, 0, 0, 0], [0, 1, 0, 0]], prefix="before")
        assert len((await embeddings.SearchSimilar(search, metadata=bearer(key))).results) == 2

        await asyncio.to_thread(cluster.stop, "immediate")  # the database is gone, as in a crash
        noticed = await _wait_status(health_stub, NOT_SERVING, within=3)
        for call in (
            users.GetUser(user_pb2.GetUserRequest(user_handle="alice"), metadata=ADMIN),
            embeddings.SearchSimilar(search, metadata=bearer(key)),
            users.ListUsers(user_pb2.ListUsersRequest(), metadata=ADMIN),
        ):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            # Fast and retryable (the search may still be answered from the authorization cache: also UNAVAILABLE).
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert time.monotonic() - started < 3
        assert not vdb.replicas.listening.is_set()

        await asyncio.to_thread(cluster.start)  # back (crash recovery)
        recovered = await _wait_status(health_stub, SERVING, within=10)
        got = await users.GetUser(user_pb2.GetUserRequest(user_handle="alice"), metadata=ADMIN, timeout=5)
        assert got.user.user_handle == "alice"
        assert len((await embeddings.SearchSimilar(search, metadata=bearer(key), timeout=5)).results) == 2
        # The replica listener reconnects on its own (backoff starts at 0.5 s) ...
        await asyncio.wait_for(vdb.replicas.listening.wait(), 20)
        # ... and the background indexer survived the outage: it indexes rows written after it.
        async with pool.acquire() as conn:
            await add_embeddings(conn, pid, "alice", [[0, 0, 1, 0]], prefix="after")
        deadline = time.monotonic() + 30
        while await pool.fetchval("SELECT count(*) FROM embeddings WHERE NOT indexed") != 0:
            assert time.monotonic() < deadline, "the indexer did not resume after the outage"
            await asyncio.sleep(0.2)
        assert vdb.db_health is not None and vdb.db_health.outages == 1
        print(f"NOT_SERVING after {noticed:.2f}s; SERVING {recovered:.2f}s after the database was back")
    finally:
        await channel.close()
        await vdb.stop(None)
        await pool.close()


class SilentServer:
    """A TCP port that accepts connections and never says a word (a database behind a black hole)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self._held:
            c.close()


@pytest.fixture
def silent() -> AsyncIterator[str]:  # type: ignore[misc]
    server = SilentServer()
    yield f"postgresql://postgres@127.0.0.1:{server.port}/vdb"
    server.close()


async def test_unanswering_database_bounds_connect_acquire_and_probe(silent: str) -> None:
    settings = _settings(silent, pool_min_size=0, db_connect_timeout_seconds=0.5, pool_acquire_timeout_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(errors.Unavailable):
        await create_pool(silent, settings.replace(pool_min_size=1))
    assert time.monotonic() - started < 3

    pool = await create_pool(silent, settings)  # no connection opened yet
    vdb = build_server(settings, pool, health_dsn=silent)
    await vdb.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{vdb.port}") as ch:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await user_pb2_grpc.UserServiceStub(ch).GetUser(
                    user_pb2.GetUserRequest(user_handle="alice"), metadata=ADMIN
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 3  # never a hang
            await _wait_status(health_pb2_grpc.HealthStub(ch), NOT_SERVING, within=3)
    finally:
        await vdb.stop(None)
        await pool.close()


async def test_probe_reports_each_transition_once() -> None:
    servicer = health.aio.HealthServicer()
    probe = DatabaseHealth(servicer, ("", "x"), "postgresql://postgres@127.0.0.1:1/none", period=0.05, connect_timeout=0.5)
    probe.start()
    try:
        deadline = time.monotonic() + 3
        while probe.up:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # several failed probes: still one outage
        assert probe.outages == 1
        for name in ("", "x"):
            resp = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
            assert resp.status == NOT_SERVING
    finally:
        await probe.stop()
