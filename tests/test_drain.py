"""Graceful drain: on SIGTERM health says NOT_SERVING at once, calls are still accepted for
VDB_SHUTDOWN_DRAIN_SECONDS, then no new call is accepted while in-flight ones finish within the grace; open
health watches do not hold the shutdown up. Plus the parsing of the operations settings."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import ADMIN, ADMIN_KEY, ENCRYPTION_KEY, bearer
from search_fixtures import add_embeddings, make_project, make_user
from served import ServedProcess, clean_env, health_status

from vdb_grpc.db import create_pool
from vdb_grpc.server import build_server
from vdb_grpc.settings import Settings, SettingsError
from vdb_grpc.v1 import api_standard_pb2, api_standard_pb2_grpc, embedding_pb2, embedding_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_operations_settings_parse_and_refuse_bad_values() -> None:
    s = Settings.from_env(
        {
            "VDB_SHUTDOWN_DRAIN_SECONDS": "5",
            "VDB_ALLOW_RESET": "TRUE",
            "VDB_HEALTH_PROBE_SECONDS": "0.5",
            "VDB_DB_CONNECT_TIMEOUT_SECONDS": "2",
            "VDB_POOL_ACQUIRE_TIMEOUT_SECONDS": "3",
            "VDB_EMBEDDED_RESTART_BACKOFF_SECONDS": "10",
        }
    )
    assert (s.shutdown_drain_seconds, s.allow_reset, s.health_probe_seconds) == (5.0, True, 0.5)
    assert (s.db_connect_timeout_seconds, s.pool_acquire_timeout_seconds, s.embedded_restart_backoff_seconds) == (
        2.0,
        3.0,
        10.0,
    )
    assert Settings().allow_reset is False and Settings().shutdown_drain_seconds == 0
    with pytest.raises(SettingsError) as info:
        Settings.from_env(
            {
                "VDB_SHUTDOWN_DRAIN_SECONDS": "-1",
                "VDB_ALLOW_RESET": "yes",
                "VDB_HEALTH_PROBE_SECONDS": "0",
                "VDB_DB_CONNECT_TIMEOUT_SECONDS": "soon",
                "VDB_POOL_ACQUIRE_TIMEOUT_SECONDS": "1000",
                "VDB_EMBEDDED_RESTART_BACKOFF_SECONDS": "0.1",
            }
        )
    text = str(info.value)
    for name in (
        "VDB_SHUTDOWN_DRAIN_SECONDS",
        "VDB_ALLOW_RESET",
        "VDB_HEALTH_PROBE_SECONDS",
        "VDB_DB_CONNECT_TIMEOUT_SECONDS",
        "VDB_POOL_ACQUIRE_TIMEOUT_SECONDS",
        "VDB_EMBEDDED_RESTART_BACKOFF_SECONDS",
    ):
        assert name in text


async def test_open_health_watch_does_not_hold_the_stop_up(db_uri, server_settings) -> None:  # type: ignore[no-untyped-def]
    pool = await create_pool(db_uri, server_settings)
    vdb = build_server(server_settings, pool)
    await vdb.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{vdb.port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == SERVING
            started = time.monotonic()
            await vdb.stop(10)
            assert time.monotonic() - started < 3  # not the 10 s grace
            statuses = []
            while (resp := await watch.read()) is not grpc.aio.EOF:
                statuses.append(resp.status)
            assert statuses == [NOT_SERVING]  # told first, then the stream ended (OK)
            assert await watch.code() == grpc.StatusCode.OK
    finally:
        await pool.close()


SEARCH_WAITING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'vdb-grpc' AND wait_event_type = 'Lock'
  AND wait_event = 'relation'
"""

#: The indexer is done with the rows: all sealed into a segment whose HNSW index (embeddings_hnsw_4_<lo>_<hi>,
#: docs/search.md) is built, and no CREATE INDEX CONCURRENTLY still running (its index is not valid yet).
INDEXER_SETTLED = r"""
SELECT NOT EXISTS (SELECT 1 FROM embeddings WHERE NOT indexed)
   AND EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname LIKE 'embeddings\_hnsw\_4\_%' AND i.indisvalid)
   AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                   WHERE c.relname LIKE 'embeddings\_hnsw\_%' AND NOT i.indisvalid)
"""


