"""Concurrency: overlapping uploads never deadlock, allow_missing creates race cleanly, CreateUser is exclusive.

The figures docs/reliability.md quotes come from ``test_sixteen_writers_on_overlapping_text_ids`` (it prints
them; run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from embedding_helpers import World, emb, make_world, server_with
from google.protobuf.field_mask_pb2 import FieldMask
from harness import ADMIN, Harness, bearer
from llm_helpers import definition, instance

from vdb_grpc.domain import retry
from vdb_grpc.v1 import api_standard_pb2 as spb
from vdb_grpc.v1 import embedding_pb2 as pb
from vdb_grpc.v1 import llm_definition_pb2 as dpb
from vdb_grpc.v1 import llm_instance_pb2 as ipb
from vdb_grpc.v1 import project_pb2 as ppb
from vdb_grpc.v1 import user_pb2 as upb

C = grpc.StatusCode
WRITERS, BATCHES, BATCH, POOL_IDS = 16, 30, 50, 300


def _vector(writer: int, batch: int) -> list[float]:
    """A vector that says who wrote it (small integers are exact in float16)."""
    return [float(writer + 1), float(batch + 1), 1.0, -1.0]


async def test_sixteen_writers_on_overlapping_text_ids(db_uri: str, server_settings: Any) -> None:
    """16 writers x 30 batches of 50 text_ids from 300, random order, plus searchers: no ABORTED, no retry
    needed in practice, every text_id holds what one of the batches that contained it wrote, counts exact."""
    async with server_with(db_uri, server_settings, pool_max_size=20) as vdb:
        world = await make_world(vdb)
        rng = random.Random(11)
        plan = [[rng.sample(range(POOL_IDS), BATCH) for _ in range(BATCHES)] for _ in range(WRITERS)]
        md = world.md("eddie")
        results: list[pb.UpsertEmbeddingsResponse] = []
        errors: list[grpc.aio.AioRpcError] = []
        searches = 0
        done = asyncio.Event()

        async def writer(w: int) -> None:
            for b, ids in enumerate(plan[w]):
                items = [emb(f"t{i:03d}", _vector(w, b), metadata={"w": w, "b": b}) for i in ids]
                try:
                    results.append(
                        await vdb.embeddings.UpsertEmbeddings(
                            pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=items),
                            metadata=md,
                        )
                    )
                except grpc.aio.AioRpcError as err:
                    errors.append(err)

        async def searcher() -> None:
            nonlocal searches
            query = pb.SearchSimilarRequest(
                owner="alice", project_handle="proj", vector=pb.QueryVector(values=[1, 1, 1, -1]), limit=10
            )
            while not done.is_set():
                await vdb.embeddings.SearchSimilar(query, metadata=world.md("rita"))
                searches += 1

        retries_before = retry.STATS.retries
        started = time.perf_counter()
        search_tasks = [asyncio.create_task(searcher()) for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(WRITERS))), timeout=120)
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.gather(*search_tasks)
        retries = retry.STATS.retries - retries_before

        assert [e.code() for e in errors] == [], [e.details() for e in errors[:3]]
        assert len(results) == WRITERS * BATCHES
        distinct = {i for batches in plan for ids in batches for i in ids}
        assert sum(r.inserted for r in results) == len(distinct)
        assert sum(r.count for r in results) == WRITERS * BATCHES * BATCH
        assert await world.count() == len(distinct)
        stored = await world.rows()
        writes: dict[str, set[tuple[int, int]]] = {}
        for w in range(WRITERS):
            for b, ids in enumerate(plan[w]):
                for i in ids:
                    writes.setdefault(f"t{i:03d}", set()).add((w, b))
        for text_id, (vector, _text, metadata) in stored.items():
            w, b = metadata["w"], metadata["b"]
            assert (w, b) in writes[text_id], f"{text_id} holds a value no batch containing it wrote"
            assert vector == _vector(w, b), f"{text_id}: vector and metadata come from different batches"
        assert searches > 0
        print(
            f"\n{WRITERS} writers x {BATCHES} batches x {BATCH} ids of {POOL_IDS}: {len(results)} batches OK, "
            f"0 ABORTED, {elapsed:.2f}s, {retries} conflict retries, {searches} searches alongside"
        )


async def test_opposite_orders_never_deadlock(vdb: Harness) -> None:
    """Two writers upload the same 200 ids, one ascending and one descending, 10 times: never an error."""
    world = await make_world(vdb)
    ids = [f"id{i:03d}" for i in range(200)]
    retries_before = retry.STATS.retries

    async def upload(order: list[str], tag: int) -> pb.UpsertEmbeddingsResponse:
        return await vdb.embeddings.UpsertEmbeddings(
            pb.UpsertEmbeddingsRequest(
                owner="alice", project_handle="proj", embeddings=[emb(t, _vector(tag, 0)) for t in order]
            ),
            metadata=world.md("alice"),
        )

    for round_no in range(10):
        a, b = await asyncio.gather(upload(ids, 0), upload(ids[::-1], 1))
        assert a.count == b.count == 200
        if round_no == 0:
            assert {a.inserted, b.inserted} == {0, 200}
    assert await world.count() == 200
    assert retry.STATS.retries == retries_before, "a deadlock happened (and was retried)"


async def test_stream_batches_are_written_in_text_id_order_too(vdb: Harness) -> None:
    """Two streams over the same ids in opposite orders, batches of 100: both commit everything."""
    world = await make_world(vdb)
    ids = [f"s{i:03d}" for i in range(300)]

    async def stream(order: list[str], tag: int) -> pb.StreamUpsertEmbeddingsResponse:
        async def messages() -> Any:
            for k in range(0, len(order), 100):
                yield pb.StreamUpsertEmbeddingsRequest(
                    owner="alice",
                    project_handle="proj",
                    embeddings=[emb(t, _vector(tag, k)) for t in order[k : k + 100]],
                )

        return await vdb.embeddings.StreamUpsertEmbeddings(messages(), metadata=world.md("alice"))

    retries_before = retry.STATS.retries
    for _ in range(5):
        a, b = await asyncio.gather(stream(ids, 0), stream(ids[::-1], 1))
        assert a.count == b.count == 300
    assert await world.count() == 300
    assert retry.STATS.retries == retries_before


async def test_a_deadlock_is_retried_inside_the_service_and_counted_once(
    vdb: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conflict that still happens (here: injected twice) is retried; the client sees one OK with exact counts."""
    from vdb_grpc.queries import embeddings as q

    world = await make_world(vdb)
    real = q.upsert_embeddings
    failures = iter([asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError])

    async def flaky(conn: Any, **kw: Any) -> Any:
        counts = await real(conn, **kw)  # the rows are written, then the transaction is rolled back
        exc = next(failures, None)
        if exc is not None:
            raise exc("injected")
        return counts

    monkeypatch.setattr(q, "upsert_embeddings", flaky)
    before = retry.STATS.retries
    resp = await vdb.embeddings.UpsertEmbeddings(
        pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=[emb("a"), emb("b")]),
        metadata=world.md("alice"),
    )
    assert (resp.inserted, resp.replaced) == (2, 0)
    assert retry.STATS.retries - before == 2
    assert await world.count() == 2


