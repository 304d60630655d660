"""StreamUpsertEmbeddings over real gRPC: per-batch commits, the failing batch's error and what stays committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pytest
from embedding_helpers import World, emb, error_info, make_world, server_with
from harness import ADMIN, Harness, bearer, field_violations, rpc_error

from vdb_grpc.v1 import embedding_pb2 as pb

C = grpc.StatusCode


@pytest.fixture
async def world(vdb: Harness) -> World:
    return await make_world(vdb)


def message(items: list[pb.Embedding], owner: str = "", project: str = "") -> pb.StreamUpsertEmbeddingsRequest:
    return pb.StreamUpsertEmbeddingsRequest(owner=owner, project_handle=project, embeddings=items)


def batches(n: int, size: int, prefix: str = "b") -> list[list[pb.Embedding]]:
    return [[emb(f"{prefix}{k}-{i}", (k + 1, i + 1, 0, 1)) for i in range(size)] for k in range(n)]


def stream(world: World, messages: Iterable[pb.StreamUpsertEmbeddingsRequest], who: str = "alice") -> Any:
    return world.vdb.embeddings.StreamUpsertEmbeddings(iter(list(messages)), metadata=world.md(who))


async def test_stream_commits_every_batch_and_counts(world: World) -> None:
    data = batches(4, 25)
    messages = [message(data[0], "alice", "proj")] + [message(b) for b in data[1:]]
    resp = await stream(world, messages)
    assert (resp.batches, resp.count, resp.inserted, resp.replaced) == (4, 100, 100, 0)
    assert await world.count() == 100

    # again, with the project named in every message and one batch replacing: counted as replaced
    again = [message(data[0], "alice", "proj"), message([emb("new", (1, 2, 3, 4))], "alice", "proj")]
    resp = await stream(world, again)
    assert (resp.batches, resp.count, resp.inserted, resp.replaced) == (2, 26, 1, 25)


async def test_owner_defaults_to_the_caller(world: World) -> None:
    resp = await stream(world, [message(batches(1, 3)[0], project="proj")], who="alice")
    assert resp.count == 3


async def test_bad_batch_ends_the_stream_and_earlier_batches_stay(world: World) -> None:
    data = batches(5, 10)
    data[2][7] = emb("b2-7", (1, 2, 3))  # wrong dimensions in batch 2, item 7
    messages = [message(data[0], "alice", "proj")] + [message(b) for b in data[1:]]
    err = await rpc_error(stream(world, messages), C.INVALID_ARGUMENT)
    assert err.details().startswith("batch 2: embeddings[7] (text_id 'b2-7'): vector has 3 values")
    assert "batches 0-1 (20 embeddings) were committed, batch 2 and any later ones were not" in err.details()
    assert field_violations(err)[0][0] == "embeddings[7].vector"
    assert error_info(err) == {
        "reason": "STREAM_BATCH_FAILED",
        "failed_batch": "2",
        "committed_batches": "2",
        "committed_embeddings": "20",
        "committed_inserted": "20",
        "committed_replaced": "0",
    }
    stored = set(await world.rows())
    assert stored == {f"b{k}-{i}" for k in (0, 1) for i in range(10)}


async def test_first_batch_failing_commits_nothing(world: World) -> None:
    err = await rpc_error(
        stream(world, [message([emb("a"), emb("a")], "alice", "proj"), message([emb("b")])]), C.INVALID_ARGUMENT
    )
    assert err.details().startswith("batch 0: embeddings[1] (text_id 'a'): text_id occurs more than once")
    assert "nothing was committed" in err.details()
    assert error_info(err)["committed_batches"] == "0"
    assert await world.count() == 0


async def test_a_later_message_may_not_switch_projects(world: World) -> None:
    messages = [message([emb("a")], "alice", "proj"), message([emb("b")], "alice", "pub")]
    err = await rpc_error(stream(world, messages), C.INVALID_ARGUMENT)
    assert err.details().startswith("batch 1: project_handle: must be empty or the same as in the first message")
    assert set(await world.rows()) == {"a"} and await world.count("pub") == 0


async def test_batch_item_limit_applies_per_message(world: World, db_uri: str, server_settings: Any) -> None:
    async with server_with(db_uri, server_settings, max_batch_items=5) as small:
        w = World(small, world.keys, world.project_ids)
        data = batches(3, 5)
        data[1].append(emb("sixth"))
        messages = [message(data[0], "alice", "proj"), message(data[1]), message(data[2])]
        err = await rpc_error(stream(w, messages), C.INVALID_ARGUMENT)
        assert err.details().startswith("batch 1: embeddings: 6 items exceed the limit of 5")
        assert "VDB_MAX_BATCH_ITEMS" in err.details()
    assert await world.count() == 5


@pytest.mark.parametrize(("who", "code"), [("rita", C.PERMISSION_DENIED), ("anon", C.UNAUTHENTICATED)])
async def test_readers_and_anonymous_callers_cannot_stream(world: World, who: str, code: grpc.StatusCode) -> None:
    err = await rpc_error(stream(world, [message([emb("a")], "alice", "pub")], who=who), code)
    assert err.details().startswith("batch 0:")
    assert await world.count("pub") == 0


async def test_project_without_instance(world: World) -> None:
    err = await rpc_error(stream(world, [message([emb("a")], "alice", "orphan")]), C.FAILED_PRECONDITION)
    assert err.details().startswith("batch 0: project has no instance")


async def test_empty_stream_and_empty_batches(world: World) -> None:
    resp = await stream(world, [])
    assert (resp.batches, resp.count) == (0, 0)
    resp = await stream(world, [message([], "alice", "proj"), message([emb("x")])])
    assert (resp.batches, resp.count) == (2, 1)


async def test_batches_are_committed_as_they_arrive(world: World) -> None:
    """A slow client: each batch is visible in the database before the client sends the next one."""
    seen: list[int] = []
    data = batches(3, 4)

    async def slow() -> AsyncIterator[pb.StreamUpsertEmbeddingsRequest]:
        for k, b in enumerate(data):
            if k:
                for _ in range(100):  # wait until the previous batch is committed
                    if await world.count() == 4 * k:
                        break
                    await asyncio.sleep(0.02)
                seen.append(await world.count())
            yield message(b, "alice", "proj") if k == 0 else message(b)

    resp = await world.vdb.embeddings.StreamUpsertEmbeddings(slow(), metadata=world.md("alice"))
    assert resp.count == 12 and seen == [4, 8]


async def test_admin_streams_into_any_project(vdb: Harness, world: World) -> None:
    resp = await vdb.embeddings.StreamUpsertEmbeddings(iter([message([emb("adm")], "alice", "proj")]), metadata=ADMIN)
    assert resp.count == 1
    resp = await vdb.embeddings.StreamUpsertEmbeddings(
        iter([message([emb("ed")], "alice", "proj")]), metadata=bearer(world.keys["eddie"])
    )
    assert resp.count == 1
    assert set(await world.rows()) == {"adm", "ed"}


async def test_a_batch_failing_while_the_next_is_written_takes_the_next_down_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are committed in order, and a batch takes its first lock only once the previous one has written
    its rows (so no wait cycle can run through the stream, see ``Embeddings._commit_once``): when batch 1 fails
    in the database while writing, batch 2 has not been written (it waited), is never committed, and only
    batch 0 stays."""
    import vdb_grpc.domain.embeddings as domain
    from vdb_grpc.errors import FailedPrecondition

    real = domain.q.upsert_embeddings
    written: list[str] = []

    async def flaky(conn: Any, **kw: Any) -> Any:
        first = kw["text_ids"][0]
        if first.startswith("b1-"):
            await asyncio.sleep(0.3)  # batch 2 would have been written meanwhile, were it not waiting
            raise FailedPrecondition("simulated failure while writing")
        counts = await real(conn, **kw)
        written.append(first)
        return counts

    monkeypatch.setattr(domain.q, "upsert_embeddings", flaky)
    data = batches(3, 5)
    err = await rpc_error(
        stream(world, [message(data[0], "alice", "proj"), message(data[1]), message(data[2])]), C.FAILED_PRECONDITION
    )
    assert err.details() == (
        "batch 1: simulated failure while writing; batch 0 (5 embeddings) was committed, batch 1 and any later ones"
        " were not"
    )
    assert written == ["b0-0"]  # batch 2 waited for batch 1's rows …
    assert set(await world.rows()) == {f"b0-{i}" for i in range(5)}  # … and is not stored
