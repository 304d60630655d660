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
"""

from __future__ import annotations

import math
import time
from typing import Any

import asyncpg

from vdb_grpc.indexer import Indexer


class UploadAwareIndexer(Indexer):
    """The background indexer, deferring its passes while uploads are being committed."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        quiet_seconds: float = 2.0,
        max_deferral_seconds: float = 60.0,
        clock: Any = time.monotonic,
        **kwargs: Any,
    ) -> None:
        """Args:
        pool: the server's pool.
        quiet_seconds: a pass waits until this long after the last committed upload.
        max_deferral_seconds: ... but runs anyway once it has been put off this long.
        clock: monotonic clock in seconds (tests pass their own).
        **kwargs: ``Indexer``'s tuning arguments.
        """
        super().__init__(pool, **kwargs)
        self.quiet_seconds = quiet_seconds
        self.max_deferral_seconds = max_deferral_seconds
        self._clock = clock
        self._last_upload = -math.inf
        self._deferring_since: float | None = None

    def note_upload(self) -> None:
        """Record a committed upload (``Embeddings``' on_commit hook). Starts nothing, unlike ``wake``."""
        self._last_upload = self._clock()

    def note_segment_closed(self) -> None:
        """A stream has closed its segment (``vdb_grpc.domain.stream_segments``): its rows wait for an index, and
        only they were written -- the next pass runs now, even while other uploads arrive."""
        self._last_upload = -math.inf
        self._deferring_since = None
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
        """One pass, unless uploads are arriving: then report idle, so the loop sleeps and asks again."""
        if self.deferring():
            return True
        return await super().run_once()

    async def run_until_idle(self) -> None:
        """Work until nothing is left, without deferring (an explicit request, e.g. from a benchmark)."""
        self._last_upload = -math.inf
        await super().run_until_idle()
