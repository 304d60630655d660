"""Bounded retries of whole transactions that lost a concurrency conflict.

Two kinds: a deadlock or serialization failure (``retry_conflicts``), and an ``allow_missing`` update whose
create lost the race to a concurrent create of the same resource (``update_or_create``).

Writers order their row locks (an upload writes its rows in text_id order), so a deadlock of the service's own
making should not occur; one that still does (a lock taken outside that order, a serialization failure of a
stricter isolation level) is retried here, inside the service, before the client ever sees ABORTED. The
function retried must be a whole transaction (acquire, begin, work, commit): a failed attempt rolled back,
so a retry is idempotent and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from vdb_grpc.errors import AlreadyExists

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SQLSTATE 40P01 and 40001: the transaction was rolled back by PostgreSQL and may simply be run again.
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
#: Attempts after the first before the conflict is reported (ABORTED).
MAX_RETRIES = 5
#: First backoff in seconds; doubled per attempt, each wait jittered to 50-150 % so that the losers of one
#: conflict do not meet again at once.
BASE_DELAY = 0.01


class RetryStats:
    """How many conflicts were retried (read by tests and the reliability figures)."""

    __slots__ = ("exhausted", "retries")

    def __init__(self) -> None:
        self.retries = 0
        self.exhausted = 0


STATS = RetryStats()


async def retry_conflicts(
    attempt: Callable[[], Awaitable[T]], what: str, *, max_retries: int = MAX_RETRIES, base_delay: float = BASE_DELAY
) -> T:
    """Run ``attempt`` (one whole transaction); run it again after a deadlock or serialization failure.

    Args:
        attempt: Opens, runs and commits one transaction; a conflict must leave nothing behind.
        what: What is being done, for the log line of a retry.
        max_retries: Attempts after the first.
        base_delay: First backoff in seconds.

    Raises:
        asyncpg.DeadlockDetectedError, asyncpg.SerializationError: still conflicting after ``max_retries``
            retries (the interceptor reports ABORTED).
    """
    for n in range(max_retries + 1):
        try:
            return await attempt()
        except CONFLICT_ERRORS as exc:
            if n == max_retries:
                STATS.exhausted += 1
                log.warning("%s: %s persisted after %d retries", what, type(exc).__name__, max_retries)
                raise
            STATS.retries += 1
            delay = base_delay * (2**n) * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not security
            log.info("%s: %s, retrying in %.0f ms (retry %d)", what, type(exc).__name__, delay * 1000, n + 1)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class LostCreateRace(Exception):
    """An ``allow_missing`` create found its row taken by a concurrent create (never reaches a client)."""

    def __init__(self, error: AlreadyExists) -> None:
        super().__init__(error.message)
        self.error = error


async def creating(insert: Awaitable[T]) -> T:
    """Await the INSERT of an ``allow_missing`` update; its AlreadyExists becomes ``LostCreateRace``.

    The INSERT waited for the concurrent creator's transaction (a unique index conflict waits for the other
    transaction to end), so once this is raised the other row is committed and visible to a new transaction.
    """
    try:
        return await insert
    except AlreadyExists as exc:
        raise LostCreateRace(exc) from None


async def update_or_create(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run an update-with-``allow_missing`` transaction; if its create lost a race, run it once more.

    The second attempt finds the row the winner created and updates it (reporting ``created`` false), so of
    concurrent ``allow_missing`` updates of one absent resource all succeed and exactly one reports that it
    created. When the second attempt loses too (the conflict was not the resource's own key, e.g. a user's
    email taken), its AlreadyExists is the answer.
    """
    try:
        return await attempt()
    except LostCreateRace:
        log.info("allow_missing create lost a race; updating the row the other call created")
    try:
        return await attempt()
    except LostCreateRace as lost:
        raise lost.error from None
