"""Short-lived caches of authorization facts (key → user, caller + project → access), coherent in-process.

Every search would otherwise pay two extra database round trips before the search itself: the API-key lookup
and the project permission check. Both answers change rarely, so they are kept for a few seconds
(``VDB_AUTH_CACHE_SECONDS``, default 2; 0 turns caching off).

Coherence: one ``Generation`` counter per server process. The interceptor bumps it when any RPC that can change
users, keys, projects, shares or instances finishes (``mutates_access``). An entry remembers the generation
read *before* its database lookup started and is only served while the counter still has that value, so a
change made through this process is visible to the very next request, including lookups that were in flight
while the change committed. Other replicas hear of it through PostgreSQL ``NOTIFY`` (``ReplicaInvalidation``)
within milliseconds; the TTL bounds the staleness when that message is lost or a change bypasses the service.

Only successful lookups are cached: an unknown key or a refused permission is always asked of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import asyncpg

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: RPC method names (the part after the last "/") that never change who may do what: reads, and the
#: embedding writes (they change a project's rows, never its permissions, instance or owner).
_READ_PREFIXES = ("Get", "List", "Search", "SanityCheck")
_NEUTRAL_SERVICES = ("/vdb_grpc.v1.EmbeddingService/",)


def mutates_access(method: str) -> bool:
    """Whether the RPC ``method`` (``/package.Service/Name``) may change keys, permissions or projects."""
    if method.startswith(_NEUTRAL_SERVICES):
        return False
    name = method.rsplit("/", 1)[-1]
    return not name.startswith(_READ_PREFIXES)


class Generation:
    """A counter bumped after every change that may invalidate cached authorization facts."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        """Invalidate every entry cached so far (and every lookup still in flight)."""
        self.value += 1


class CoherentCache(Generic[K, V]):
    """A TTL cache whose entries die with the ``Generation`` they were read under.

    ``get_or_load`` is the usual entry; ``begin``/``put`` are its parts: the token is taken before the
    database lookup, so an answer read while a change committed is never kept.
    """

    def __init__(
        self,
        generation: Generation,
        ttl_seconds: float,
        max_entries: int = 10_000,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_lookup``: told of each ``get_or_load``, True for a hit (metrics)."""
        self._on_lookup = on_lookup
        self._generation = generation
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[K, tuple[int, float, V]] = {}

    def get(self, key: K) -> V | None:
        """The cached value, or None when absent, expired or from an older generation."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        generation, expires, value = entry
        if generation != self._generation.value or expires < time.monotonic():
            self._entries.pop(key, None)
            return None
        return value

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached value, else ``await load()`` (kept unless it is None: refusals are not cached)."""
        hit = self.get(key)
        if self._on_lookup is not None:
            self._on_lookup(hit is not None)
        if hit is not None:
            return hit
        token = self.begin()
        value = await load()
        if value is not None:
            self.put(key, value, token)
        return value

    def begin(self) -> int:
        """The token to pass to ``put`` for a lookup starting now."""
        return self._generation.value

    def put(self, key: K, value: V, token: int) -> None:
        """Remember ``value`` unless caching is off or a change happened since ``begin``."""
        if self._ttl <= 0 or token != self._generation.value:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude but bounded; a refill costs one lookup per key
        self._entries[key] = (token, time.monotonic() + self._ttl, value)


#: PostgreSQL NOTIFY channel on which servers tell each other that authorization facts changed.
CHANNEL = "vdb_grpc_access_changed"


class ReplicaInvalidation:
    """Cross-replica invalidation through PostgreSQL ``LISTEN``/``NOTIFY``.

    ``changed()`` (called by the interceptor when an access-changing RPC ends) bumps this process's
    generation at once and sends a NOTIFY in the background; a dedicated listening connection bumps the
    generation whenever any server (this one included) notifies. Every replica therefore drops its cached
    answers within milliseconds of a change, not after the TTL. The TTL remains the bound when notifications
    are lost: while the listening connection is down (it reconnects with backoff and bumps on reconnect,
    since anything may have changed meanwhile), or when a change bypasses the service (SQL, another tool).
    """

    def __init__(self, generation: Generation, pool: asyncpg.Pool, dsn: str) -> None:
        self._generation = generation
        self._pool = pool
        self._dsn = dsn
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.listening = asyncio.Event()

    def start(self) -> None:
        """Start the listening connection (reconnects until ``stop``)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="vdb-access-listener")

    async def stop(self) -> None:
        """Stop listening; wait for notifications still being sent."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def changed(self) -> None:
        """This process changed authorization facts: forget cached answers here, then tell the others."""
        self._generation.bump()
        task = asyncio.get_running_loop().create_task(self._notify())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _notify(self) -> None:
        try:
            await self._pool.execute("SELECT pg_notify($1, '')", CHANNEL)
        except Exception as exc:  # the change itself is committed; other replicas fall back to the TTL
            log.warning("could not notify other replicas of an access change (%s)", type(exc).__name__)

    def _on_notify(self, *_: object) -> None:
        self._generation.bump()

    async def _listen_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._listen_once()
                log.warning("access-change listener lost its database connection; reconnecting")
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("access-change listener cannot connect (%s); retrying in %.1fs", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _listen_once(self) -> None:
        """Listen on one connection until it is lost."""
        lost = asyncio.Event()
        conn = await asyncpg.connect(self._dsn, server_settings={"application_name": "vdb-grpc-listen"})
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
            self._generation.bump()  # changes made while nobody listened
            self.listening.set()
            await lost.wait()
        finally:
            self.listening.clear()
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=2)
