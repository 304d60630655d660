"""Short-lived caches of authorization facts (key → user, caller + project → access), coherent in-process.

Every search would otherwise pay two extra database round trips before the search itself: the API-key lookup
and the project permission check. Both answers change rarely, so they are kept for a few seconds
(``VDB_AUTH_CACHE_SECONDS``, default 2; 0 turns caching off).

Coherence: one ``Generation`` counter per server process. The interceptor bumps it when any RPC that can change
users, keys, projects, shares or instances finishes (``mutates_access``). An entry remembers the generation
read *before* its database lookup started and is only served while the counter still has that value, so a
change made through this process is visible to the very next request, including lookups that were in flight
while the change committed. Another replica's change is seen after at most the TTL: that is the bounded
staleness an operator accepts with a non-zero ``VDB_AUTH_CACHE_SECONDS`` (README, Configuration).

Only successful lookups are cached: an unknown key or a refused permission is always asked of the database.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: RPC method names (the part after the last "/") that never change who may do what: reads, and the
#: embedding writes (they change a project's rows, never its permissions, instance or owner).
_READ_PREFIXES = ("Get", "List", "Search", "SanityCheck")
_NEUTRAL_SERVICES = ("vdb_grpc.v1.EmbeddingService/",)


def mutates_access(method: str) -> bool:
    """Whether the RPC ``method`` (``/package.Service/Name``) may change keys, permissions or projects."""
    if any(s in method for s in _NEUTRAL_SERVICES):
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

    Usage: ``token = cache.begin()`` before the database lookup, ``cache.put(key, value, token)`` after it.
    """

    def __init__(self, generation: Generation, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._generation = generation
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[K, tuple[int, float, V]] = {}

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

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
