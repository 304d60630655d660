"""The gRPC health status follows the database, and ends its watches when the server drains.

``DatabaseHealth`` keeps one connection of its own (outside the pool, so a busy pool does not look like an
outage) and runs ``SELECT 1`` on it every ``VDB_HEALTH_PROBE_SECONDS``, each probe bounded by that period (at
least one second) and connecting bounded by ``VDB_DB_CONNECT_TIMEOUT_SECONDS``. When the database stops
answering, every service turns NOT_SERVING; when it answers again, SERVING, and the pool's idle connections
(which died with the old server processes) are replaced. When the database closes the probe's connection (a
crash, a restart, an administrator's shutdown), the next probe runs at once rather than a period later. The
embedded supervisor reports a dead postmaster directly (``mark_down``).

``DrainingHealthServicer`` is the standard health service plus ``end_watches``: ``Watch`` streams otherwise
stay open until the server's grace runs out and hold its shutdown up for that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import asyncpg
from grpc_health.v1 import health, health_pb2

from vdb_grpc.runtime.background import BackgroundTask

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DrainingHealthServicer(health.aio.HealthServicer):
    """grpc_health's asyncio servicer whose open ``Watch`` streams can be ended (at the end of the drain)."""

    def __init__(self) -> None:
        super().__init__()
        self._watches: set[asyncio.Future[None]] = set()
        self._watches_ended = False

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        # grpc_health's Watch loop, plus: once the watches are ended, send the latest status and return.
        condition = self._server_watchers[request.service]
        self._watcher_count_by_service[request.service] += 1
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watches.add(finished)
        last_status = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                    if status != last_status:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                    last_status = status
                    if self._watches_ended:
                        return
                    await condition.wait()
        finally:
            finished.set_result(None)
            self._watches.discard(finished)
            self._watcher_count_by_service[request.service] -= 1
            if self._watcher_count_by_service[request.service] == 0:
                del self._server_watchers[request.service]
                del self._watcher_count_by_service[request.service]

    async def end_watches(self) -> None:
        """End every open ``Watch`` stream with OK, after sending it the current status (NOT_SERVING once the
        server shuts down)."""
        self._watches_ended = True
        pending = list(self._watches)
        for condition in list(self._server_watchers.values()):
            async with condition:
                condition.notify_all()
        if pending:
            await asyncio.wait(pending, timeout=1.0)  # a watcher that does not read cannot hold the stop up


class DatabaseHealth:
    """Probes the database and sets the health status of ``services`` accordingly."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: Iterable[str],
        dsn: str,
        *,
        period: float,
        connect_timeout: float,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        """Args:
        servicer: the server's health servicer.
        services: names whose status follows the database ("" included for the server as a whole).
        dsn: the database to probe.
        period: seconds between probes (and the longest wait of one probe, at least 1 s).
        connect_timeout: longest wait for the probe's connection.
        pool: the server's pool; its idle connections are replaced when the database comes back.
        """
        self._servicer = servicer
        self._services = tuple(services)
        self._dsn = dsn
        self._period = period
        self._probe_timeout = max(period, 1.0)
        self._connect_timeout = connect_timeout
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._task = BackgroundTask("vdb-db-health", self._run)
        #: Whether the database answered the last probe (the server starts after checking it).
        self.up = True
        #: Count of transitions to down, for tests and logs.
        self.outages = 0

    def start(self) -> None:
        """Start probing (idempotent)."""
        self._task.start()

    async def stop(self) -> None:
        """Stop probing and close the probe's connection."""
        await self._task.stop()
        await self._close()

    def wake(self) -> None:
        """Probe now (the supervisor calls this when it has restarted the database)."""
        self._wake.set()

    async def mark_down(self, reason: str) -> None:
        """Report NOT_SERVING at once (the supervisor saw the database die); the next good probe reverses it."""
        await self._report(False, reason)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            ok, reason = await self._probe()
            await self._report(ok, reason)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._period):
                    await self._wake.wait()
            self._wake.clear()

    async def _probe(self) -> tuple[bool, str]:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout,
                    command_timeout=self._probe_timeout,
                    server_settings={"application_name": "vdb-grpc-health"},
                )
                self._conn.add_termination_listener(lambda _conn: self._wake.set())
            await self._conn.fetchval("SELECT 1", timeout=self._probe_timeout)
            return True, ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._close()
            return False, f"{type(exc).__name__}: {exc}"

    async def _report(self, ok: bool, reason: str) -> None:
        if ok == self.up:
            return
        self.up = ok
        if ok:
            log.warning("database answers again: serving")
            if self._pool is not None:
                # Idle pooled connections belong to server processes that are gone; replace them up front
                # rather than failing the next call on each of them.
                await self._pool.expire_connections()
        else:
            self.outages += 1
            log.error("database unavailable (%s): health NOT_SERVING until it answers again", reason)
        status = SERVING if ok else NOT_SERVING
        for name in self._services:
            await self._servicer.set(name, status)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
