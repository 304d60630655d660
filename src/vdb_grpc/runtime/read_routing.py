"""Read calls on a streaming replica (``VDB_DATABASE_READ_URL``), everything else on the primary.

The routing is by RPC, not by statement: the interceptor calls ``mark_call`` once the caller's key has been
resolved (always on the primary, so a key that was just created or rotated works at once), and ``ReadRouting``
— handed to the domain services in place of the pool — lends a replica connection whenever the current call
is a read (a method named ``Get…``, ``List…`` or ``Search…`` outside AdminService). A read call has no write,
so no transaction that writes ever reaches the replica; writes, the indexer, the access-change listener and
every background task run outside a read call and use the primary. The domain layer does not change.

Fallback: when the replica cannot be reached (connect refused or timed out, connection lost), the call in hand
runs on the primary if nothing had been sent yet, and the replica is skipped for ``retry_seconds``; the
first read after that tries it again, so reads move back by themselves when it returns.

Read-after-write: a replica replays the primary's WAL asynchronously, typically within milliseconds, but
under load or on a slow network seconds behind. A read right after a write (even by the same client) may not
see it yet; ``vdb_read_replica_lag_seconds`` shows the lag. A client that needs its own writes should read
them back from the response of the write.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

import asyncpg

from vdb_grpc.db import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

#: Method-name prefixes of the calls that only read.
READ_PREFIXES = ("Get", "List", "Search")
#: Services whose calls always use the primary (admin tooling).
PRIMARY_SERVICES = ("/vdb_grpc.v1.AdminService/",)

#: True while serving a read call (set by the interceptor after authentication).
_reading: ContextVar[bool] = ContextVar("vdb_reading", default=False)


def is_read_method(method: str) -> bool:
    """Whether the RPC ``method`` (``/package.Service/Name``) only reads."""
    if method.startswith(PRIMARY_SERVICES):
        return False
    return method.rsplit("/", 1)[-1].startswith(READ_PREFIXES)


def mark_call(method: str) -> None:
    """Route the rest of the current call: to the replica if ``method`` only reads."""
    _reading.set(is_read_method(method))


class ReadRouting:
    """A pool look-alike for domain services: ``acquire()`` lends a replica connection during read calls.

    Everything other than ``acquire`` (``execute``, ``get_size``, ...) goes to the primary pool.
    """

    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool,
        *,
        retry_seconds: float = 5.0,
        acquire_timeout: float = 2.0,
        on_fallback: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        primary: the primary's pool.
        replica: the read replica's pool.
        retry_seconds: how long reads skip a replica that could not be reached.
        acquire_timeout: longest wait for a replica connection before using the primary.
        on_fallback: called whenever a read goes to the primary instead (metrics).
        clock: monotonic seconds.
        """
        self.primary = primary
        self.replica = replica
        self.retry_seconds = retry_seconds
        self._acquire_timeout = acquire_timeout
        self._on_fallback = on_fallback
        self._clock = clock
        self._skip_until = 0.0

    @property
    def replica_available(self) -> bool:
        """False while the replica is being skipped after a failure."""
        return self._clock() >= self._skip_until

    def __getattr__(self, name: str) -> Any:
        return getattr(self.primary, name)

    def _replica_failed(self, exc: BaseException) -> None:
        if self.replica_available:
            log.warning(
                "read replica unavailable (%s): reads use the primary for %.0fs",
                type(exc).__name__,
                self.retry_seconds,
            )
        self._skip_until = self._clock() + self.retry_seconds

    def acquire(self, *, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection: the replica's during a read call (unless it is unreachable), else the primary's."""
        if not _reading.get() or not self.replica_available:
            if _reading.get() and self._on_fallback is not None:
                self._on_fallback()
            return self.primary.acquire(timeout=timeout)  # type: ignore[no-any-return]
        return self._acquire_replica(timeout)

    @contextlib.asynccontextmanager
    async def _acquire_replica(self, wait_limit: float | None) -> AsyncIterator[asyncpg.Connection]:
        wait = self._acquire_timeout if wait_limit is None else min(wait_limit, self._acquire_timeout)
        conn: asyncpg.Connection | None = None
        try:
            conn = await self.replica.acquire(timeout=wait)
        except (TimeoutError, *UNAVAILABLE_ERRORS, asyncpg.PostgresError) as exc:
            # A replica still starting up refuses with CannotConnectNowError, a PostgresError.
            self._replica_failed(exc)
            if self._on_fallback is not None:
                self._on_fallback()
        if conn is None:
            async with self.primary.acquire(timeout=wait_limit) as primary_conn:
                yield primary_conn
            return
        try:
            yield conn
        except UNAVAILABLE_ERRORS as exc:
            self._replica_failed(exc)  # this call fails UNAVAILABLE (retryable); the next read uses the primary
            raise
        finally:
            await self.replica.release(conn)
