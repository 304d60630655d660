"""Index maintenance waits while uploads stream in: the background indexer defers its passes during uploads.

Uploads write ``indexed = false``, so no upload statement maintains an HNSW index (docs/embeddings-design.md).
The indexer's work still competes with uploads for the same CPUs and disk, though: flipping rows rewrites
them, and an HNSW build runs on every core (parallel maintenance workers). During a bulk load it would also
rebuild the index over and over as the backlog grows (measured on 2 cores: streaming ingest at half speed).

``UploadAwareIndexer`` (the server's indexer) therefore skips its pass while uploads keep arriving — while less
than ``quiet_seconds`` have passed since the last committed upload — but never for more than
``max_deferral_seconds`` in a row, so a bulk load is indexed by one build after it ends and a steady trickle of
uploads is still indexed. Searches stay correct meanwhile: rows not yet indexed are scanned exactly.

A pass that is already running when uploads start runs to its end. The upload clock is per server process:
another replica's indexer, which sees no uploads, is not held back.

One exception: *quick* passes go on while uploads arrive -- every ``quick_interval`` seconds, and at once when a
stream closes a segment of its own (``vdb_grpc.domain.stream_segments``). They flip nothing and run only the
quick jobs (``QUICK_JOBS``: interim indexes of streams' segments, open or closed, drops, hand-backs): seconds of
work that make the fresh rows cheap to search. Seals, HNSW builds and merges (minutes on every core) still wait
for the uploads to pause.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

import asyncpg

from vdb_grpc.indexer import Indexer

#: The jobs of a pass run while uploads arrive (after a stream closed its segment).
QUICK_JOBS = ("drop", "release", "interim")


class UploadAwareIndexer(Indexer):
    """The background indexer, deferring its passes while uploads are being committed."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        quiet_seconds: float = 2.0,
        max_deferral_seconds: float = 60.0,
        quick_interval: float = 2.0,
        clock: Any = time.monotonic,
        **kwargs: Any,
    ) -> None:
        """Args:
        pool: the server's pool.
        quiet_seconds: a pass waits until this long after the last committed upload.
        max_deferral_seconds: ... but runs anyway once it has been put off this long.
        quick_interval: seconds between quick passes while passes are put off.
        clock: monotonic clock in seconds (tests pass their own).
        **kwargs: ``Indexer``'s tuning arguments.
        """
        super().__init__(pool, **kwargs)
        self.quiet_seconds = quiet_seconds
        self.max_deferral_seconds = max_deferral_seconds
        self.quick_interval = quick_interval
        self._clock = clock
        self._last_upload = -math.inf
        self._deferring_since: float | None = None
        self._index_due = False
        self._quick_only = False
        self._last_quick = clock()

    def note_upload(self) -> None:
        """Record a committed upload (``Embeddings``' on_commit hook). Starts nothing, unlike ``wake``."""
        self._last_upload = self._clock()

    def note_index_due(self) -> None:
        """A stream has closed its segment, or grown its open one to the interim index's size
        (``vdb_grpc.domain.stream_segments``): the next pass runs now, even while uploads arrive, with the quick
        jobs only (its interim index)."""
        self._index_due = True
        self.wake()

    def deferring(self) -> bool:
        """True when the next pass should wait: uploads are arriving and the pass has not waited too long."""
        now = self._clock()
        if now - self._last_upload >= self.quiet_seconds:
            self._deferring_since = None
            return False
        if self._deferring_since is None:
            self._deferring_since = now
        if now - self._deferring_since >= self.max_deferral_seconds:
            self._deferring_since = None
            return False
        return True

    async def run_once(self) -> bool:
        """One pass, unless uploads are arriving: then a quick pass when one is due (see the module docstring),
        else nothing; either way report idle, so the loop sleeps and asks again."""
        deferring = self.deferring()
        self._quick_only = deferring
        if not deferring:
            return await super().run_once()
        now = self._clock()
        if self._index_due or now - self._last_quick >= self.quick_interval:
            self._index_due = False
            self._last_quick = now
            await super().run_once()
        return True

    def allowed_jobs(self) -> Collection[str] | None:
        return QUICK_JOBS if self._quick_only else None

    def flips_allowed(self) -> bool:
        return not self._quick_only

    async def run_until_idle(self) -> None:
        """Work until nothing is left, without deferring (an explicit request, e.g. from a benchmark)."""
        self._last_upload = -math.inf
        self._quick_only = False
        await super().run_until_idle()
