"""Per-caller token buckets: ``VDB_RATE_LIMIT_RPS`` calls per second on average, ``VDB_RATE_LIMIT_BURST`` at once.

Each user has a bucket; anonymous callers share one bucket per peer address (the port is dropped, so one host's
connections count together). The admin key is not limited. A call takes one token (a stream counts as one call,
however many messages it carries); without a token it fails RESOURCE_EXHAUSTED with ``google.rpc.RetryInfo``
saying when the next token arrives.

Memory is bounded: a bucket idle long enough to be full again is indistinguishable from a new one, so such
buckets are dropped; beyond ``max_buckets`` the least recently used one goes as well.

Behind a proxy or load balancer that does not preserve client addresses, every anonymous caller has the
proxy's address and they share one bucket.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from vdb_grpc.auth import Principal, PrincipalKind
from vdb_grpc.errors import ErrorInfo, ResourceExhausted


def peer_address(peer: str) -> str:
    """The host part of a gRPC peer string: ``ipv4:1.2.3.4:5678`` → ``1.2.3.4``, ``ipv6:[::1]:5678`` → ``::1``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")] if "]" in rest else rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer  # unix:/path and others: the whole string


class RateLimiter:
    """Token buckets keyed by user handle or anonymous peer address."""

    def __init__(
        self,
        rate: float,
        burst: int = 0,
        *,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        """Args:
        rate: tokens added per second (> 0).
        burst: bucket capacity; 0 = ``ceil(rate)`` (at least 1).
        max_buckets: most buckets kept; beyond it the least recently used is dropped.
        clock: monotonic seconds (tests pass their own).
        on_refusal: called with "user" or "anonymous" for every refused call (metrics).
        """
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst or max(1, math.ceil(rate)))
        self._refill_seconds = self.burst / self.rate  # an idle bucket is full again after this long
        self._max = max_buckets
        self._clock = clock
        self._on_refusal = on_refusal
        # key → (tokens, at): tokens the bucket held at time ``at``; ordered from least to most recently used.
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    @property
    def bucket_count(self) -> int:
        """Buckets currently kept."""
        return len(self._buckets)

    def admit(self, principal: Principal, peer: str) -> None:
        """Take a token for this call.

        Raises:
            ResourceExhausted: no token left, with ``retry_after_seconds`` until the next one.
        """
        if principal.kind is PrincipalKind.ADMIN:
            return
        if principal.kind is PrincipalKind.USER:
            key, caller = ("user", principal.user_handle or ""), "user"
        else:
            key, caller = ("peer", peer_address(peer)), "anonymous"
        now = self._clock()
        self._evict(now)
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return
        self._buckets[key] = (tokens, now)
        if self._on_refusal is not None:
            self._on_refusal(caller)
        wait = (1.0 - tokens) / self.rate
        raise ResourceExhausted(
            f"rate limit exceeded ({self.rate:g} calls per second, bursts of {self.burst:g}); retry in {wait:.2f}s",
            info=ErrorInfo("RATE_LIMITED", (("calls_per_second", f"{self.rate:g}"), ("burst", f"{self.burst:g}"))),
            retry_after_seconds=wait,
        )

    def _evict(self, now: float) -> None:
        """Drop buckets that are full again (least recently used first), and any beyond ``max_buckets``."""
        buckets = self._buckets
        while buckets:
            key, (_, at) = next(iter(buckets.items()))
            if now - at < self._refill_seconds and len(buckets) < self._max:
                break
            del buckets[key]