async def _new_call(target: str, within: float = 3) -> grpc.StatusCode:
    """A call on a new connection (GetApiStandard: it reads nothing the test locks)."""
    async with grpc.aio.insecure_channel(target) as ch:
        try:
            await api_standard_pb2_grpc.ApiStandardServiceStub(ch).GetApiStandard(
                api_standard_pb2.GetApiStandardRequest(api_standard_handle="openai"), metadata=ADMIN, timeout=within
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK


async def test_sigterm_drains_then_finishes_in_flight_calls(db_uri) -> None:  # type: ignore[no-untyped-def]
    pool = await create_pool(db_uri, Settings(pool_min_size=1, pool_max_size=1))
    try:
        async with pool.acquire() as conn:
            key = await make_user(conn, "alice")
            pid = await make_project(conn, "alice", "docs", 4)
            await add_embeddings(conn, pid, "alice", [[1, 0, 0, 0], [0, 1, 0, 0]])
    finally:
        await pool.close()
    drain, grace = 2.0, 8.0
    env = clean_env(
        VDB_DATABASE_URL=db_uri,
        VDB_ADMIN_KEY=ADMIN_KEY,
        ENCRYPTION_KEY=ENCRYPTION_KEY,
        VDB_LISTEN="127.0.0.1:0",
        VDB_SHUTDOWN_DRAIN_SECONDS=str(drain),
        VDB_SHUTDOWN_GRACE_SECONDS=str(grace),
    )
    served = await asyncio.to_thread(ServedProcess, env)
    target = served.target
    locker = await asyncpg.connect(db_uri)
    channel = grpc.aio.insecure_channel(target)
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        # An in-flight call: a search whose key lookup waits on a lock this test holds (on users, which the
        # background indexer never touches, so only the search waits). First the indexer builds its index for
        # the two rows: CREATE INDEX CONCURRENTLY would wait for the test's transaction.
        deadline = time.monotonic() + 60
        while not await locker.fetchval(INDEXER_SETTLED):
            assert time.monotonic() < deadline, "the indexer did not build its index"
            await asyncio.sleep(0.05)
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        search = embedding_pb2_grpc.EmbeddingServiceStub(channel).SearchSimilar(
            embedding_pb2.SearchSimilarRequest(
                owner="alice", project_handle="docs", vector=embedding_pb2.QueryVector(values=[1, 0, 0, 0]), threshold=-1
            ),
            metadata=bearer(key),
        )
        while True:  # the search waits on the lock in PostgreSQL
            if await locker.fetchval(SEARCH_WAITING) == 1:
                break
            await asyncio.sleep(0.02)

        served.terminate()
        t0 = time.monotonic()
        while await health_status(target) != NOT_SERVING:
            assert time.monotonic() - t0 < 1, "health did not turn NOT_SERVING at once"
            await asyncio.sleep(0.02)
        assert (await watch.read()).status == NOT_SERVING  # watchers are told too
        # Draining: still accepting, on new connections too.
        assert await _new_call(target) == grpc.StatusCode.OK
        await asyncio.sleep(max(0.0, drain + 0.7 - (time.monotonic() - t0)))
        # Drain over: no new call is accepted, the in-flight one is still running.
        assert await _new_call(target, within=2) == grpc.StatusCode.UNAVAILABLE
        assert not search.done(), served.log[-3000:]
        await tx.rollback()  # let the search finish
        resp = await search
        assert len(resp.results) == 2
        code = await asyncio.to_thread(served.wait, 30)
        stopped_after = time.monotonic() - t0
        assert code == 0
        assert stopped_after < drain + grace - 2, "the open Watch held the shutdown up"
        assert "draining" in served.log
    finally:
        await channel.close()
        await locker.close()
        served.kill()
