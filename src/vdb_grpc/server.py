"""The composition root: builds every component from settings and a pool, and runs the server."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vdb_grpc.api.admin import AdminServicer
from vdb_grpc.api.api_standards import ApiStandardServicer
from vdb_grpc.api.definitions import LlmDefinitionServicer
from vdb_grpc.api.instances import LlmInstanceServicer
from vdb_grpc.api.projects import ProjectServicer
from vdb_grpc.api.texts import EmbeddingTextServicer
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
from vdb_grpc.domain.stream_segments import SegmentPolicy
from vdb_grpc.domain.texts import Texts
from vdb_grpc.domain.users import Users
from vdb_grpc.indexer import Indexer
from vdb_grpc.interceptors import ServiceInterceptor
from vdb_grpc.migrate import apply_migrations
from vdb_grpc.providers import ProviderClient, ProviderObserver
from vdb_grpc.providers.egress import EgressPolicy
from vdb_grpc.reflection_pool import DocumentedPoolWithFallback
from vdb_grpc.runtime.health import DatabaseHealth, DrainingHealthServicer
from vdb_grpc.runtime.metrics import Metrics
from vdb_grpc.runtime.ratelimit import RateLimiter
from vdb_grpc.runtime.read_routing import ReadRouting
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
    metrics: Metrics | None = None
    metrics_listen: str | None = None
    metrics_port: int | None = None
    read_routing: ReadRouting | None = None
    providers: ProviderClient | None = None
    db_health: DatabaseHealth | None = None

    async def start(self) -> None:
        """Start serving and report SERVING for every service; start the background indexer."""
        if self.metrics is not None:
            self.metrics.start()
            if self.metrics_listen is not None:
                self.metrics_port = self.metrics.serve_http(self.metrics_listen)
        if self.providers is not None:
            await self.providers.start()
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
        if self.providers is not None:
            await self.providers.close()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.db_health is not None:
            await self.db_health.stop()


def _reflection_pool() -> Any:
    """Our documented descriptors, falling back to the default pool for health and reflection themselves."""
    return DocumentedPoolWithFallback()


def build_server(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    listen_dsn: str | None = None,
    read_pool: asyncpg.Pool | None = None,
    provider_observer: ProviderObserver | None = None,
    health_dsn: str | None = None,
) -> VdbServer:
    """Wire domain services, servicers, interceptors, health and reflection; bind ``settings.listen``.

    ``listen_dsn``: the database URL for the connection that hears other replicas' access changes
    (``vdb_grpc.cache.ReplicaInvalidation``); None: this server relies on the cache TTL for them.
    ``read_pool``: a pool on a streaming replica for read calls (``vdb_grpc.runtime.read_routing``).
    ``provider_observer``: told of every provider request and retry of server-side embedding; None: the
    server's metrics when VDB_METRICS_LISTEN is set, else nobody.
    ``health_dsn``: the database URL the health status follows (``vdb_grpc.runtime.health``); None: health
    says SERVING from start to shutdown.
    """
    # Operations (vdb_grpc.runtime): metrics when VDB_METRICS_LISTEN is set, rate limits when
    # VDB_RATE_LIMIT_RPS > 0, and read calls on the replica's pool behind the same pool interface.
    metrics = Metrics() if settings.metrics_listen else None
    primary_pool = pool
    if metrics is not None:
        metrics.watch_pool("primary", pool)
        if read_pool is not None:
            metrics.watch_pool("read", read_pool)
    limiter = (
        RateLimiter(
            settings.rate_limit_rps,
            settings.rate_limit_burst,
            on_refusal=metrics.refused if metrics is not None else None,
        )
        if settings.rate_limit_rps > 0
        else None
    )
    routing = None
    if read_pool is not None:  # domain services get the router; admin, indexer and listener the primary
        routing = ReadRouting(pool, read_pool, on_fallback=metrics.read_fell_back if metrics is not None else None)
        pool = cast(asyncpg.Pool, routing)

    # Authorization facts are reused for VDB_AUTH_CACHE_SECONDS; every RPC that may change them bumps
    # `generation` here and, with a listen_dsn, on every other replica through NOTIFY.
    generation = Generation()
    caching = settings.auth_cache_seconds > 0
    replicas = ReplicaInvalidation(generation, primary_pool, listen_dsn) if listen_dsn and caching else None
    users = Users(
        pool,
        key_cache=CoherentCache(
            generation,
            settings.auth_cache_seconds,
            on_lookup=metrics.cache_observer("api_key") if metrics is not None else None,
        ),
    )
    standards = ApiStandards(pool)
    projects = Projects(pool, limits=settings.limits)
    search = Search(
        pool,
        ef_search=settings.hnsw_ef_search,
        slow_search_seconds=settings.slow_search_ms / 1000,
        access_cache=CoherentCache(
            generation,
            settings.auth_cache_seconds,
            on_lookup=metrics.cache_observer("project_access") if metrics is not None else None,
        ),
    )
    if metrics is not None:
        search.on_plan = metrics.search_plan
    # The indexer defers its passes while uploads arrive (upload_pacing): it is told of uploads, not woken, except
    # when a stream closes its own segment (domain.stream_segments), whose index is then due at once.
    indexer = UploadAwareIndexer(
        primary_pool,
        seal_min_rows=settings.index_seal_min_rows,
        seal_max_rows=settings.index_seal_max_rows,
        max_segments=settings.index_max_segments,
        interim_min_rows=settings.index_interim_min_rows,
        build_memory_bytes=settings.index_build_memory_mb * 1024 * 1024 or None,
        build_workers=settings.index_build_workers if settings.index_build_workers >= 0 else None,
        # Backend ids are processes of this machine only when it runs its own PostgreSQL (indexing.priority).
        build_nice=settings.index_build_nice if settings.embedded else 0,
    )
    if metrics is not None:
        indexer.on_index_built = metrics.index_built
    embeddings = Embeddings(
        pool,
        max_batch_items=settings.max_batch_items,
        on_commit=indexer.note_upload,
        limits=settings.limits,
        # A stream that has sent a seal's worth of rows writes the rest into a segment of its own, and tells the
        # indexer when that segment is large enough for its interim index.
        stream_segments=SegmentPolicy(
            min_rows=settings.index_seal_min_rows,
            max_rows=settings.index_seal_max_rows,
            interim_rows=settings.index_interim_min_rows,
        ),
        on_index_due=indexer.note_index_due,
    )
    # None without ENCRYPTION_KEY: requests carrying a provider API key are then refused.
    cipher = (
        ApiKeyCipher(settings.encryption_key, settings.encryption_key_previous) if settings.encryption_key else None
    )
    definitions = Definitions(pool)
    instances = Instances(pool, cipher)
    admin = Admin(primary_pool, cipher, allow_reset=settings.allow_reset)
    # Server-side embedding: one HTTP client for the server's lifetime (opened and closed by VdbServer).
    providers = ProviderClient(
        cipher,
        egress=EgressPolicy(settings.provider_allow),
        concurrency=settings.provider_concurrency,
        timeout=settings.provider_timeout_seconds,
        retries=settings.provider_retries,
        observer=provider_observer if provider_observer is not None else metrics,
    )
    texts = Texts(
        pool,
        embeddings,
        search,
        providers,
        query_cache_size=settings.query_cache_size,
        query_cache_seconds=settings.query_cache_seconds,
    )

    server = grpc.aio.server(
        interceptors=[
            ServiceInterceptor(
                admin_key=settings.admin_key,
                resolve_user_key=users.authenticate,
                on_access_change=replicas.changed if replicas else generation.bump,
                observer=metrics,
                admit=limiter.admit if limiter is not None else None,
                access_log_mode=settings.access_log,
                limits=settings.limits,
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
    embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(
        EmbeddingTextServicer(embeddings, search, texts, settings.limits), server
    )
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
        metrics=metrics,
        metrics_listen=settings.metrics_listen,
        read_routing=routing,
        providers=providers,
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


#: How long a thread running Python code keeps the GIL while another waits for it (Python's default: 5 ms).
#: Uploads decode, check and convert their batches in worker threads; every step of a search on the event loop
#: (receive, query, answer) waits for the GIL up to this long while they run. Measured with a 100k-row stream
#: into one project on 2 cores (client on the same machine, docs/benchmarks.md): another project's search p99
#: during the upload 55-63 ms at 5 ms, 40-50 ms at 1 ms (quiet ~16 ms); upload speed unchanged.
GIL_SWITCH_SECONDS = 0.001


async def serve(settings: Settings, *, migrate: bool = True) -> None:
    """Run the service until SIGTERM/SIGINT (embedded PostgreSQL when no database URL is set).

    SIGTERM drains: health turns NOT_SERVING at once, calls are still accepted for VDB_SHUTDOWN_DRAIN_SECONDS,
    then the server stops accepting and in-flight calls get VDB_SHUTDOWN_GRACE_SECONDS. SIGINT (or a second
    signal during the drain) skips the rest of the drain. In embedded mode the server supervises its PostgreSQL
    (``vdb_grpc.runtime.supervisor``).
    """
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
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
        # The replica may be down at start: min size 0 opens nothing until the first read (which falls back).
        read_pool = (
            await create_pool(settings.database_read_url, settings.replace(pool_min_size=0))
            if settings.database_read_url
            else None
        )
        supervisor = None
        try:
            vdb = build_server(settings, pool, listen_dsn=dsn, read_pool=read_pool, health_dsn=dsn)
            if embedded is not None and embedded.cluster.owner and vdb.db_health is not None:
                from vdb_grpc.runtime.supervisor import EmbeddedSupervisor

                supervisor = EmbeddedSupervisor(
                    embedded.cluster,
                    on_down=vdb.db_health.mark_down,
                    on_up=vdb.db_health.wake,
                    max_backoff=settings.embedded_restart_backoff_seconds,
                )
            # Handlers before start: a SIGTERM that arrives as soon as the port answers must drain, not kill.
            signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, signals.put_nowait, sig)
            await vdb.start()
            if supervisor is not None:
                supervisor.start()
            host = settings.listen.rpartition(":")[0]
            log.info("vdb-grpc serving on %s:%d", host, vdb.port)
            if vdb.metrics_port is not None and settings.metrics_listen is not None:
                metrics_host = settings.metrics_listen.rpartition(":")[0]
                log.info("metrics on http://%s:%d/metrics", metrics_host, vdb.metrics_port)

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
            if read_pool is not None:
                await read_pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    log.info("stopped")
