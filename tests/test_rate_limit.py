"""Per-caller token buckets: refusals with RetryInfo, per-user and per-peer buckets, bounded memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from harness import ADMIN, ANON, bearer, rpc_error
from search_fixtures import make_user

from vdb_grpc.auth import ADMIN as ADMIN_PRINCIPAL
from vdb_grpc.auth import ANONYMOUS, Principal, PrincipalKind
from vdb_grpc.db import create_pool
from vdb_grpc.errors import ResourceExhausted
from vdb_grpc.interceptors import rich_status
from vdb_grpc.runtime.ratelimit import RateLimiter, peer_address
from vdb_grpc.server import VdbServer, build_server
from vdb_grpc.settings import Settings, SettingsError
from vdb_grpc.v1 import project_pb2, project_pb2_grpc, user_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def user(handle: str) -> Principal:
    return Principal(PrincipalKind.USER, handle)


def test_bucket_refuses_beyond_the_burst_and_says_when_to_retry() -> None:
    clock = Clock()
    refused: list[str] = []
    limiter = RateLimiter(2.0, 3, clock=clock, on_refusal=refused.append)
    for _ in range(3):
        limiter.admit(user("alice"), "ipv4:10.0.0.1:1")
    with pytest.raises(ResourceExhausted) as info:
        limiter.admit(user("alice"), "ipv4:10.0.0.1:1")
    assert info.value.retry_after_seconds == pytest.approx(0.5)
    assert info.value.info is not None and info.value.info.reason == "RATE_LIMITED"
    assert refused == ["user"]
    limiter.admit(user("bob"), "ipv4:10.0.0.1:1")  # another user has their own bucket
    clock.now += 0.5  # one token back
    limiter.admit(user("alice"), "ipv4:10.0.0.9:1")  # the user's bucket, whatever the address
    with pytest.raises(ResourceExhausted):
        limiter.admit(user("alice"), "ipv4:10.0.0.1:1")


def test_anonymous_callers_share_a_bucket_per_address_and_admin_is_not_limited() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1, clock=clock)
    limiter.admit(ANONYMOUS, "ipv4:10.0.0.1:5000")
    with pytest.raises(ResourceExhausted):
        limiter.admit(ANONYMOUS, "ipv4:10.0.0.1:5001")  # same host, another connection
    limiter.admit(ANONYMOUS, "ipv4:10.0.0.2:5000")
    limiter.admit(ANONYMOUS, "ipv6:[::1]:5000")
    for _ in range(50):
        limiter.admit(ADMIN_PRINCIPAL, "ipv4:10.0.0.1:5000")


def test_default_burst_is_one_second_of_rate() -> None:
    assert RateLimiter(0.5).burst == 1 and RateLimiter(10).burst == 10 and RateLimiter(2.5).burst == 3


def test_memory_is_bounded_and_idle_buckets_are_dropped() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 10, clock=clock, max_buckets=100)
    for i in range(1000):
        limiter.admit(ANONYMOUS, f"ipv4:10.0.{i // 256}.{i % 256}:1")
    assert limiter.bucket_count <= 100
    clock.now += 2  # every bucket is full again after 1 s: all idle
    limiter.admit(user("alice"), "")
    assert limiter.bucket_count == 1


def test_peer_address() -> None:
    assert peer_address("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert peer_address("ipv6:[2001:db8::1]:443") == "2001:db8::1"
    assert peer_address("unix:/tmp/sock") == "unix:/tmp/sock"


def test_retry_info_in_the_rich_status() -> None:
    err = ResourceExhausted("slow down", retry_after_seconds=1.25)
    status = rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, err)
    infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(infos) == 1
    retry = error_details_pb2.RetryInfo()
    infos[0].Unpack(retry)
    assert retry.retry_delay.seconds == 1 and retry.retry_delay.nanos == 250_000_000
    plain = rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted("too big"))
    assert not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in plain.details)


def test_settings() -> None:
    s = Settings.from_env({"VDB_RATE_LIMIT_RPS": "5", "VDB_RATE_LIMIT_BURST": "20"})
    assert s.rate_limit_rps == 5 and s.rate_limit_burst == 20
    assert Settings.from_env({}).rate_limit_rps == 0
    for env in ({"VDB_RATE_LIMIT_RPS": "-1"}, {"VDB_RATE_LIMIT_RPS": "x"}, {"VDB_RATE_LIMIT_BURST": "3"}):
        with pytest.raises(SettingsError):
            Settings.from_env(env)


@pytest.fixture
async def limited(db_uri: str, server_settings) -> AsyncIterator[tuple[VdbServer, grpc.aio.Channel, str]]:  # type: ignore[no-untyped-def]
    settings = server_settings.replace(rate_limit_rps=0.5, rate_limit_burst=2, metrics_listen="127.0.0.1:0")
    pool = await create_pool(db_uri, settings)
    async with pool.acquire() as conn:
        key = await make_user(conn, "alice")
        await make_user(conn, "bob")
    server = build_server(settings, pool)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, channel, key
    finally:
        await channel.close()
        await server.stop(None)
        await pool.close()


def retry_delay(err: grpc.aio.AioRpcError) -> float:
    for k, v in err.trailing_metadata() or ():
        if k == "grpc-status-details-bin":
            for d in status_pb2.Status.FromString(v).details:
                if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    d.Unpack(info)
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError("no RetryInfo")


async def test_server_refuses_with_resource_exhausted_and_retry_info(limited) -> None:  # type: ignore[no-untyped-def]
    server, channel, key = limited
    projects = project_pb2_grpc.ProjectServiceStub(channel)
    req = project_pb2.ListProjectsRequest()
    for _ in range(2):
        await projects.ListProjects(req, metadata=bearer(key))
    err = await rpc_error(projects.ListProjects(req, metadata=bearer(key)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "rate limit" in (err.details() or "")
    assert 0 < retry_delay(err) <= 2.0
    # Anonymous callers on this address have their own bucket; the admin key is never limited.
    await rpc_error(projects.ListProjects(req, metadata=ANON), grpc.StatusCode.UNAUTHENTICATED)
    await rpc_error(projects.ListProjects(req, metadata=ANON), grpc.StatusCode.UNAUTHENTICATED)
    await rpc_error(projects.ListProjects(req, metadata=ANON), grpc.StatusCode.RESOURCE_EXHAUSTED)
    # Invalid keys count against the address too (no guessing at full speed).
    await rpc_error(projects.ListProjects(req, metadata=bearer("x" * 64)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    from vdb_grpc.v1 import user_pb2_grpc

    users = user_pb2_grpc.UserServiceStub(channel)
    for _ in range(5):
        await users.ListUsers(user_pb2.ListUsersRequest(), metadata=ADMIN)
    # Health checks stay outside the limit (a load balancer probes often).
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(5):
        await health.Check(health_pb2.HealthCheckRequest())
    assert server.metrics is not None
    reg = server.metrics.registry
    assert reg.get_sample_value("vdb_rate_limited_total", {"caller": "user"}) == 1
    assert reg.get_sample_value("vdb_rate_limited_total", {"caller": "anonymous"}) == 2
