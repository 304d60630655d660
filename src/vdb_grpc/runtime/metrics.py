"""Prometheus metrics of one server: gRPC calls (grpc-ecosystem names), the pool, the indexer, searches, caches.

Everything lives in a ``CollectorRegistry`` owned by one ``Metrics`` object (nothing global: tests build several
servers in one process). ``serve_http`` exposes it on ``VDB_METRICS_LISTEN`` with prometheus_client's own HTTP
server (a daemon thread); a scrape only reads counters and a snapshot, it never waits for the database:

- call counters and histograms are updated by the interceptor (``rpc_started``, ``rpc_handled``, ...);
- pool gauges read the pool's counters at scrape time (plain attribute reads);
- database gauges (up, indexer backlog, embeddings stored, replica lag) come from a snapshot that a background
  task refreshes every ``refresh_seconds`` with bounded queries (``statement_timeout``, capped counts).

Labels hold only method names, status codes, plan names, dimensions, provider shapes and LLM instance names (the
last capped in number): never a key, a text_id, or a user's data.

Names follow go-grpc-prometheus / grpc-ecosystem: ``grpc_server_started_total``, ``grpc_server_handled_total``
(``grpc_code`` spelled as Go's ``codes.Code.String()``, e.g. ``NotFound``), ``grpc_server_handling_seconds``,
``grpc_server_msg_received_total``, ``grpc_server_msg_sent_total``. The service's own start with ``vdb_``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vdb_grpc.queries import indexer as qi
from vdb_grpc.queries import search as qs
from vdb_grpc.runtime.background import BackgroundTask

log = logging.getLogger(__name__)

#: grpc.StatusCode names → the spelling of Go's codes.Code.String(), which dashboards for gRPC servers expect.
GO_CODE_NAMES = {
    "OK": "OK",
    "CANCELLED": "Canceled",
    "UNKNOWN": "Unknown",
    "INVALID_ARGUMENT": "InvalidArgument",
    "DEADLINE_EXCEEDED": "DeadlineExceeded",
    "NOT_FOUND": "NotFound",
    "ALREADY_EXISTS": "AlreadyExists",
    "PERMISSION_DENIED": "PermissionDenied",
    "RESOURCE_EXHAUSTED": "ResourceExhausted",
    "FAILED_PRECONDITION": "FailedPrecondition",
    "ABORTED": "Aborted",
    "OUT_OF_RANGE": "OutOfRange",
    "UNIMPLEMENTED": "Unimplemented",
    "INTERNAL": "Internal",
    "UNAVAILABLE": "Unavailable",
    "DATA_LOSS": "DataLoss",
    "UNAUTHENTICATED": "Unauthenticated",
}

#: grpc-ecosystem's default buckets extended to the slow end of uploads and exact searches.
HANDLING_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Distinct LLM instance names kept as labels; calls of further instances count under "other".
MAX_INSTANCE_LABELS = 200
#: The indexer backlog is counted up to this many rows per refresh (a larger backlog reads as this number).
BACKLOG_COUNT_CAP = 100_000
#: Below this planner estimate, embeddings are counted exactly.
EXACT_COUNT_BELOW = 100_000


class ProviderObserver(Protocol):
    """What server-side embedding reports about calls to LLM providers (implemented by ``Metrics``)."""

    def provider_call(self, *, shape: str, instance: str, outcome: str, seconds: float) -> None: ...

    def provider_retry(self, *, shape: str, instance: str, reason: str) -> None: ...


def split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


@dataclass
class DatabaseSnapshot:
    """What the last background refresh saw (read by scrapes)."""

    up: float = 0.0
    backlog: dict[int, int] = field(default_factory=dict)
    waiting: dict[int, int] = field(default_factory=dict)
    embeddings: int | None = None
    replica_up: float | None = None
    replica_lag_seconds: float | None = None
    refreshed_at: float | None = None


async def _waiting_for_hnsw(conn: asyncpg.Connection) -> dict[int, int]:
    """Per dimension, the rows of registered segments no valid HNSW index covers (catalog and registry only)."""
    covers = qs.hnsw_covers(await qs.segment_indexes(conn))
    out: dict[int, int] = {}
    for seg in await qi.segments(conn):
        if not any(c.lo <= seg.segment <= c.hi for c in covers.get(seg.dim, ())):
            out[seg.dim] = out.get(seg.dim, 0) + seg.rows
    return out


BACKLOG_BY_DIM = """
SELECT vector_dim, count(*) FROM (SELECT vector_dim FROM embeddings WHERE NOT indexed LIMIT $1) b GROUP BY 1
"""
EMBEDDINGS_ESTIMATE = "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'embeddings'::regclass"
EMBEDDINGS_COUNT = "SELECT count(*) FROM embeddings"
#: Seconds since the replica last replayed a transaction (0 when it has replayed everything it received).
REPLICA_LAG = """
SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END
"""


class Metrics:
    """The metrics of one server, and its ``ProviderObserver``."""

    def __init__(self, *, refresh_seconds: float = 5.0, query_timeout_ms: int = 2000) -> None:
        """Args:
        refresh_seconds: how often the database snapshot (up, backlog, embeddings stored) is refreshed.
        query_timeout_ms: ``statement_timeout`` of the refresh queries.
        """
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        call = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started_total", "RPCs started on the server.", call, registry=r)
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            [*call, "grpc_code"],
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, in seconds.",
            call,
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        self.msg_received = Counter(
            "grpc_server_msg_received_total", "Request messages received (each message of a stream).", call, registry=r
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent_total", "Response messages sent (each message of a stream).", call, registry=r
        )
        self.searches = Counter("vdb_searches_total", "SearchSimilar calls by the plan chosen.", ["plan"], registry=r)
        self.cache_lookups = Counter(
            "vdb_auth_cache_lookups_total",
            "Authorization cache lookups (cache: api_key or project_access; result: hit or miss).",
            ["cache", "result"],
            registry=r,
        )
        self.rate_limited = Counter(
            "vdb_rate_limited_total",
            "Calls refused RESOURCE_EXHAUSTED by the rate limit (caller: user or anonymous).",
            ["caller"],
            registry=r,
        )
        self.index_builds = Histogram(
            "vdb_index_build_seconds",
            "Duration of HNSW index (re)builds by vector dimension.",
            ["dimensions"],
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.read_fallbacks = Counter(
            "vdb_read_replica_fallbacks_total",
            "Read calls sent to the primary because the read replica was unreachable.",
            registry=r,
        )
        self.provider_calls = Counter(
            "vdb_provider_calls_total",
            "Calls to LLM embedding providers (shape: request shape; outcome: ok or the failure kind).",
            ["shape", "instance", "outcome"],
            registry=r,
        )
        self.provider_seconds = Histogram(
            "vdb_provider_call_seconds",
            "Duration of calls to LLM embedding providers.",
            ["shape", "instance"],
            buckets=PROVIDER_BUCKETS,
            registry=r,
        )
        self.provider_retries = Counter(
            "vdb_provider_retries_total",
            "Retried calls to LLM providers, by reason.",
            ["shape", "instance", "reason"],
            registry=r,
        )
        self.snapshot = DatabaseSnapshot()
        self._refresh_seconds = refresh_seconds
        self._query_timeout_ms = query_timeout_ms
        self._pools: dict[str, asyncpg.Pool] = {}
        self._instances: set[str] = set()
        self._instances_lock = threading.Lock()
        self._task = BackgroundTask("vdb-metrics-refresh", self._refresh_forever)
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self.registry.register(_StateCollector(self))

    # --- RPCs (called by the interceptor) -------------------------------------------------------------------

    def rpc_started(self, method: str, rpc_type: str) -> None:
        """An RPC of ``rpc_type`` (unary, client_stream, server_stream, bidi_stream) began."""
        self.started.labels(rpc_type, *split_method(method)).inc()

    def rpc_handled(self, method: str, rpc_type: str, code: str, seconds: float) -> None:
        """An RPC ended with status ``code`` (a ``grpc.StatusCode`` name) after ``seconds``."""
        service, name = split_method(method)
        self.handled.labels(rpc_type, service, name, GO_CODE_NAMES.get(code, code)).inc()
        self.handling.labels(rpc_type, service, name).observe(seconds)

    def msg_in(self, method: str, rpc_type: str) -> None:
        """One request message arrived."""
        self.msg_received.labels(rpc_type, *split_method(method)).inc()

    def msg_out(self, method: str, rpc_type: str) -> None:
        """One response message was sent."""
        self.msg_sent.labels(rpc_type, *split_method(method)).inc()

    # --- the service's own events -----------------------------------------------------------------------------

    def search_plan(self, plan: str) -> None:
        """A search ran with ``plan`` ("exact" or "hnsw"; ``vdb_grpc.domain.search.Search.on_plan``)."""
        self.searches.labels(plan).inc()

    def cache_observer(self, cache: str) -> Any:
        """The ``on_lookup(hit)`` callback of one ``vdb_grpc.cache.CoherentCache``."""
        hits = self.cache_lookups.labels(cache, "hit")
        misses = self.cache_lookups.labels(cache, "miss")

        def on_lookup(hit: bool) -> None:
            (hits if hit else misses).inc()

        return on_lookup

    def refused(self, caller: str) -> None:
        """The rate limit refused a call of ``caller`` ("user" or "anonymous")."""
        self.rate_limited.labels(caller).inc()

    def index_built(self, dimensions: int, seconds: float) -> None:
        """The indexer (re)built the HNSW index of ``dimensions`` in ``seconds``."""
        self.index_builds.labels(str(int(dimensions))).observe(seconds)

    def read_fell_back(self) -> None:
        """A read went to the primary because the replica was unreachable."""
        self.read_fallbacks.inc()

    # --- ProviderObserver -------------------------------------------------------------------------------------

    def provider_call(self, *, shape: str, instance: str, outcome: str, seconds: float) -> None:
        """One call to an embedding provider ended with ``outcome`` after ``seconds``."""
        label = self._instance_label(instance)
        self.provider_calls.labels(shape, label, outcome).inc()
        self.provider_seconds.labels(shape, label).observe(seconds)

    def provider_retry(self, *, shape: str, instance: str, reason: str) -> None:
        """A call to an embedding provider is retried because of ``reason``."""
        self.provider_retries.labels(shape, self._instance_label(instance), reason).inc()

    def _instance_label(self, instance: str) -> str:
        with self._instances_lock:
            if instance in self._instances:
                return instance
            if len(self._instances) < MAX_INSTANCE_LABELS:
                self._instances.add(instance)
                return instance
        return "other"

    # --- database state ---------------------------------------------------------------------------------------

    def watch_pool(self, name: str, pool: asyncpg.Pool) -> None:
        """Report ``pool``'s size and use as ``vdb_pool_*{pool=name}`` ("primary", "read")."""
        self._pools[name] = pool

    def start(self) -> None:
        """Start refreshing the database snapshot (needs the "primary" pool; idempotent)."""
        if "primary" in self._pools:
            self._task.start()

    async def stop(self) -> None:
        """Stop the refresh task and the HTTP endpoint."""
        await self._task.stop()
        if self._http is not None:
            server, self._http = self._http, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)

    def serve_http(self, listen: str) -> int:
        """Serve ``/metrics`` on ``listen`` (host:port; port 0 picks one) from a daemon thread; return the port."""
        host, _, port = listen.rpartition(":")
        try:
            server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        except OSError as exc:
            raise RuntimeError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from exc
        self._http, self._http_thread = server, thread
        return int(server.server_port)

    async def refresh(self) -> None:
        """Refresh the database snapshot once (the background task's step; tests call it directly)."""
        snap = DatabaseSnapshot(refreshed_at=time.monotonic())
        primary = self._pools["primary"]
        try:
            async with primary.acquire(timeout=2) as conn, conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {int(self._query_timeout_ms)}")
                snap.backlog = {int(d): int(n) for d, n in await conn.fetch(BACKLOG_BY_DIM, BACKLOG_COUNT_CAP)}
                snap.waiting = await _waiting_for_hnsw(conn)
                estimate = int(await conn.fetchval(EMBEDDINGS_ESTIMATE))
                snap.embeddings = (
                    int(await conn.fetchval(EMBEDDINGS_COUNT)) if estimate < EXACT_COUNT_BELOW else estimate
                )
            snap.up = 1.0
        except TimeoutError:
            # Every connection busy (or the database slow): say nothing new rather than "down".
            snap = DatabaseSnapshot(
                up=self.snapshot.up,
                backlog=self.snapshot.backlog,
                waiting=self.snapshot.waiting,
                embeddings=self.snapshot.embeddings,
                refreshed_at=self.snapshot.refreshed_at,
            )
        except Exception as exc:
            log.debug("metrics refresh: database unavailable (%s)", type(exc).__name__)
            snap.up = 0.0
        read = self._pools.get("read")
        if read is not None:
            try:
                async with read.acquire(timeout=2) as conn:
                    snap.replica_lag_seconds = float(await conn.fetchval(REPLICA_LAG))
                snap.replica_up = 1.0
            except Exception:
                snap.replica_up = 0.0
        self.snapshot = snap

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._refresh_seconds)


