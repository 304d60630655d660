"""The client's deadline bounds every database statement of its call, without an extra round trip.

The interceptor records when the call's deadline passes (``set_call_deadline``, from
``context.time_remaining()``) in a context variable. Every connection of the pool is a ``DeadlineConnection``:
each statement it runs gets asyncpg's per-call ``timeout=`` set to the time left. asyncpg enforces that timeout
client-side and, when it fires, sends PostgreSQL a cancel request (``CancelRequest`` on a side connection, as
``pg_cancel_backend`` would) before raising; the call then fails with DEADLINE_EXCEEDED. A call cancelled by
the client (or by gRPC at its deadline) cancels the handler's task, and asyncpg sends the same cancel request
for the statement that was waiting. Either way the connection waits for PostgreSQL to acknowledge the cancel
before it is reused, and the pool rolls back what the call left open (``BoundedPool.release``).

Transaction control (``BEGIN``/``COMMIT``/``ROLLBACK``) and the pool's reset are never bounded: a ``COMMIT`` cut
short would leave the outcome unknown to us, and the rollback must run for the connection to return clean.

``BoundedPool`` also bounds the wait for a pooled connection (``VDB_POOL_ACQUIRE_TIMEOUT_SECONDS``, or the time
left of the call when that is shorter), so a call never hangs on a database that does not answer: it fails with
UNAVAILABLE (DEADLINE_EXCEEDED when its own deadline was the limit).
"""

# The overrides keep asyncpg's own ``timeout=`` parameters (ASYNC109 asks for asyncio.timeout instead).
# ruff: noqa: ASYNC109

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import asyncpg
from asyncpg.transaction import Transaction

from vdb_grpc.errors import DeadlineExceeded, Unavailable

#: ``time.monotonic()`` at which the current call's deadline passes; None: no deadline (background work).
_call_deadline: ContextVar[float | None] = ContextVar("vdb_call_deadline", default=None)


def set_call_deadline(time_remaining: float | None) -> None:
    """Bound the statements of the current call (and of tasks it starts) to ``time_remaining`` seconds from now."""
    _call_deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)


def clear_call_deadline() -> None:
    """Statements from here on are not bounded by a call's deadline (e.g. work left after the call ended)."""
    _call_deadline.set(None)


def time_left() -> float | None:
    """Seconds left before the current call's deadline, None without one (may be <= 0)."""
    deadline = _call_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextlib.contextmanager
def unbounded() -> Iterator[None]:
    """Run the enclosed statements without the call's deadline (transaction control, connection reset)."""
    token = _call_deadline.set(None)
    try:
        yield
    finally:
        _call_deadline.reset(token)


def _expired() -> DeadlineExceeded:
    return DeadlineExceeded("the call's deadline passed while its database statement ran; the statement was cancelled")


