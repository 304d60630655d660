"""A call's deadline bounds its database statements; a timed-out or cancelled call stops its statement in PostgreSQL.

The search is made slow deterministically: another session holds an ACCESS EXCLUSIVE lock on ``embeddings``,
so the search's statement waits in PostgreSQL (visible in ``pg_stat_activity``) until it is cancelled. The
background indexer is off there: its passes would wait on that lock too and be counted.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import pytest
from embedding_helpers import server_with
from harness import bearer, rpc_error
from search_fixtures import add_embeddings, make_project, make_user

from vdb_grpc import errors
from vdb_grpc.db import create_pool
from vdb_grpc.runtime.deadline import clear_call_deadline, set_call_deadline
from vdb_grpc.v1 import embedding_pb2

C = grpc.StatusCode

ACTIVE_SERVICE_STATEMENTS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'vdb-grpc' AND state = 'active'
  AND pid <> pg_backend_pid()
"""


async def _eventually(pool: asyncpg.Pool, sql: str, expected: int, within: float = 3.0) -> float:
    """Seconds until ``sql`` returns ``expected`` (fails after ``within``)."""
    started = time.monotonic()
    while True:
        got = await pool.fetchval(sql)
        if got == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{sql!r} still {got}, expected {expected}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def pool(db_uri, server_settings):  # type: ignore[no-untyped-def]
    p = await create_pool(db_uri, server_settings)
    yield p
    await p.close()


async def test_statement_outliving_the_deadline_is_cancelled_in_postgres(pool) -> None:  # type: ignore[no-untyped-def]
    async def call() -> None:
        set_call_deadline(0.05)
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT pg_sleep(30)")

    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        await asyncio.create_task(call())  # its own context, as each RPC has
    assert time.monotonic() - started < 2
    await _eventually(pool, ACTIVE_SERVICE_STATEMENTS, 0, within=1.0)
    # the connection came back clean and is reused
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT 1") == 1


async def test_deadline_inside_a_transaction_rolls_back_and_returns_a_clean_connection(pool) -> None:  # type: ignore[no-untyped-def]
    await pool.execute("CREATE TABLE t (x int)")

    async def call() -> None:
        set_call_deadline(0.1)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO t VALUES (1)")
            await conn.execute("SELECT pg_sleep(30)")

    with pytest.raises(errors.DeadlineExceeded):
        await asyncio.create_task(call())
    assert await pool.fetchval("SELECT count(*) FROM t") == 0
    idle_in_transaction = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in%'"
    )
    assert idle_in_transaction == 0


async def test_no_deadline_no_bound_and_an_expired_deadline_sends_nothing(pool) -> None:  # type: ignore[no-untyped-def]
    async def background() -> float:
        clear_call_deadline()
        return float(await pool.fetchval("SELECT 0.3::float8 FROM pg_sleep(0.3)"))

    assert await asyncio.create_task(background()) == 0.3

    async def late() -> None:
        set_call_deadline(-1)
        await pool.fetchval("SELECT 1")

    with pytest.raises(errors.DeadlineExceeded):
        await asyncio.create_task(late())


async def test_cancelled_task_cancels_its_statement(pool) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(pool.fetchval("SELECT pg_sleep(30)"))
    await _eventually(pool, ACTIVE_SERVICE_STATEMENTS, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _eventually(pool, ACTIVE_SERVICE_STATEMENTS, 0, within=1.0)


async def test_pool_acquire_wait_is_bounded(db_uri, server_settings) -> None:  # type: ignore[no-untyped-def]
    pool = await create_pool(db_uri, server_settings.replace(pool_min_size=1, pool_max_size=1))
    try:
        pool.acquire_timeout = 0.2
        async with pool.acquire():
            started = time.monotonic()
            with pytest.raises(errors.Unavailable, match="no database connection within"):
                async with pool.acquire():
                    pass
            assert time.monotonic() - started < 2

            async def call() -> None:
                set_call_deadline(0.05)
                async with pool.acquire():
                    pass

            with pytest.raises(errors.DeadlineExceeded):
                await asyncio.create_task(call())
    finally:
        await pool.close()


@pytest.fixture
async def locked_search(db_uri, server_settings):  # type: ignore[no-untyped-def]
    """A server without background indexer (its passes would wait on the test's lock too) on alice/docs with two
    rows; yields the server and alice's key."""
    async with server_with(db_uri, server_settings, indexer=False) as vdb:
        async with vdb.pool.acquire() as conn:
            key = await make_user(conn, "alice")
            pid = await make_project(conn, "alice", "docs", 4)
            await add_embeddings(conn, pid, "alice", [[1, 0, 0, 0], [0, 1, 0, 0]])
        yield vdb, key

async def _hold_lock(pool: asyncpg.Pool) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE embeddings IN ACCESS EXCLUSIVE MODE")
    return conn, tx


SEARCH_WAITING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'vdb-grpc' AND wait_event_type = 'Lock'
"""


def _search() -> embedding_pb2.SearchSimilarRequest:
    return embedding_pb2.SearchSimilarRequest(
        owner="alice", project_handle="docs", vector=embedding_pb2.QueryVector(values=[1, 0, 0, 0]), threshold=-1
    )


async def test_search_with_50ms_deadline_is_deadline_exceeded_and_its_statement_gone(locked_search) -> None:  # type: ignore[no-untyped-def]
    vdb, key = locked_search
    await vdb.embeddings.SearchSimilar(_search(), metadata=bearer(key))  # warm: key and access cached
    conn, tx = await _hold_lock(vdb.pool)
    try:
        started = time.monotonic()
        await rpc_error(vdb.embeddings.SearchSimilar(_search(), metadata=bearer(key), timeout=0.05), C.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 1
        # The statement stopped waiting in PostgreSQL although the lock is still held.
        gone_after = await _eventually(vdb.pool, SEARCH_WAITING, 0, within=2.0)
        assert gone_after < 2
    finally:
        await tx.rollback()
        await vdb.pool.release(conn)
    resp = await vdb.embeddings.SearchSimilar(_search(), metadata=bearer(key), timeout=5)
    assert len(resp.results) == 2


async def test_cancelled_search_stops_its_statement(locked_search) -> None:  # type: ignore[no-untyped-def]
    vdb, key = locked_search
    conn, tx = await _hold_lock(vdb.pool)
    try:
        call = vdb.embeddings.SearchSimilar(_search(), metadata=bearer(key))
        await _eventually(vdb.pool, SEARCH_WAITING, 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await _eventually(vdb.pool, SEARCH_WAITING, 0, within=2.0)
    finally:
        await tx.rollback()
        await vdb.pool.release(conn)
    resp = await vdb.embeddings.SearchSimilar(_search(), metadata=bearer(key), timeout=5)
    assert len(resp.results) == 2