async def test_a_conflict_that_persists_ends_in_aborted_and_stores_nothing(
    vdb: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vdb_grpc.queries import embeddings as q

    world = await make_world(vdb)
    real = q.upsert_embeddings
    calls = 0

    async def always(conn: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        await real(conn, **kw)
        raise asyncpg.exceptions.DeadlockDetectedError("injected")

    monkeypatch.setattr(q, "upsert_embeddings", always)
    monkeypatch.setattr(retry, "BASE_DELAY", 0.001)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vdb.embeddings.UpsertEmbeddings(
            pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=[emb("a")]),
            metadata=world.md("alice"),
        )
    assert info.value.code() == C.ABORTED
    assert calls == retry.MAX_RETRIES + 1
    assert await world.count() == 0


# --- allow_missing races ------------------------------------------------------------------------------------

Racer = Callable[[int], Awaitable[bool]]


async def _race(n: int, call: Racer) -> list[bool]:
    """Run ``call(i)`` n times at once; return each one's ``created``."""
    return list(await asyncio.gather(*(call(i) for i in range(n))))


@pytest.mark.parametrize("kind", ["project", "instance", "definition", "api_standard", "user"])
async def test_concurrent_allow_missing_updates_create_exactly_once(vdb: Harness, kind: str) -> None:
    alice = await vdb.create_user("alice")
    await vdb.instances.CreateInstance(ipb.CreateInstanceRequest(instance=instance("inst")), metadata=bearer(alice))
    md = bearer(alice)

    async def project(i: int) -> bool:
        resp = await vdb.projects.UpdateProject(
            ppb.UpdateProjectRequest(
                project=ppb.Project(project_handle="racy", instance="alice/inst", description=f"d{i}"),
                update_mask=FieldMask(paths=["description"]),
                allow_missing=True,
            ),
            metadata=md,
        )
        return bool(resp.created)

    async def inst(i: int) -> bool:
        resp = await vdb.instances.UpdateInstance(
            ipb.UpdateInstanceRequest(
                instance=instance("racy", description=f"d{i}"),
                update_mask=FieldMask(paths=["description"]),
                allow_missing=True,
            ),
            metadata=md,
        )
        return bool(resp.created)

    async def defn(i: int) -> bool:
        resp = await vdb.definitions.UpdateDefinition(
            dpb.UpdateDefinitionRequest(
                definition=definition("racy", description=f"d{i}"),
                update_mask=FieldMask(paths=["description"]),
                allow_missing=True,
            ),
            metadata=md,
        )
        return bool(resp.created)

    async def standard(i: int) -> bool:
        resp = await vdb.standards.UpdateApiStandard(
            spb.UpdateApiStandardRequest(
                api_standard=spb.ApiStandard(
                    api_standard_handle="racy", description=f"d{i}", key_method="auth_bearer", key_field="x"
                ),
                update_mask=FieldMask(paths=["description"]),
                allow_missing=True,
            ),
            metadata=ADMIN,
        )
        return bool(resp.created)

    keys: list[str] = []

    async def user(i: int) -> bool:
        resp = await vdb.users.UpdateUser(
            upb.UpdateUserRequest(
                user=upb.User(user_handle="racy", name=f"n{i}", email="racy@example.org"),
                update_mask=FieldMask(paths=["name"]),
                allow_missing=True,
            ),
            metadata=ADMIN,
        )
        if resp.api_key:
            keys.append(resp.api_key)
        return bool(resp.created)

    calls: dict[str, Racer] = {
        "project": project,
        "instance": inst,
        "definition": defn,
        "api_standard": standard,
        "user": user,
    }
    created = await _race(16, calls[kind])
    assert Counter(created) == Counter({True: 1, False: 15})
    if kind == "user":
        assert len(keys) == 1  # only the creator is shown the key, and it works
        await vdb.users.GetUser(upb.GetUserRequest(user_handle="racy"), metadata=bearer(keys[0]))


async def test_allow_missing_create_that_loses_to_another_unique_field_still_reports_it(vdb: Harness) -> None:
    """The one retry is for the resource's own key: a user whose email is taken stays ALREADY_EXISTS."""
    await vdb.create_user("alice", email="taken@example.org")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vdb.users.UpdateUser(
            upb.UpdateUserRequest(
                user=upb.User(user_handle="bobby", name="Bob", email="taken@example.org"),
                update_mask=FieldMask(paths=["name"]),
                allow_missing=True,
            ),
            metadata=ADMIN,
        )
    assert info.value.code() == C.ALREADY_EXISTS
    assert "email" in (info.value.details() or "")


async def test_concurrent_create_user_of_one_handle_succeeds_once(vdb: Harness) -> None:
    async def create(i: int) -> grpc.StatusCode:
        try:
            await vdb.users.CreateUser(
                upb.CreateUserRequest(user=upb.User(user_handle="solo", name=f"S{i}", email=f"solo{i}@example.org")),
                metadata=ADMIN,
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
        return C.OK

    codes = await asyncio.gather(*(create(i) for i in range(16)))
    assert Counter(codes) == Counter({C.OK: 1, C.ALREADY_EXISTS: 15})
    assert await vdb.pool.fetchval("SELECT count(*) FROM users WHERE user_handle = 'solo'") == 1


# --- refused calls do not amplify ---------------------------------------------------------------------------


async def test_refused_access_changes_neither_bump_nor_notify(db_uri: str, server_settings: Any) -> None:
    """500 anonymous CreateUser calls (and user-key ones, and invalid ones) → 0 generation bumps, 0 NOTIFYs;
    one successful change → exactly one of each."""
    from llm_helpers import running_server

    from vdb_grpc.cache import CHANNEL

    heard: list[str] = []
    listener = await asyncpg.connect(db_uri)
    await listener.add_listener(CHANNEL, lambda *_: heard.append("n"))
    try:
        async with running_server(db_uri, server_settings, listen_dsn=db_uri) as vdb:
            bob = await vdb.create_user("bobby")
            await asyncio.sleep(0.3)
            heard.clear()
            bad = upb.CreateUserRequest(user=upb.User(user_handle="evil", name="E", email="evil@example.org"))
            refused = 0
            for who in [()] * 500 + [bearer(bob)] * 20 + [bearer("not-a-key")] * 20:
                try:
                    await vdb.users.CreateUser(bad, metadata=who)
                except grpc.aio.AioRpcError:
                    refused += 1
            for _ in range(20):  # refused by validation, as the admin
                with pytest.raises(grpc.aio.AioRpcError):
                    await vdb.users.CreateUser(
                        upb.CreateUserRequest(user=upb.User(user_handle="x", email="nope")), metadata=ADMIN
                    )
            await asyncio.sleep(0.5)
            assert refused == 540
            assert heard == []
            await vdb.users.RotateUserKey(upb.RotateUserKeyRequest(user_handle="bobby"), metadata=ADMIN)
            for _ in range(50):
                if heard:
                    break
                await asyncio.sleep(0.05)
            assert heard == ["n"]
    finally:
        await listener.close()


def test_only_refusals_that_rolled_back_skip_the_bump() -> None:
    from vdb_grpc import errors
    from vdb_grpc.auth import ADMIN as ADMIN_P
    from vdb_grpc.auth import ANONYMOUS, Principal, PrincipalKind
    from vdb_grpc.interceptors import _may_have_changed

    user = Principal(PrincipalKind.USER, "alice")
    refusal = errors.PermissionDenied("no")
    assert not _may_have_changed(refusal, ANONYMOUS, True, False)
    assert not _may_have_changed(refusal, ADMIN_P, True, False)
    # a request stream may have committed messages before it was refused
    assert _may_have_changed(refusal, user, True, True)
    assert not _may_have_changed(refusal, user, False, True)  # refused at authentication
    assert not _may_have_changed(refusal, ANONYMOUS, True, True)
    # an unexpected failure or a lost connection: the outcome is unknown
    assert _may_have_changed(RuntimeError("bug"), user, True, False)
    assert _may_have_changed(OSError("gone"), ADMIN_P, True, False)


# --- re-upload without metadata in a project with a schema --------------------------------------------------


async def test_reupload_without_metadata_keeps_the_stored_metadata_in_a_schema_project(vdb: Harness) -> None:
    world = await make_world(vdb)
    md = world.md("alice")

    def request(*items: pb.Embedding) -> pb.UpsertEmbeddingsRequest:
        return pb.UpsertEmbeddingsRequest(owner="alice", project_handle="schema", embeddings=list(items))

    first = emb("doc1", metadata={"year": 1781})
    await vdb.embeddings.UpsertEmbeddings(request(first), metadata=md)
    resp = await vdb.embeddings.UpsertEmbeddings(request(emb("doc1", (1, 2, 3, 4))), metadata=md)
    assert (resp.inserted, resp.replaced) == (0, 1)
    vector, _text, metadata = (await world.rows("schema"))["doc1"]
    assert (vector, metadata) == ([1, 2, 3, 4], {"year": 1781})

    # a new text_id without metadata is still refused (the schema requires "year"), also next to a re-upload,
    # and nothing of that batch is stored
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vdb.embeddings.UpsertEmbeddings(request(emb("doc1", (4, 3, 2, 1)), emb("doc2")), metadata=md)
    assert info.value.code() == C.INVALID_ARGUMENT
    assert "embeddings[1]" in (info.value.details() or "") and "doc2" in (info.value.details() or "")
    assert (await world.rows("schema"))["doc1"][0] == [1, 2, 3, 4]
    assert "doc2" not in await world.rows("schema")

    # in a stream too: the failing batch is refused, the earlier one stays
    async def messages() -> Any:
        yield pb.StreamUpsertEmbeddingsRequest(
            owner="alice", project_handle="schema", embeddings=[emb("doc1", (2, 2, 2, 2))]
        )
        yield pb.StreamUpsertEmbeddingsRequest(embeddings=[emb("doc3")])

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vdb.embeddings.StreamUpsertEmbeddings(messages(), metadata=md)
    assert info.value.code() == C.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("batch 1:")
    stored = await world.rows("schema")
    assert stored["doc1"][0] == [2, 2, 2, 2] and stored["doc1"][2] == {"year": 1781}
    assert "doc3" not in stored


# --- an open stream is authorized again for every batch -----------------------------------------------------


async def _stream_with_pause(
    world: World, who: str, between: Callable[[], Awaitable[None]]
) -> tuple[grpc.aio.AioRpcError | None, list[str]]:
    """Stream batch 0 as ``who``, wait until it is committed, run ``between``, then send batch 1."""
    vdb = world.vdb
    committed = asyncio.Event()

    async def messages() -> Any:
        yield pb.StreamUpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=[emb("first")])
        await committed.wait()
        yield pb.StreamUpsertEmbeddingsRequest(embeddings=[emb("second")])

    call = vdb.embeddings.StreamUpsertEmbeddings(messages(), metadata=world.md(who))
    for _ in range(200):
        if await world.count() == 1:
            break
        await asyncio.sleep(0.02)
    await between()
    committed.set()
    error = None
    try:
        await call
    except grpc.aio.AioRpcError as err:
        error = err
    return error, sorted((await world.rows()).keys())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("rotate_key", C.UNAUTHENTICATED),
        ("delete_user", C.UNAUTHENTICATED),
        ("unshare_project", C.PERMISSION_DENIED),
        ("make_reader", C.PERMISSION_DENIED),
    ],
)
async def test_an_open_stream_stops_when_access_is_withdrawn(vdb: Harness, change: str, code: grpc.StatusCode) -> None:
    from vdb_grpc.v1 import common_pb2

    world = await make_world(vdb)
    alice = world.md("alice")

    async def withdraw() -> None:
        if change == "rotate_key":
            await vdb.users.RotateUserKey(upb.RotateUserKeyRequest(user_handle="eddie"), metadata=ADMIN)
        elif change == "delete_user":
            await vdb.users.DeleteUser(upb.DeleteUserRequest(user_handle="eddie"), metadata=ADMIN)
        elif change == "unshare_project":
            await vdb.projects.UnshareProject(
                ppb.UnshareProjectRequest(owner="alice", project_handle="proj", user_handle="eddie"), metadata=alice
            )
        else:
            await vdb.projects.ShareProject(
                ppb.ShareProjectRequest(
                    owner="alice", project_handle="proj", share=common_pb2.Share(user_handle="eddie", role="reader")
                ),
                metadata=alice,
            )

    error, stored = await _stream_with_pause(world, "eddie", withdraw)
    assert error is not None and error.code() == code, error
    assert (error.details() or "").startswith("batch 1:")
    assert stored == ["first"]  # prefix-commit: batch 0 stays


async def test_an_open_stream_goes_on_when_nothing_changed(vdb: Harness) -> None:
    world = await make_world(vdb)

    async def nothing() -> None:
        await vdb.users.RotateUserKey(upb.RotateUserKeyRequest(user_handle="rita"), metadata=ADMIN)  # someone else

    error, stored = await _stream_with_pause(world, "eddie", nothing)
    assert error is None
    assert stored == ["first", "second"]


def test_vectors_in_this_module_are_exact_in_float16() -> None:
    import numpy as np

    for w in range(WRITERS):
        for b in range(BATCHES):
            v = np.array(_vector(w, b), dtype=np.float32)
            assert (v.astype(np.float16).astype(np.float32) == v).all()
