"""CPU priority of index work on a PostgreSQL this process runs itself (embedded mode).

An HNSW build keeps every core busy (its leader plus parallel maintenance workers) for minutes; on 2 cores the
searches that run meanwhile wait for the CPU behind it (bench/scale.py: a 100k project's searches 6x slower
during another project's build, none of its rows being touched). The index work is background work, so its
backends get a higher Unix nice value while they do it: the kernel's scheduler then runs searches and uploads
first and gives the build the CPU they leave idle (CFS weights: nice 10 gets ~1/10 of a core that a nice-0
process also wants).

Only possible when the database backends are processes of this machine's PID namespace, started by this
service's user -- embedded mode. An external PostgreSQL's backend ids are another machine's (renicing the
local process that happens to have that id would be wrong), so the composition root passes ``nice = 0`` there.

Lowering a nice value again needs privileges an unprivileged service does not have (RLIMIT_NICE), so a
connection whose backend cannot be put back to 0 is closed after the index work instead of returning to the
pool at low priority. Parallel workers are new processes per build; ``renice`` is applied to them as the
build's progress watcher sees them (``pg_stat_activity.leader_pid``).
"""

from __future__ import annotations

import logging
import os

import asyncpg

from vdb_grpc.queries import indexer as q

log = logging.getLogger(__name__)


def get_nice(pid: int) -> int | None:
    """The nice value of process ``pid``, None if it is gone or not ours to see."""
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return None


def renice(pid: int, nice: int) -> bool:
    """Set process ``pid``'s nice value; False (logged at debug) when it is gone or not permitted."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:  # ProcessLookupError, PermissionError
        log.debug("could not set the nice value of process %d to %d: %s", pid, nice, exc)
        return False
    return True


async def renice_workers(conn: asyncpg.Connection, leader_pid: int, nice: int, seen: set[int]) -> set[int]:
    """Give the parallel workers of backend ``leader_pid`` not in ``seen`` the nice value ``nice``; returns
    ``seen`` with them added. Workers end with their statement, so nothing has to be restored."""
    for worker in await q.parallel_workers(conn, leader_pid):
        if worker not in seen:
            renice(worker, nice)
            seen = seen | {worker}
    return seen
