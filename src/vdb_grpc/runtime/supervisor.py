"""Supervision of the embedded PostgreSQL: notice that it died, report it, restart it, serve again.

Every ``poll_seconds`` (0.2 s) the supervisor checks that the postmaster in ``postmaster.pid`` is alive (a
zombie counts as dead). When it is not, health turns NOT_SERVING at once and the supervisor starts PostgreSQL
again with the cluster's own ``pg_ctl`` (``EmbeddedPostgres.start``): PostgreSQL replays its write-ahead log
(crash recovery), so every committed transaction, hence every acknowledged call, is still there. A failed
attempt is retried after 0.25 s, then twice as long each time, at most ``VDB_EMBEDDED_RESTART_BACKOFF_SECONDS``
apart. Once it runs again the health probe is woken and turns the service SERVING when the database answers.
Calls in flight when PostgreSQL died fail with UNAVAILABLE; the server process itself never restarts.

Only the process that owns the cluster supervises it (``EmbeddedPostgres.owner``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from vdb_grpc.runtime.background import BackgroundTask
from vdb_grpc.runtime.postgres import ClusterBusy, EmbeddedPostgres

log = logging.getLogger(__name__)


class EmbeddedSupervisor:
    """Watches and restarts the embedded PostgreSQL."""

    def __init__(
        self,
        cluster: EmbeddedPostgres,
        *,
        on_down: Callable[[str], Awaitable[None]],
        on_up: Callable[[], None],
        max_backoff: float,
        poll_seconds: float = 0.2,
    ) -> None:
        """Args:
        cluster: the cluster this process owns.
        on_down: awaited as soon as PostgreSQL is found dead (with a reason).
        on_up: called when PostgreSQL runs again.
        max_backoff: longest pause between two restart attempts, seconds.
        poll_seconds: how often the postmaster is checked.
        """
        self._cluster = cluster
        self._on_down = on_down
        self._on_up = on_up
        self._max_backoff = max_backoff
        self._poll = poll_seconds
        self._task = BackgroundTask("vdb-pg-supervisor", self._run)
        #: Restarts done so far (tests and logs).
        self.restarts = 0

    def start(self) -> None:
        """Start watching (idempotent)."""
        self._task.start()

    async def stop(self) -> None:
        """Stop watching (before the server stops PostgreSQL itself); a restart in progress runs to its end."""
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            if self._cluster.is_running():
                continue
            pid = self._cluster.postmaster_pid()
            log.error("embedded PostgreSQL (pid %s) is not running: restarting it", pid)
            await self._on_down(f"embedded PostgreSQL pid {pid} died")
            await self._restart()

    async def _restart(self) -> None:
        delay = 0.25
        while True:
            try:
                # In a thread: pg_ctl waits for crash recovery to finish. Shielded: a cancelled supervisor
                # (shutdown) must not leave a half-started cluster behind an unawaited thread.
                await asyncio.shield(asyncio.to_thread(self._cluster.start))
            except ClusterBusy as exc:
                log.warning("cannot restart embedded PostgreSQL yet (%s); retrying in %.2fs", exc, delay)
            except Exception as exc:
                log.error("restarting embedded PostgreSQL failed; retrying in %.2fs: %s", delay, exc)
            else:
                self.restarts += 1
                log.warning("embedded PostgreSQL restarted (restart %d)", self.restarts)
                self._on_up()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
