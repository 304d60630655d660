"""`vdb-grpc serve` as a real process: embedded PostgreSQL, generated secrets, restart, external mode checks."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vdb_grpc.v1 import user_pb2, user_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VDB_", "ENCRYPTION_KEY"))}
    env.update(extra)
    return env


class Served:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vdb_grpc", "serve"], env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.log: list[str] = []
        deadline = time.monotonic() + 60
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"serving on [\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        self.log.append(err)
        return self.proc.returncode


@pytest.fixture
def data_dir():
    # short path: PostgreSQL's Unix socket lives inside it
    d = Path(tempfile.mkdtemp(prefix="vdbe-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_embedded_mode_generates_secrets_serves_and_restarts(data_dir):
    env = _env(VDB_DATA_DIR=str(data_dir), VDB_LISTEN="127.0.0.1:0")
    first = await asyncio.to_thread(Served, env)
    try:
        admin_key = (data_dir / "admin_key").read_text().strip()
        enc_key = (data_dir / "encryption_key").read_text().strip()
        assert len(admin_key) == 64 and len(enc_key) == 64
        assert (data_dir / "admin_key").stat().st_mode & 0o777 == 0o600
        assert (data_dir / "encryption_key").stat().st_mode & 0o777 == 0o600
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as ch:
            status = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            resp = await user_pb2_grpc.UserServiceStub(ch).CreateUser(
                user_pb2.CreateUserRequest(user=user_pb2.User(user_handle="alice", email="alice@example.org")),
                metadata=(("authorization", f"Bearer {admin_key}"),),
            )
            user_key = resp.api_key
    finally:
        assert await asyncio.to_thread(first.stop) == 0
    log = "".join(first.log)
    assert str(data_dir / "admin_key") in log  # where it is…
    assert admin_key not in log and enc_key not in log and user_key not in log  # …never what it is
    assert "stopped" in log

    second = await asyncio.to_thread(Served, env)
    try:
        assert (data_dir / "admin_key").read_text().strip() == admin_key
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            got = await user_pb2_grpc.UserServiceStub(ch).GetUser(
                user_pb2.GetUserRequest(user_handle="alice"), metadata=(("authorization", f"Bearer {user_key}"),)
            )
            assert got.user.email == "alice@example.org"
    finally:
        assert await asyncio.to_thread(second.stop) == 0
    assert "database schema is up to date" in "".join(second.log)


def test_invalid_settings_refuse_to_start_listing_every_problem():
    out = subprocess.run(
        [sys.executable, "-m", "vdb_grpc", "serve"],
        env=_env(VDB_DATABASE_URL="postgresql://nobody@127.0.0.1:1/x", VDB_LOG_LEVEL="loud", ENCRYPTION_KEY="short"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "VDB_ADMIN_KEY is required" in out.stderr
    assert "VDB_LOG_LEVEL" in out.stderr and "ENCRYPTION_KEY must be at least 32" in out.stderr


def test_external_database_unreachable_is_a_clear_error():
    out = subprocess.run(
        [sys.executable, "-m", "vdb_grpc", "serve"],
        env=_env(VDB_DATABASE_URL="postgresql://nobody@127.0.0.1:1/x", VDB_ADMIN_KEY="k" * 40),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "cannot connect to the database" in out.stderr and "Traceback" not in out.stderr


async def test_external_database_without_creatable_vector_extension(pg_admin_uri):
    from conftest import with_database

    from vdb_grpc.db import check_database

    admin = await asyncpg.connect(pg_admin_uri)
    try:
        await admin.execute("DROP DATABASE IF EXISTS vdb_novector")
        await admin.execute("DROP ROLE IF EXISTS vdb_weak")
        await admin.execute("CREATE ROLE vdb_weak LOGIN PASSWORD 'weak'")
        await admin.execute("CREATE DATABASE vdb_novector OWNER vdb_weak")
    finally:
        await admin.close()
    uri = with_database(pg_admin_uri, "vdb_novector").replace("postgres:@", "vdb_weak:weak@", 1)
    if "vdb_weak" not in uri:
        pytest.skip("cannot build a URI for another role on this server")
    with pytest.raises(RuntimeError, match="extension 'vector' is not installed in this database"):
        await check_database(uri)
    admin = await asyncpg.connect(pg_admin_uri)
    try:
        await admin.execute("DROP DATABASE vdb_novector WITH (FORCE)")
        await admin.execute("DROP ROLE vdb_weak")
    finally:
        await admin.close()