class _Bounded:
    """The timeout to pass for one statement, and whether it came from the call's deadline."""

    __slots__ = ("from_deadline", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.from_deadline = False
        self.timeout = timeout
        if timeout is not None:
            return
        left = time_left()
        if left is None:
            return
        if left <= 0:
            raise _expired()  # nothing is sent: the caller has given up already
        self.from_deadline = True
        self.timeout = left


class DeadlineTransaction(Transaction):
    """asyncpg's transaction whose BEGIN/COMMIT/ROLLBACK are not cut by the call's deadline."""

    async def __aexit__(self, extype: Any, ex: Any, tb: Any) -> None:
        with unbounded():
            await super().__aexit__(extype, ex, tb)

    async def commit(self) -> None:
        """Commit, whatever time is left of the call."""
        with unbounded():
            await super().commit()

    async def rollback(self) -> None:
        """Roll back, whatever time is left of the call."""
        with unbounded():
            await super().rollback()


class DeadlineConnection(asyncpg.Connection):
    """A connection whose statements default their ``timeout=`` to the time left of the current call."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        bound = _Bounded(timeout)
        try:
            return str(await super().execute(query, *args, timeout=bound.timeout))
        except TimeoutError:
            if bound.from_deadline:
                raise _expired() from None
            raise

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> None:
        bound = _Bounded(timeout)
        try:
            await super().executemany(command, args, timeout=bound.timeout)
        except TimeoutError:
            if bound.from_deadline:
                raise _expired() from None
            raise

    async def fetch(self, query: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> list[Any]:
        bound = _Bounded(timeout)
        try:
            return list(await super().fetch(query, *args, timeout=bound.timeout, **kwargs))
        except TimeoutError:
            if bound.from_deadline:
                raise _expired() from None
            raise

    async def fetchval(self, query: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        bound = _Bounded(timeout)
        try:
            return await super().fetchval(query, *args, timeout=bound.timeout, **kwargs)
        except TimeoutError:
            if bound.from_deadline:
                raise _expired() from None
            raise

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        bound = _Bounded(timeout)
        try:
            return await super().fetchrow(query, *args, timeout=bound.timeout, **kwargs)
        except TimeoutError:
            if bound.from_deadline:
                raise _expired() from None
            raise

    async def fetchmany(self, query: str, args: Any, *, timeout: float | None = None, **kwargs: Any) -> list[Any]:
        bound = _Bounded(timeout)
        try:
            return list(await super().fetchmany(query, args, timeout=bound.timeout, **kwargs))
        except TimeoutError:
            if bound.from_deadline:
                raise _expired() from None
            raise

    async def copy_records_to_table(self, table_name: str, *, timeout: float | None = None, **kwargs: Any) -> str:
        bound = _Bounded(timeout)
        try:
            return str(await super().copy_records_to_table(table_name, timeout=bound.timeout, **kwargs))
        except TimeoutError:
            if bound.from_deadline:
                raise _expired() from None
            raise

    def cursor(self, query: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        # Each fetch of the cursor is bounded by what was left when it was opened (cursors run in a transaction).
        return super().cursor(query, *args, timeout=_Bounded(timeout).timeout, **kwargs)

    def transaction(self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False) -> Any:
        self._check_open()
        return DeadlineTransaction(self, isolation, readonly, deferrable)


class BoundedPool(asyncpg.Pool):
    """asyncpg's pool with a bounded wait for a connection and a release that is never cut by a deadline.

    Built by ``vdb_grpc.db.create_pool`` (asyncpg's ``create_pool`` only returns ``asyncpg.Pool``, so the pool is
    constructed directly, as ``create_pool`` itself does).
    """

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> _BoundedAcquire:
        """A connection within ``timeout`` (default: the pool's acquire timeout, or less when the call's
        deadline is nearer); ``async with`` releases it."""
        return _BoundedAcquire(self, timeout)

    async def _acquire_bounded(self, timeout: float | None) -> asyncpg.Connection:
        wait = self.acquire_timeout if timeout is None else timeout
        left = time_left() if timeout is None else None
        by_deadline = left is not None and left < wait
        if by_deadline:
            assert left is not None
            if left <= 0:
                raise _expired()
            wait = left
        try:
            return await asyncpg.Pool.acquire(self, timeout=wait)
        except TimeoutError:
            if by_deadline:
                raise DeadlineExceeded("the call's deadline passed while it waited for a database connection") from None
            raise Unavailable(
                f"no database connection within {wait:g}s (the database does not answer, or every pooled "
                "connection is busy); retry later"
            ) from None

    async def release(self, connection: asyncpg.Connection, *, timeout: float | None = None) -> None:
        """Return ``connection``: roll back what is open and reset it, whatever time is left of the call."""
        with unbounded():
            await super().release(connection, timeout=timeout)


class _BoundedAcquire:
    """``await pool.acquire()`` or ``async with pool.acquire() as conn`` for ``BoundedPool``."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: BoundedPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await self._pool._acquire_bounded(self._timeout)
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)

    def __await__(self) -> Any:
        return self._pool._acquire_bounded(self._timeout).__await__()
