"""The server's indexer waits while uploads arrive (``UploadAwareIndexer``), and uploads tell it so."""

from __future__ import annotations

import numpy as np
import pytest
from embedding_helpers import World, emb, make_world
from harness import Harness

from vdb_grpc.auth import ADMIN
from vdb_grpc.domain.embeddings import Embeddings, UploadBatch
from vdb_grpc.errors import InvalidArgument
from vdb_grpc.upload_pacing import UploadAwareIndexer
from vdb_grpc.v1 import embedding_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_defers_while_uploads_arrive_but_not_forever() -> None:
    clock = Clock()
    indexer = UploadAwareIndexer(None, quiet_seconds=2, max_deferral_seconds=10, clock=clock)  # type: ignore[arg-type]
    assert not indexer.deferring()  # no upload yet
    indexer.note_upload()
    clock.now += 1
    assert indexer.deferring()
    clock.now += 1.5  # 2.5 s of quiet
    assert not indexer.deferring()

    # a steady stream of uploads, one per second: deferred for 10 s, then one pass, then deferred again
    decisions = []
    for _ in range(14):
        indexer.note_upload()
        clock.now += 1
        decisions.append(indexer.deferring())
    assert decisions == [True] * 10 + [False] + [True] * 3


async def test_a_deferred_pass_touches_nothing() -> None:
    """... unless a quick pass is due (tests/test_stream_segments.py), which never is here."""
    clock = Clock()
    indexer = UploadAwareIndexer(None, clock=clock, quick_interval=float("inf"))  # type: ignore[arg-type]
    indexer.note_upload()
    assert await indexer.run_once() is True  # a pass would have needed the pool


@pytest.fixture
async def world(vdb: Harness) -> World:
    return await make_world(vdb)


async def test_run_until_idle_does_not_defer(world: World) -> None:
    await world.vdb.embeddings.UpsertEmbeddings(
        pb.UpsertEmbeddingsRequest(owner="alice", project_handle="proj", embeddings=[emb(f"t{i}") for i in range(5)]),
        metadata=world.md("alice"),
    )
    indexer = UploadAwareIndexer(world.vdb.pool, quiet_seconds=3600)
    indexer.note_upload()
    assert await indexer.run_once() is True  # deferred
    await indexer.run_until_idle()
    assert set((await world.indexed()).values()) == {True}


async def test_committed_uploads_call_on_commit_and_refused_ones_do_not(world: World) -> None:
    calls: list[int] = []
    embeddings = Embeddings(world.vdb.pool, max_batch_items=10, on_commit=lambda: calls.append(1))

    def batch(*vectors: tuple[float, ...]) -> UploadBatch:
        n = len(vectors)
        return UploadBatch(
            text_ids=[f"x{i}" for i in range(n)],
            vectors=np.array(vectors, dtype=np.float32),
            vector_dims=[0] * n,
            instances=[""] * n,
            texts=[None] * n,
            metadata=[None] * n,
        )

    await embeddings.upsert(ADMIN, "alice", "proj", batch((1, 0, 0, 0), (0, 1, 0, 0)))
    assert calls == [1]
    with pytest.raises(InvalidArgument):
        await embeddings.upsert(ADMIN, "alice", "proj", batch((0, 0, 0, 0)))
    await embeddings.upsert(ADMIN, "alice", "proj", batch())  # nothing written: nothing to index
    assert calls == [1]
