"""The authorization cache (vdb_grpc.cache): changes through a server apply to its very next request; a change
made through another replica applies there after at most VDB_AUTH_CACHE_SECONDS."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, ANON, bearer, rpc_error
from llm_helpers import running_server
from search_fixtures import add_embeddings, make_project, make_user, share

from vdb_grpc.auth import hash_api_key
from vdb_grpc.cache import CoherentCache, Generation, mutates_access
from vdb_grpc.v1 import admin_pb2, embedding_pb2, project_pb2, user_pb2

C = grpc.StatusCode

# ----------------------------------------------------------------------------------------------- the cache


def test_entry_lives_until_ttl_or_generation_change() -> None:
    gen = Generation()
    cache: CoherentCache[str, int] = CoherentCache(gen, ttl_seconds=0.2)
    cache.put("a", 1, cache.begin())
    assert cache.get("a") == 1
    gen.bump()
    assert cache.get("a") is None  # any change through this process drops everything
    cache.put("a", 2, cache.begin())
    time.sleep(0.25)
    assert cache.get("a") is None  # expired


def test_lookup_in_flight_during_a_change_is_not_cached() -> None:
    gen = Generation()
    cache: CoherentCache[str, int] = CoherentCache(gen, ttl_seconds=60)
    token = cache.begin()  # lookup starts (reads the old state) ...
    gen.bump()  # ... a change commits and the RPC that made it ends ...
    cache.put("a", 1, token)  # ... the stale answer arrives: not kept
    assert cache.get("a") is None


def test_zero_ttl_caches_nothing_and_size_is_bounded() -> None:
    gen = Generation()
    off: CoherentCache[str, int] = CoherentCache(gen, ttl_seconds=0)
    off.put("a", 1, off.begin())
    assert off.get("a") is None
    small: CoherentCache[int, int] = CoherentCache(gen, ttl_seconds=60, max_entries=3)
    for i in range(10):
        small.put(i, i, small.begin())
    assert len(small._entries) <= 3 and small.get(9) == 9


@pytest.mark.parametrize(
    ("method", "mutates"),
    [
        ("/vdb_grpc.v1.UserService/RotateUserKey", True),
        ("/vdb_grpc.v1.UserService/DeleteUser", True),
        ("/vdb_grpc.v1.UserService/UpdateUser", True),
        ("/vdb_grpc.v1.ProjectService/UpdateProject", True),
        ("/vdb_grpc.v1.ProjectService/UnshareProject", True),
        ("/vdb_grpc.v1.ProjectService/TransferProject", True),
        ("/vdb_grpc.v1.LlmInstanceService/UpdateInstance", True),
        ("/vdb_grpc.v1.AdminService/ResetDatabase", True),
        ("/vdb_grpc.v1.UserService/GetUser", False),
        ("/vdb_grpc.v1.ProjectService/ListProjects", False),
        ("/vdb_grpc.v1.EmbeddingService/SearchSimilar", False),
        ("/vdb_grpc.v1.EmbeddingService/UpsertEmbeddings", False),
        ("/vdb_grpc.v1.EmbeddingService/DeleteAllEmbeddings", False),
        ("/vdb_grpc.v1.AdminService/SanityCheck", False),
    ],
)
def test_which_rpcs_invalidate(method: str, mutates: bool) -> None:
    assert mutates_access(method) is mutates


# ------------------------------------------------------------------------------------- over real gRPC


@pytest.fixture
def server_settings(server_settings, request):  # type: ignore[no-untyped-def]
    """A TTL far longer than any test: whatever is refused below is refused by invalidation, not expiry."""
    if request.node.get_closest_marker("auth_cache_off"):
        return server_settings
    return server_settings.replace(auth_cache_seconds=60.0)


def search(owner: str = "alice", handle: str = "docs") -> embedding_pb2.SearchSimilarRequest:
    return embedding_pb2.SearchSimilarRequest(
        owner=owner, project_handle=handle, vector=embedding_pb2.QueryVector(values=[1, 0, 0, 0]), threshold=-1
    )


@pytest.fixture
async def world(vdb):  # type: ignore[no-untyped-def]
    """alice owns alice/docs (4 dims, 3 rows, public_read) and shared it with bob as reader."""
    async with vdb.pool.acquire() as conn:
        vdb.keys = {u: await make_user(conn, u) for u in ("alice", "bob")}
        pid = await make_project(conn, "alice", "docs", 4, public_read=True)
        await share(conn, pid, "bob", "reader")
        await add_embeddings(conn, pid, "alice", [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], ids=["a", "b", "c"])
    return vdb


async def test_rotated_key_is_refused_at_once(world) -> None:  # type: ignore[no-untyped-def]
    old = world.keys["alice"]
    await world.embeddings.SearchSimilar(search(), metadata=bearer(old))  # key and permission now cached
    new = (await world.users.RotateUserKey(user_pb2.RotateUserKeyRequest(user_handle="alice"), metadata=ADMIN)).api_key
    await rpc_error(world.embeddings.SearchSimilar(search(), metadata=bearer(old)), C.UNAUTHENTICATED)
    assert len((await world.embeddings.SearchSimilar(search(), metadata=bearer(new))).results) == 3


async def test_deleted_user_is_refused_at_once(world) -> None:  # type: ignore[no-untyped-def]
    key = world.keys["bob"]
    await world.embeddings.SearchSimilar(search(), metadata=bearer(key))
    await world.users.DeleteUser(user_pb2.DeleteUserRequest(user_handle="bob"), metadata=ADMIN)
    await rpc_error(world.embeddings.SearchSimilar(search(), metadata=bearer(key)), C.UNAUTHENTICATED)


async def test_unshared_reader_and_anonymous_after_private_are_refused_at_once(world) -> None:  # type: ignore[no-untyped-def]
    alice, bob = bearer(world.keys["alice"]), bearer(world.keys["bob"])
    await world.embeddings.SearchSimilar(search(), metadata=bob)
    await world.embeddings.SearchSimilar(search(), metadata=ANON)
    await world.projects.UnshareProject(
        project_pb2.UnshareProjectRequest(project_handle="docs", user_handle="bob"), metadata=alice
    )
    # still public_read: bob now reads as "anyone"; make it private and both lose access
    await world.embeddings.SearchSimilar(search(), metadata=bob)
    private = project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(project_handle="docs", public_read=False),
        update_mask=FieldMask(paths=["public_read"]),
    )
    await world.projects.UpdateProject(private, metadata=alice)
    await rpc_error(world.embeddings.SearchSimilar(search(), metadata=bob), C.PERMISSION_DENIED)
    await rpc_error(world.embeddings.SearchSimilar(search(), metadata=ANON), C.UNAUTHENTICATED)


@pytest.mark.allow_reset
async def test_reset_database_forgets_every_key(world) -> None:  # type: ignore[no-untyped-def]
    key = world.keys["alice"]
    await world.embeddings.SearchSimilar(search(), metadata=bearer(key))
    await world.admin.ResetDatabase(admin_pb2.ResetDatabaseRequest(confirm="RESET"), metadata=ADMIN)
    await rpc_error(world.embeddings.SearchSimilar(search(), metadata=bearer(key)), C.UNAUTHENTICATED)


async def test_change_through_another_replica_applies_within_the_ttl(world, db_uri, server_settings) -> None:  # type: ignore[no-untyped-def]
    ttl = 0.5
    async with (
        running_server(db_uri, server_settings.replace(auth_cache_seconds=ttl)) as a,
        running_server(db_uri, server_settings.replace(auth_cache_seconds=ttl)) as b,
    ):
        old = world.keys["alice"]
        await a.embeddings.SearchSimilar(search(), metadata=bearer(old))  # replica a caches alice's key
        await b.users.RotateUserKey(user_pb2.RotateUserKeyRequest(user_handle="alice"), metadata=bearer(old))
        await rpc_error(b.embeddings.SearchSimilar(search(), metadata=bearer(old)), C.UNAUTHENTICATED)
        # replica a has not heard of it: it honours the old key from its cache until the entry expires ...
        await a.embeddings.SearchSimilar(search(), metadata=bearer(old))
        await asyncio.sleep(ttl + 0.1)
        # ... and never longer
        await rpc_error(a.embeddings.SearchSimilar(search(), metadata=bearer(old)), C.UNAUTHENTICATED)


@pytest.mark.auth_cache_off
async def test_cache_off_sees_changes_made_behind_its_back(vdb) -> None:  # type: ignore[no-untyped-def]
    async with vdb.pool.acquire() as conn:
        key = await make_user(conn, "alice")
        await make_project(conn, "alice", "docs", 4)
    await vdb.embeddings.SearchSimilar(search(), metadata=bearer(key))
    async with vdb.pool.acquire() as conn:
        await conn.execute("UPDATE users SET vdb_api_key = 'x' WHERE user_handle = 'alice'")
    await rpc_error(vdb.embeddings.SearchSimilar(search(), metadata=bearer(key)), C.UNAUTHENTICATED)


async def test_no_call_started_after_a_rotation_gets_in_with_the_old_key(world) -> None:  # type: ignore[no-untyped-def]
    """Eight callers hammer SearchSimilar with alice's key while she rotates it: every call that started after
    RotateUserKey returned is refused, although the key was being served from the cache until then."""
    old = bearer(world.keys["alice"])
    stop = asyncio.Event()
    calls: list[tuple[float, bool]] = []

    async def hammer() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await world.embeddings.SearchSimilar(search(), metadata=old)
                calls.append((started, True))
            except grpc.aio.AioRpcError as err:
                assert err.code() == C.UNAUTHENTICATED, err
                calls.append((started, False))

    tasks = [asyncio.create_task(hammer()) for _ in range(8)]
    await asyncio.sleep(0.3)
    await world.users.RotateUserKey(user_pb2.RotateUserKeyRequest(user_handle="alice"), metadata=old)
    rotated = time.monotonic()
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    before = [ok for started, ok in calls if started < rotated]
    after = [ok for started, ok in calls if started > rotated]
    assert before and all(before[:5]) and after, (len(before), len(after))
    assert not any(after), f"{sum(after)} of {len(after)} calls after the rotation got in with the old key"


async def refused_within(call, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    """Whether ``call()`` turns UNAUTHENTICATED within ``seconds`` (polled; the TTL in these tests is 60 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await call()
        except grpc.aio.AioRpcError as err:
            assert err.code() == C.UNAUTHENTICATED, err
            return True
        await asyncio.sleep(0.02)
    return False


async def test_replicas_hear_each_others_changes_through_notify(world, db_uri, server_settings) -> None:  # type: ignore[no-untyped-def]
    """With the listening connection `vdb-grpc serve` opens, a change through one replica reaches the other's
    cache at once (polled for up to 5 s; the TTL here is 60 s, so only the notification can explain it)."""
    async with (
        running_server(db_uri, server_settings, listen_dsn=db_uri) as a,
        running_server(db_uri, server_settings, listen_dsn=db_uri) as b,
    ):
        alice, bob = world.keys["alice"], world.keys["bob"]
        await a.embeddings.SearchSimilar(search(), metadata=bearer(alice))  # a caches key and permission
        await a.embeddings.SearchSimilar(search("alice", "docs"), metadata=bearer(bob))
        await b.users.RotateUserKey(user_pb2.RotateUserKeyRequest(user_handle="alice"), metadata=ADMIN)
        assert await refused_within(lambda: a.embeddings.SearchSimilar(search(), metadata=bearer(alice)), 5)
        # the listener survives losing its connection: it reconnects and keeps hearing changes
        async with a.pool.acquire() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'vdb-grpc-listen' AND datname = current_database()"
            )
        assert killed == 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # both listeners back (they retry after 0.5 s)
            async with a.pool.acquire() as conn:
                listening = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'vdb-grpc-listen' AND datname = current_database()"
                )
            if listening == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # LISTEN is issued right after connecting
        await a.embeddings.SearchSimilar(search(), metadata=bearer(bob))  # cached again after the reconnect
        await b.users.DeleteUser(user_pb2.DeleteUserRequest(user_handle="bob"), metadata=ADMIN)
        assert await refused_within(lambda: a.embeddings.SearchSimilar(search(), metadata=bearer(bob)), 5)


