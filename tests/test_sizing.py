"""Build and server sizing from data size and machine (pure functions; the memory model is pgvector 0.8.5's)."""

from __future__ import annotations

from vdb_grpc.indexing.sizing import MIB, build_resources, embedded_server_config, hnsw_graph_bytes


def test_graph_estimate_matches_pgvectors_measured_footprint() -> None:
    # measured from "hnsw graph no longer fits into maintenance_work_mem after N tuples" (bytes per tuple)
    for dims, m, measured in ((64, 16, 842), (384, 16, 1481), (1536, 16, 3791), (384, 8, 1231), (384, 32, 1993)):
        assert abs(hnsw_graph_bytes(1, dims, m) - measured) / measured < 0.03, (dims, m)


def test_a_million_rows_of_384_dims_fit_in_memory_when_the_machine_has_it() -> None:
    r = build_resources(1_000_000, 384, 16, memory_limit_bytes=8 * 1024 * MIB, max_workers=1, shm_bytes=1 << 40)
    assert r.fits and r.maintenance_work_mem_bytes >= hnsw_graph_bytes(1_000_000, 384, 16)
    assert r.parallel_workers == 1


def test_a_small_budget_is_respected_and_reported() -> None:
    r = build_resources(1_000_000, 384, 16, memory_limit_bytes=256 * MIB, max_workers=0)
    assert r.maintenance_work_mem_bytes == 256 * MIB and not r.fits


def test_small_builds_and_small_shared_memory_get_no_workers() -> None:
    assert build_resources(10_000, 384, 16, memory_limit_bytes=1 << 30, max_workers=4).parallel_workers == 0
    # a container's 64 MB /dev/shm cannot hold a parallel build's graph
    r = build_resources(500_000, 384, 16, memory_limit_bytes=1 << 32, max_workers=4, shm_bytes=64 * MIB)
    assert r.parallel_workers == 0
    assert build_resources(100, 8, 16, memory_limit_bytes=0, max_workers=0).maintenance_work_mem_bytes == 64 * MIB


def test_embedded_config_scales_with_memory() -> None:
    small = embedded_server_config(memory_bytes=2 * 1024 * MIB, cpus=2)
    big = embedded_server_config(memory_bytes=64 * 1024 * MIB, cpus=16)
    assert small["shared_buffers"] == "512MB" and small["max_parallel_maintenance_workers"] == "1"
    assert big["shared_buffers"] == "8192MB" and big["max_parallel_maintenance_workers"] == "4"