class _StateCollector(Collector):
    """Gauges computed at scrape time from the pools' counters and the last database snapshot."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Any]:
        return []  # not known ahead (dimensions appear with data); nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self._m
        size = GaugeMetricFamily("vdb_pool_connections", "Open database connections.", labels=["pool"])
        in_use = GaugeMetricFamily("vdb_pool_connections_in_use", "Database connections lent out.", labels=["pool"])
        cap = GaugeMetricFamily(
            "vdb_pool_connections_max", "Most database connections (VDB_POOL_MAX_SIZE).", labels=["pool"]
        )
        for name, pool in list(m._pools.items()):
            total = pool.get_size()
            size.add_metric([name], total)
            in_use.add_metric([name], total - pool.get_idle_size())
            cap.add_metric([name], pool.get_max_size())
        yield size
        yield in_use
        yield cap
        snap = m.snapshot
        yield GaugeMetricFamily(
            "vdb_database_up", "1 when the last probe of the primary database succeeded.", value=snap.up
        )
        backlog = GaugeMetricFamily(
            "vdb_indexer_backlog_rows",
            f"Rows not yet in their dimension's HNSW index (counted up to {BACKLOG_COUNT_CAP} in total).",
            labels=["dimensions"],
        )
        for dim, n in sorted(snap.backlog.items()):
            backlog.add_metric([str(dim)], n)
        yield backlog
        waiting = GaugeMetricFamily(
            "vdb_indexer_segment_rows_waiting",
            "Rows sealed or streamed into index segments whose HNSW index is not valid yet (searched exactly, or"
            " through an interim index).",
            labels=["dimensions"],
        )
        for dim, n in sorted(snap.waiting.items()):
            waiting.add_metric([str(dim)], n)
        yield waiting
        if snap.embeddings is not None:
            yield GaugeMetricFamily(
                "vdb_embeddings_stored",
                f"Embeddings stored (exact below {EXACT_COUNT_BELOW}, else the planner's estimate).",
                value=snap.embeddings,
            )
        if snap.refreshed_at is not None:
            yield GaugeMetricFamily(
                "vdb_database_snapshot_age_seconds",
                "Seconds since the database gauges were refreshed.",
                value=time.monotonic() - snap.refreshed_at,
            )
        if snap.replica_up is not None:
            yield GaugeMetricFamily("vdb_read_replica_up", "1 when the read replica answered.", value=snap.replica_up)
        if snap.replica_lag_seconds is not None:
            yield GaugeMetricFamily(
                "vdb_read_replica_lag_seconds",
                "Seconds since the read replica replayed its last transaction (0 when caught up).",
                value=snap.replica_lag_seconds,
            )
