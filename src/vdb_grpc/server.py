"""The composition root: builds every component from settings and a pool, and runs the server."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vdb_grpc.api.admin import AdminServicer
from vdb_grpc.api.api_standards import ApiStandardServicer
from vdb_grpc.api.definitions import LlmDefinitionServicer
from vdb_grpc.api.embeddings import EmbeddingServicer
from vdb_grpc.api.instances import LlmInstanceServicer
from vdb_grpc.api.projects import ProjectServicer
from vdb_grpc.api.users import UserServicer
from vdb_grpc.cache import CoherentCache, Generation, ReplicaInvalidation
from vdb_grpc.crypto import ApiKeyCipher
from vdb_grpc.db import check_database, create_pool
from vdb_grpc.domain.admin import Admin
from vdb_grpc.domain.api_standards import ApiStandards
from vdb_grpc.domain.definitions import Definitions
from vdb_grpc.domain.embeddings import Embeddings
from vdb_grpc.domain.instances import Instances
from vdb_grpc.domain.projects import Projects
from vdb_grpc.domain.search import Search
from vdb_grpc.domain.users import Users
from vdb_grpc.indexer import Indexer
from vdb_grpc.interceptors import ServiceInterceptor
from vdb_grpc.migrate import apply_migrations
from vdb_grpc.reflection_pool import DocumentedPoolWithFallback
from vdb_grpc.settings import Settings
from vdb_grpc.upload_pacing import UploadAwareIndexer
from vdb_grpc.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    api_standard_pb2,
    api_standard_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    llm_definition_pb2,
    llm_definition_pb2_grpc,
    llm_instance_pb2,
    llm_instance_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    api_standard_pb2.DESCRIPTOR.services_by_name["ApiStandardService"].full_name,
    project_pb2.DESCRIPTOR.services_by_name["ProjectService"].full_name,
    embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name,
    llm_definition_pb2.DESCRIPTOR.services_by_name["LlmDefinitionService"].full_name,
    llm_instance_pb2.DESCRIPTOR.services_by_name["LlmInstanceService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass
class VdbServer:
    """A built (not yet started) server and the parts tests and ``serve`` need to reach."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    indexer: Indexer | None = None
    search: Search | None = None
    replicas: ReplicaInvalidation | None = None

    async def start(self) -> None:
        """Start serving and report SERVING for every service; start the background indexer."""
        await self.server.start()
        if self.replicas is not None:
            self.replicas.start()
        if self.indexer is not None:
            self.indexer.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, then stop, letting in-flight RPCs finish within ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        if self.indexer is not None:
            await self.indexer.stop()
        await self.server.stop(grace)
        if self.replicas is not None:
            await self.replicas.stop()


def _reflection_pool() -> Any:
    """Our documented descriptors, falling back to the default pool for health and reflection themselves."""
    return DocumentedPoolWithFallback()


def build_server(settings: Settings, pool: asyncpg.Pool, *, listen_dsn: str | None = None) -> VdbServer:
    """Wire domain services, servicers, interceptors, health and reflection; bind ``settings.listen``.

    ``listen_dsn``: the database URL for the connection that hears other replicas' access changes
    (``vdb_grpc.cache.ReplicaInvalidation``); None: this server relies on the cache TTL for them.
    """
    # Authorization facts are reused for VDB_AUTH_CACHE_SECONDS; every RPC that may change them bumps
    # `generation` here and, with a listen_dsn, on every other replica through NOTIFY.
    generation = Generation()
    caching = settings.auth_cache_seconds > 0
    replicas = ReplicaInvalidation(generation, pool, listen_dsn) if listen_dsn and caching else None
    users = Users(pool, key_cache=CoherentCache(generation, settings.auth_cache_seconds))
    standards = ApiStandards(pool)
    projects = Projects(pool)
    search = Search(
        pool,
        ef_search=settings.hnsw_ef_search,
        access_cache=CoherentCache(generation, settings.auth_cache_seconds),
    )
    # The indexer defers its passes while uploads arrive (upload_pacing); it is told of uploads, not woken:
    # Indexer._run waits with asyncio.wait_for, which on Python 3.11 can swallow a cancel that lands just
    # after a wake() and hang Indexer.stop().
    indexer = UploadAwareIndexer(
        pool,
        seal_min_rows=settings.index_seal_min_rows,
        seal_max_rows=settings.index_seal_max_rows,
        max_segments=settings.index_max_segments,
        build_memory_bytes=settings.index_build_memory_mb * 1024 * 1024 or None,
        build_workers=settings.index_build_workers if settings.index_build_workers >= 0 else None,
    )
    embeddings = Embeddings(pool, max_batch_items=settings.max_batch_items, on_commit=indexer.note_upload)
    # None without ENCRYPTION_KEY: requests carrying a provider API key are then refused.
    cipher = (
        ApiKeyCipher(settings.encryption_key, settings.encryption_key_previous) if settings.encryption_key else None
    )
    definitions = Definitions(pool)
    instances = Instances(pool, cipher)
    admin = Admin(pool, cipher)

    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(
                admin_key=settings.admin_key,
                resolve_user_key=users.authenticate,
                on_access_change=replicas.changed if replicas else generation.bump,
            )
        ],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    user_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(users), server)
    api_standard_pb2_grpc.add_ApiStandardServiceServicer_to_server(ApiStandardServicer(standards), server)
    project_pb2_grpc.add_ProjectServiceServicer_to_server(ProjectServicer(projects), server)
    embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(embeddings, search), server)
    llm_definition_pb2_grpc.add_LlmDefinitionServiceServicer_to_server(LlmDefinitionServicer(definitions), server)
    llm_instance_pb2_grpc.add_LlmInstanceServiceServicer_to_server(LlmInstanceServicer(instances), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(admin), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
        pool=_reflection_pool(),
    )

    if settings.tls_cert_file and settings.tls_key_file:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
        port = server.add_secure_port(settings.listen, credentials)
    else:
        port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.listen}")
    return VdbServer(
        server=server, port=port, health=health_servicer, indexer=indexer, search=search, replicas=replicas
    )


async def prepare_database(settings: Settings, dsn: str, *, migrate: bool) -> None:
    """Check pgvector and apply pending migrations (under yoyo's lock) unless ``migrate`` is False."""
    await check_database(dsn)
    if migrate:
        applied = await asyncio.to_thread(apply_migrations, dsn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        else:
            log.info("database schema is up to date")


async def serve(settings: Settings, *, migrate: bool = True) -> None:
    """Run the service until SIGTERM/SIGINT (embedded PostgreSQL when no database URL is set)."""
    embedded = None
    if settings.embedded:
        from vdb_grpc.embedded import resolve_embedded_secrets, start_embedded_database

        settings = resolve_embedded_secrets(settings)
        embedded = await asyncio.to_thread(start_embedded_database, settings)
        dsn = embedded.dsn
    else:
        assert settings.database_url is not None
        dsn = settings.database_url
    if not settings.encryption_key:
        log.warning("ENCRYPTION_KEY is not set: requests that carry a provider API key will be refused")
    try:
        await prepare_database(settings, dsn, migrate=migrate)
        pool = await create_pool(dsn, settings)
        try:
            vdb = build_server(settings, pool, listen_dsn=dsn)
            await vdb.start()
            host = settings.listen.rpartition(":")[0]
            log.info("vdb-grpc serving on %s:%d", host, vdb.port)

            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            log.info("shutting down: finishing in-flight calls (up to %.0fs)", settings.shutdown_grace_seconds)
            await vdb.stop(settings.shutdown_grace_seconds)
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    log.info("stopped")