async def test_refusals_are_not_cached(world) -> None:  # type: ignore[no-untyped-def]
    """A refused key or permission is asked of the database again: granting it behind the server's back (as
    another tool would, with no notification) takes effect on the next call despite the 60 s TTL."""
    async with world.pool.acquire() as conn:
        carol = await make_user(conn, "carol")
        pid = await make_project(conn, "alice", "secret", 4)  # private
        await add_embeddings(conn, pid, "alice", [[1, 0, 0, 0], [0, 1, 0, 0]], ids=["a", "b"])
    secret = search("alice", "secret")
    await rpc_error(world.embeddings.SearchSimilar(secret, metadata=bearer(carol)), C.PERMISSION_DENIED)
    late = "late-key-0123456789abcdef0123456789abcdef"
    await rpc_error(world.embeddings.SearchSimilar(secret, metadata=bearer(late)), C.UNAUTHENTICATED)
    async with world.pool.acquire() as conn:
        await share(conn, pid, "carol", "reader")
    assert len((await world.embeddings.SearchSimilar(secret, metadata=bearer(carol))).results) == 2
    async with world.pool.acquire() as conn:
        await conn.execute("UPDATE users SET vdb_api_key = $1 WHERE user_handle = 'carol'", hash_api_key(late))
    assert len((await world.embeddings.SearchSimilar(secret, metadata=bearer(late))).results) == 2
