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
from vdb_grpc.runtime.health import DatabaseHealth, DrainingHealthServicer
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
    db_health: DatabaseHealth | None = None

    async def start(self) -> None:
        """Start serving and report SERVING for every service; start the background indexer."""
        await self.server.start()
        if self.replicas is not None:
            self.replicas.start()
        if self.indexer is not None:
            self.indexer.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.db_health is not None:
            self.db_health.start()

    async def drain(self, seconds: float) -> None:
        """Report NOT_SERVING for good but keep serving for ``seconds`` (load balancers move traffic away)."""
        await self.health.enter_graceful_shutdown()
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, then stop, letting in-flight RPCs finish within ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        if isinstance(self.health, DrainingHealthServicer):
            await self.health.end_watches()  # they would otherwise hold the stop up for the whole grace
        if self.indexer is not None:
            await self.indexer.stop()
        await self.server.stop(grace)
        if self.replicas is not None:
            await self.replicas.stop()
        if self.db_health is not None:
            await self.db_health.stop()


def _reflection_pool() -> Any:
    """Our documented descriptors, falling back to the default pool for health and reflection themselves."""
    return DocumentedPoolWithFallback()


def build_server(
    settings: Settings, pool: asyncpg.Pool, *, listen_dsn: str | None = None, health_dsn: str | None = None
) -> VdbServer:
    """Wire domain services, servicers, interceptors, health and reflection; bind ``settings.listen``.

    ``listen_dsn``: the database URL for the connection that hears other replicas' access changes
    (``vdb_grpc.cache.ReplicaInvalidation``); None: this server relies on the cache TTL for them.
    ``health_dsn``: the database URL the health status follows (``vdb_grpc.runtime.health``); None: health
    says SERVING from start to shutdown.
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
    indexer = UploadAwareIndexer(pool)
    embeddings = Embeddings(pool, max_batch_items=settings.max_batch_items, on_commit=indexer.note_upload)
    # None without ENCRYPTION_KEY: requests carrying a provider API key are then refused.
    cipher = (
        ApiKeyCipher(settings.encryption_key, settings.encryption_key_previous) if settings.encryption_key else None
    )
    definitions = Definitions(pool)
    instances = Instances(pool, cipher)
    admin = Admin(pool, cipher, allow_reset=settings.allow_reset)

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

    health_servicer = DrainingHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    db_health = (
        DatabaseHealth(
            health_servicer,
            ("", *SERVICE_NAMES),
            health_dsn,
            period=settings.health_probe_seconds,
            connect_timeout=settings.db_connect_timeout_seconds,
            pool=pool,
        )
        if health_dsn
        else None
    )
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
        server=server,
        port=port,
        health=health_servicer,
        indexer=indexer,
        search=search,
        replicas=replicas,
        db_health=db_health,
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
    """Run the service until SIGTERM/SIGINT (embedded PostgreSQL when no database URL is set).

    SIGTERM drains: health turns NOT_SERVING at once, calls are still accepted for VDB_SHUTDOWN_DRAIN_SECONDS,
    then the server stops accepting and in-flight calls get VDB_SHUTDOWN_GRACE_SECONDS. SIGINT (or a second
    signal during the drain) skips the rest of the drain. In embedded mode the server supervises its PostgreSQL
    (``vdb_grpc.runtime.supervisor``).
    """
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
        supervisor = None
        try:
            vdb = build_server(settings, pool, listen_dsn=dsn, health_dsn=dsn)
            if embedded is not None and embedded.cluster.owner and vdb.db_health is not None:
                from vdb_grpc.runtime.supervisor import EmbeddedSupervisor

                supervisor = EmbeddedSupervisor(
                    embedded.cluster,
                    on_down=vdb.db_health.mark_down,
                    on_up=vdb.db_health.wake,
                    max_backoff=settings.embedded_restart_backoff_seconds,
                )
            await vdb.start()
            if supervisor is not None:
                supervisor.start()
            host = settings.listen.rpartition(":")[0]
            log.info("vdb-grpc serving on %s:%d", host, vdb.port)

            signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, signals.put_nowait, sig)
            received = await signals.get()
            if received is signal.SIGTERM and settings.shutdown_drain_seconds > 0:
                log.info(
                    "draining: health NOT_SERVING, still accepting calls for %.0fs", settings.shutdown_drain_seconds
                )
                drain = asyncio.create_task(vdb.drain(settings.shutdown_drain_seconds))
                again = asyncio.create_task(signals.get())
                await asyncio.wait({drain, again}, return_when=asyncio.FIRST_COMPLETED)
                drain.cancel()
                again.cancel()
            log.info("shutting down: finishing in-flight calls (up to %.0fs)", settings.shutdown_grace_seconds)
            await vdb.stop(settings.shutdown_grace_seconds)
        finally:
            if supervisor is not None:
                await supervisor.stop()
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    log.info("stopped")
